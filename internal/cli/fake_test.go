package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// This file fakes filterd's HTTP surface with canned answers. It tests
// vfctl's parsing and formatting only; the daemon's behaviour is tested
// against the real filterd elsewhere.

// cannedReply is what the fake answers on one route: status (200 when 0)
// and a body: a string is sent as is, a func() any is called per request,
// anything else is JSON-encoded.
type cannedReply struct {
	status int
	body   any
	delay  time.Duration
}

// fakeDaemon serves canned replies on a unix socket and records the
// request bodies it got.
type fakeDaemon struct {
	socket  string
	mu      sync.Mutex
	routes  map[string]cannedReply
	bodies  map[string][]byte
	queries map[string]string // last URL query per route
}

// newFakeDaemon serves routes ("METHOD /path") on a socket of its own.
func newFakeDaemon(t *testing.T, routes map[string]cannedReply) *fakeDaemon {
	t.Helper()
	// Not t.TempDir: sun_path holds 108 bytes and test names are long.
	dir, err := os.MkdirTemp("", "vfctl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeDaemon{socket: filepath.Join(dir, "s.sock"), routes: routes, bodies: map[string][]byte{}, queries: map[string]string{}}
	ln, err := net.Listen("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeDaemon) serve(w http.ResponseWriter, r *http.Request) {
	key := r.Method + " " + r.URL.EscapedPath()
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.bodies[key] = body
	f.queries[key] = r.URL.RawQuery
	rep, ok := f.routes[key]
	f.mu.Unlock()
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(api.Error{Code: api.CodeBadRequest, Message: "fake: no route " + key})
		return
	}
	if rep.delay > 0 {
		select {
		case <-time.After(rep.delay):
		case <-r.Context().Done():
			return
		}
	}
	status := rep.status
	if status == 0 {
		status = http.StatusOK
	}
	b := rep.body
	if fn, ok := b.(func() any); ok {
		b = fn()
	}
	if s, ok := b.(string); ok {
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(status)
		io.WriteString(w, s)
		return
	}
	if b == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(b)
}

// query returns the last URL query received on route.
func (f *fakeDaemon) query(route string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queries[route]
}

// body returns the request body received on route.
func (f *fakeDaemon) body(route string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.bodies[route]
}

// apiError is a canned error reply as filterd sends it.
func apiError(status int, code, msg string) cannedReply {
	return cannedReply{status: status, body: api.Error{Code: code, Message: msg}}
}

type result struct {
	code           int
	stdout, stderr string
}

// vfctl runs the CLI against socket.
func vfctl(t *testing.T, ctx context.Context, socket string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(ctx, append([]string{"--socket", socket}, args...), &out, &errb)
	return result{code: code, stdout: out.String(), stderr: errb.String()}
}

// noDaemon is a socket path nothing listens on.
func noDaemon(t *testing.T) string {
	return filepath.Join(t.TempDir(), "absent.sock")
}

// Canned objects.

func cannedVNIC() api.VNIC {
	c := func(p, b uint64) api.Counter { return api.Counter{Packets: p, Bytes: b} }
	return api.VNIC{
		Name: "vnet3", Ifindex: 12, Mode: "tcx", Owner: "libvirt:web01",
		Slots: []api.Slot{
			{Slot: 0, Filter: "count", Version: "1.0.0", FailMode: "closed", Directions: "both", FastPath: true,
				Verdicts: map[string]api.Verdicts{
					"from-vm": {Continue: c(1500, 900_000)},
					"to-vm":   {Continue: c(2500, 3_000_000)},
				},
				Counters: []sdk.Counter{{Name: "packets_total", Labels: map[string]string{"direction": "from-vm"}, Value: 1500}}},
			{Slot: 1, Filter: "dnslog", Version: "0.3.0", FailMode: "closed", Directions: "both",
				Params: map[string]string{"rate": "5", "log": "true"}, FastPath: true, SlowPath: true, SlowPathState: "down",
				Verdicts: map[string]api.Verdicts{
					"from-vm": {Continue: c(1400, 800_000), Punt: c(60, 6000), FailClosed: c(42, 4200)},
					"to-vm":   {Continue: c(2500, 3_000_000)},
				}},
			{Slot: 2, Filter: "punt", Version: "0.1.0", FailMode: "open", Directions: "to-vm", SlowPath: true, SlowPathState: "running"},
		},
		Chain: map[string]api.ChainCounters{
			"from-vm": {Entered: c(1500, 900_000), Passed: c(1400, 800_000), Dropped: c(100, 100_000)},
			"to-vm":   {Entered: c(2500, 3_000_000), Passed: c(2500, 3_000_000)},
		},
	}
}

// cannedList is GET /v1/vnics: no counters.
func cannedList() []api.VNIC {
	v := cannedVNIC()
	v.Chain = nil
	for i := range v.Slots {
		v.Slots[i].Verdicts, v.Slots[i].Counters = nil, nil
	}
	w := api.VNIC{Name: "vnet4", Ifindex: 13, Mode: "clsact", Slots: []api.Slot{}}
	return []api.VNIC{v, w}
}

func cannedFilters() []api.FilterInfo {
	return []api.FilterInfo{
		{Name: "dnslog", Version: "0.3.0", Summary: "log DNS queries", Directions: "both", FailMode: "closed", FastPath: true, SlowPath: true,
			Params: []sdk.ParamSpec{
				{Name: "log", Type: sdk.Bool, Default: "true", Doc: "log one line per DNS query and answer"},
				{Name: "rate", Type: sdk.Int, Default: "50", Min: sdk.Bound(1), Doc: "most log lines per second"},
			}},
		{Name: "count", Version: "1.0.0", Summary: "count frames", Directions: "both", FailMode: "closed", FastPath: true},
		{Name: "punt", Version: "0.1.0", Summary: "punt every frame", Directions: "both", FailMode: "closed", SlowPath: true,
			Params: []sdk.ParamSpec{{Name: "verdict", Type: sdk.String, Enum: []string{"pass", "drop"}, Default: "pass"}}},
	}
}

func cannedCheck(missingRequired bool) api.CheckReport {
	r := api.CheckReport{Kernel: "6.8.0", Mode: "tcx", Features: []api.Feature{
		{Name: "bpf_syscall", OK: true, Required: true, Detail: "ok"},
		{Name: "tcx", OK: true, Required: false},
		{Name: "bpf_ringbuf", OK: !missingRequired, Required: true, Detail: "map create: operation not permitted"},
	}}
	return r
}

// paramTypeDecodes reports whether sdk.ParamType reads back from JSON, as
// api.Client.Filters needs.
func paramTypeDecodes() bool {
	var p sdk.ParamType
	return json.Unmarshal([]byte(`"int"`), &p) == nil
}
