package hooks

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// fakeClient records calls; it stands in for filterd in these logic-only
// tests (the libvirtd/QEMU tests use the real one).
type fakeClient struct {
	down     bool              // every call: filterd is not running
	hang     bool              // every call blocks until the deadline
	setErr   map[string]error  // SetChain error by tap
	attached map[string]string // tap -> owner of an existing chain
	calls    []string
}

func (f *fakeClient) block(ctx context.Context) error {
	switch {
	case f.down:
		return fmt.Errorf("%w (no daemon on /run/vnicfilter/filterd.sock)", api.ErrDaemonNotRunning)
	case f.hang:
		<-ctx.Done()
		return fmt.Errorf("GET /v1/filters: %w", ctx.Err())
	}
	return nil
}

func (f *fakeClient) Filters(ctx context.Context) ([]api.FilterInfo, error) {
	f.calls = append(f.calls, "Filters")
	if err := f.block(ctx); err != nil {
		return nil, err
	}
	return []api.FilterInfo{
		{Name: "count", Directions: "both", Params: []sdk.ParamSpec{{Name: "rate", Type: sdk.Int, Min: sdk.Bound(1)}}},
		{Name: "dnslog", Directions: "from-vm"},
	}, nil
}

func (f *fakeClient) VNIC(ctx context.Context, name string) (*api.VNIC, error) {
	f.calls = append(f.calls, "VNIC "+name)
	if err := f.block(ctx); err != nil {
		return nil, err
	}
	owner, ok := f.attached[name]
	if !ok {
		return nil, &api.Error{Code: api.CodeNotAttached, Message: name + " has no chain"}
	}
	return &api.VNIC{Name: name, Owner: owner}, nil
}

func (f *fakeClient) VNICs(ctx context.Context) ([]api.VNIC, error) {
	f.calls = append(f.calls, "VNICs")
	if err := f.block(ctx); err != nil {
		return nil, err
	}
	var out []api.VNIC
	for _, name := range slices.Sorted(maps.Keys(f.attached)) {
		out = append(out, api.VNIC{Name: name, Owner: f.attached[name]})
	}
	return out, nil
}

func (f *fakeClient) SetChain(ctx context.Context, vnic string, req api.ChainRequest) (*api.VNIC, error) {
	names := make([]string, len(req.Filters))
	for i, s := range req.Filters {
		names[i] = s.Name
	}
	f.calls = append(f.calls, fmt.Sprintf("SetChain %s %s %s %s", vnic, strings.Join(names, ","), req.Owner, req.MAC))
	if err := f.block(ctx); err != nil {
		return nil, err
	}
	if _, ok := f.attached[vnic]; ok {
		return nil, &api.Error{Code: api.CodeAlreadyExists, Message: vnic + " already has a chain"}
	}
	if err := f.setErr[vnic]; err != nil {
		return nil, err
	}
	if f.attached == nil {
		f.attached = map[string]string{}
	}
	f.attached[vnic] = req.Owner
	return &api.VNIC{Name: vnic, Owner: req.Owner}, nil
}

func (f *fakeClient) Detach(ctx context.Context, vnic string) error {
	f.calls = append(f.calls, "Detach "+vnic)
	if err := f.block(ctx); err != nil {
		return err
	}
	if _, ok := f.attached[vnic]; !ok {
		return &api.Error{Code: api.CodeNotAttached, Message: vnic + " has no chain"}
	}
	delete(f.attached, vnic)
	return nil
}

// fakeGuard records guard calls; the real one (filterd/datapath) is tested
// there and in libvirt/e2e.
type fakeGuard struct {
	failPin string // Pin of this tap fails
	calls   []string
}

func (g *fakeGuard) Pin(tap string) error {
	g.calls = append(g.calls, "Pin "+tap)
	if tap == g.failPin {
		return fmt.Errorf("attach guard to %s ingress (tcx): operation not permitted", tap)
	}
	return nil
}

func (g *fakeGuard) Remove(tap string) error {
	g.calls = append(g.calls, "Remove "+tap)
	return nil
}

func (g *fakeGuard) RemoveStale() ([]string, error) {
	g.calls = append(g.calls, "RemoveStale")
	return nil, nil
}

func testdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "libvirt", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRun(t *testing.T) {
	prepareXML := testdata(t, "domains/web01-prepare.xml")
	startXML := testdata(t, "domains/web01-start.xml")
	plainXML := testdata(t, "domains/plain.xml")
	unknownFilter := strings.Replace(prepareXML, `name="dnslog"`, `name="nope"`, 1)
	badParam := strings.Replace(prepareXML, `value="10"`, `value="0"`, 1)
	badShape := strings.Replace(prepareXML, `failmode="open"`, `failmode="sometimes"`, 1)
	lan := testdata(t, "networks/lan.xml")
	oneTap := regexp.MustCompile(`(?s)<vnicfilter:interface alias="ua-backend">.*?</vnicfilter:interface>`).ReplaceAllString(startXML, "")

	const owner = "libvirt:web01"
	for _, tc := range []struct {
		name     string
		args     []string
		stdin    string
		client   fakeClient
		networks map[string]string // NetworkXML
		guard    fakeGuard
		code     int
		calls    []string
		guards   []string // Guard calls
		stderr   string   // substring; "" = must be empty
		stdout   string   // exact
	}{
		{name: "prepare: valid", args: []string{"web01", "prepare", "begin", "-"}, stdin: prepareXML,
			calls: []string{"Filters"}},
		{name: "prepare: unknown filter", args: []string{"web01", "prepare", "begin", "-"}, stdin: unknownFilter, code: 1,
			calls:  []string{"Filters"},
			stderr: `vnicfilter: domain web01: interface 52:54:00:aa:00:03: filter 0 (nope): unknown filter "nope" (registered: count, dnslog)`},
		{name: "prepare: bad parameter", args: []string{"web01", "prepare", "begin", "-"}, stdin: badParam, code: 1,
			calls:  []string{"Filters"},
			stderr: `vnicfilter: domain web01: interface 52:54:00:aa:00:02: filter 0 (count): invalid parameter: parameter "rate": value 0 below minimum 1`},
		{name: "prepare: malformed XML", args: []string{"web01", "prepare", "begin", "-"}, stdin: prepareXML[:400], code: 1,
			stderr: "vnicfilter: domain web01: line "},
		{name: "prepare: bad failmode", args: []string{"web01", "prepare", "begin", "-"}, stdin: badShape, code: 1,
			stderr: `failmode "sometimes": want closed or open`},
		{name: "prepare: filterd down, XML fine", args: []string{"web01", "prepare", "begin", "-"}, stdin: prepareXML, client: fakeClient{down: true},
			calls:  []string{"Filters"},
			stderr: "vnicfilter: domain web01: filterd is not running: checked the XML only; filters and parameters are checked when filterd attaches the chains"},
		{name: "prepare: filterd down, XML broken", args: []string{"web01", "prepare", "begin", "-"}, stdin: badShape, client: fakeClient{down: true}, code: 1,
			stderr: `failmode "sometimes"`},
		{name: "prepare: no config", args: []string{"plain", "prepare", "begin", "-"}, stdin: plainXML},
		{name: "start: attach", args: []string{"web01", "start", "begin", "-"}, stdin: startXML,
			calls: []string{"Filters", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "SetChain vnet9 dnslog,count " + owner + " 52:54:00:aa:00:03"}},
		{name: "start: portgroup default", args: []string{"web01", "start", "begin", "-"}, stdin: startXML, networks: map[string]string{"lan": lan},
			calls: []string{"Filters", "SetChain vnet7 count " + owner + " 52:54:00:aa:00:01", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "SetChain vnet9 dnslog,count " + owner + " 52:54:00:aa:00:03"}},
		{name: "start: broken network defaults", args: []string{"web01", "start", "begin", "-"}, stdin: startXML, networks: map[string]string{"lan": "<network>"}, code: 1,
			stderr: "vnicfilter: domain web01: network lan: line 1: malformed network XML"},
		{name: "start: filterd down, guards pinned", args: []string{"web01", "start", "begin", "-"}, stdin: startXML, client: fakeClient{down: true},
			calls: []string{"Filters"}, guards: []string{"Pin vnet8", "Pin vnet9"},
			stderr: "vnicfilter: domain web01: filterd is not running: web01 starts behind a drop-all guard on vnet8, vnet9 until filterd attaches its chains\n"},
		{name: "start: filterd down, one tap", args: []string{"web01", "start", "begin", "-"}, stdin: oneTap, client: fakeClient{down: true},
			calls: []string{"Filters"}, guards: []string{"Pin vnet8"},
			stderr: "vnicfilter: domain web01: filterd is not running: web01 starts behind a drop-all guard on vnet8 until filterd attaches its chain\n"},
		{name: "start: filterd hangs, guards pinned", args: []string{"web01", "start", "begin", "-"}, stdin: startXML, client: fakeClient{hang: true},
			calls: []string{"Filters"}, guards: []string{"Pin vnet8", "Pin vnet9"},
			stderr: "vnicfilter: domain web01: filterd did not answer within 50ms: web01 starts behind a drop-all guard on vnet8, vnet9 until filterd attaches its chains"},
		{name: "start: filterd down, guard fails", args: []string{"web01", "start", "begin", "-"}, stdin: startXML, client: fakeClient{down: true},
			guard: fakeGuard{failPin: "vnet9"}, code: 1,
			calls: []string{"Filters"}, guards: []string{"Pin vnet8", "Pin vnet9", "Remove vnet8"},
			stderr: "vnicfilter: domain web01: filterd is not running, and the drop-all guard on vnet9 failed: attach guard to vnet9 ingress (tcx): operation not permitted: refusing to start web01 unprotected (fail-closed)"},
		{name: "start: filterd dies during the attach", args: []string{"web01", "start", "begin", "-"}, stdin: startXML,
			client: fakeClient{setErr: map[string]error{"vnet9": fmt.Errorf("%w (connection refused)", api.ErrDaemonNotRunning)}},
			calls:  []string{"Filters", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "SetChain vnet9 dnslog,count " + owner + " 52:54:00:aa:00:03", "Detach vnet8"},
			guards: []string{"Pin vnet8", "Pin vnet9"},
			stderr: "filterd is not running: web01 starts behind a drop-all guard on vnet8, vnet9"},
		{name: "start: unknown filter", args: []string{"web01", "start", "begin", "-"}, stdin: strings.Replace(startXML, `name="dnslog"`, `name="nope"`, 1), code: 1,
			calls:  []string{"Filters"},
			stderr: `interface 52:54:00:aa:00:03 (vnet9): filter 0 (nope): unknown filter "nope"`},
		{name: "start: second attach fails, first rolled back", args: []string{"web01", "start", "begin", "-"}, stdin: startXML,
			client: fakeClient{setErr: map[string]error{"vnet9": &api.Error{Code: api.CodeNoSuchDevice, Message: "no device vnet9"}}}, code: 1,
			calls:  []string{"Filters", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "SetChain vnet9 dnslog,count " + owner + " 52:54:00:aa:00:03", "Detach vnet8"},
			stderr: "vnicfilter: domain web01: interface 52:54:00:aa:00:03 (vnet9): attach chain: no device vnet9"},
		{name: "start: stale chain replaced", args: []string{"web01", "start", "begin", "-"}, stdin: startXML,
			client: fakeClient{attached: map[string]string{"vnet8": "libvirt:gone"}},
			calls:  []string{"Filters", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "Detach vnet8", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "SetChain vnet9 dnslog,count " + owner + " 52:54:00:aa:00:03"}},
		{name: "start: no tap in XML", args: []string{"web01", "start", "begin", "-"}, stdin: prepareXML, code: 1,
			stderr: "interface 52:54:00:aa:00:02: the XML names no tap"},
		{name: "start: no config", args: []string{"plain", "start", "begin", "-"}, stdin: plainXML},
		{name: "stopped: detach owned chains", args: []string{"web01", "stopped", "end", "-"}, stdin: startXML,
			client: fakeClient{attached: map[string]string{"vnet8": owner, "vnet9": "libvirt:other", "vnet3": owner}},
			calls:  []string{"VNICs", "Detach vnet3", "Detach vnet8"}, guards: []string{"Remove vnet8", "Remove vnet9", "RemoveStale"}},
		{name: "stopped: XML without taps", args: []string{"web01", "stopped", "end", "-"}, stdin: prepareXML,
			client: fakeClient{attached: map[string]string{"vnet8": owner}},
			calls:  []string{"VNICs", "Detach vnet8"}, guards: []string{"RemoveStale"}},
		{name: "release: nothing attached", args: []string{"web01", "release", "end", "-"}, stdin: startXML,
			calls: []string{"VNICs"}, guards: []string{"Remove vnet8", "Remove vnet9", "RemoveStale"}},
		{name: "release: filterd down, guards removed", args: []string{"web01", "release", "end", "-"}, stdin: startXML, client: fakeClient{down: true},
			calls: []string{"VNICs"}, guards: []string{"Remove vnet8", "Remove vnet9", "RemoveStale"},
			stderr: "filterd is not running: chains left for filterd to reconcile"},
		{name: "release: filterd down, XML without taps", args: []string{"web01", "release", "end", "-"}, stdin: prepareXML, client: fakeClient{down: true},
			calls: []string{"VNICs"}, guards: []string{"RemoveStale"},
			stderr: "filterd is not running: chains left for filterd to reconcile"},
		{name: "stopped: broken XML still detaches by owner", args: []string{"web01", "stopped", "end", "-"}, stdin: "<domain>",
			client: fakeClient{attached: map[string]string{"vnet8": owner}},
			calls:  []string{"VNICs", "Detach vnet8"}, guards: []string{"RemoveStale"}},
		{name: "stopped: no config", args: []string{"plain", "stopped", "end", "-"}, stdin: plainXML},
		{name: "migrate: valid, XML passed through", args: []string{"web01", "migrate", "begin", "-"}, stdin: prepareXML,
			calls: []string{"Filters"}, stdout: prepareXML},
		{name: "migrate: invalid", args: []string{"web01", "migrate", "begin", "-"}, stdin: unknownFilter, code: 1,
			calls: []string{"Filters"}, stderr: `unknown filter "nope"`},
		{name: "restore: valid", args: []string{"web01", "restore", "begin", "-"}, stdin: startXML,
			calls: []string{"Filters"}, stdout: startXML},
		{name: "started: no-op", args: []string{"web01", "started", "begin", "-"}, stdin: startXML},
		{name: "reconnect: no-op", args: []string{"web01", "reconnect", "begin", "-"}, stdin: startXML},
		{name: "attach: no-op", args: []string{"web01", "attach", "begin", "-"}, stdin: startXML},
		{name: "unknown operation", args: []string{"web01", "frobnicate", "begin", "-"}, stdin: startXML},
		{name: "no arguments", args: []string{"web01"}, code: 2, stderr: "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			client, guard := tc.client, tc.guard
			h := Hook{Client: &client, Stdout: &stdout, Stderr: &stderr, Timeout: 50 * time.Millisecond, Guard: &guard}
			if tc.networks != nil {
				h.NetworkXML = func(name string) ([]byte, error) {
					if doc, ok := tc.networks[name]; ok {
						return []byte(doc), nil
					}
					return nil, os.ErrNotExist
				}
			}
			start := time.Now()
			code := h.Run(context.Background(), tc.args, strings.NewReader(tc.stdin))
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Run took %s", d)
			}
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.code, stderr.String())
			}
			if !reflect.DeepEqual(client.calls, tc.calls) {
				t.Errorf("calls:\n got %q\nwant %q", client.calls, tc.calls)
			}
			if !reflect.DeepEqual(guard.calls, tc.guards) {
				t.Errorf("guard calls:\n got %q\nwant %q", guard.calls, tc.guards)
			}
			switch {
			case tc.stderr == "" && stderr.Len() > 0:
				t.Errorf("stderr %q, want none", stderr.String())
			case !strings.Contains(stderr.String(), tc.stderr):
				t.Errorf("stderr %q, want it to contain %q", stderr.String(), tc.stderr)
			case stderr.Len() > 0 && strings.Count(stderr.String(), "\n") != 1:
				t.Errorf("stderr %q: want exactly one line (virsh start shows it)", stderr.String())
			}
			if stdout.String() != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout.String(), tc.stdout)
			}
		})
	}
}

func TestNetworkFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "lan.xml"), []byte("<network/>"), 0o644); err != nil {
		t.Fatal(err)
	}
	read := NetworkFiles(dir)
	if b, err := read("lan"); err != nil || string(b) != "<network/>" {
		t.Errorf("read(lan) = %q, %v", b, err)
	}
	for _, name := range []string{"missing", "../lan", "", ".."} {
		if _, err := read(name); !os.IsNotExist(err) && !strings.Contains(fmt.Sprint(err), "not exist") {
			t.Errorf("read(%q): %v, want not-exist", name, err)
		}
	}
}
