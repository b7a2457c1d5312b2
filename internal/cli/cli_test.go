package cli

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// TestUsageErrors: a bad command line exits 2 with a message and a hint,
// and sends nothing (the socket does not exist, so a request would exit 3).
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"attach without filter", []string{"attach", "vnet3"}, "attach: missing FILTER"},
		{"attach without anything", []string{"attach"}, "attach: missing VNIC and FILTER"},
		{"attach extra arg", []string{"attach", "vnet3", "count", "dnslog"}, `attach: unexpected argument "dnslog"`},
		{"attach param without =", []string{"attach", "vnet3", "dnslog", "--param", "rate"}, `--param "rate": want KEY=VALUE`},
		{"attach duplicate param", []string{"attach", "vnet3", "dnslog", "--param", "rate=5", "--param", "rate=6"}, "--param rate given twice"},
		{"attach bad failmode", []string{"attach", "vnet3", "count", "--failmode", "maybe"}, `--failmode "maybe": want closed or open`},
		{"attach bad direction", []string{"attach", "vnet3", "count", "--direction", "up"}, `--direction "up": want from-vm, to-vm or both`},
		{"attach bad slot", []string{"attach", "vnet3", "count", "--slot", "x"}, "want a slot number 0..15"},
		{"attach slot out of range", []string{"attach", "vnet3", "count", "--slot", "16"}, "want a slot number 0..15"},
		{"chain set without filters", []string{"chain", "set", "vnet3"}, "set: missing FILTER..."},
		{"chain set bad pair", []string{"chain", "set", "vnet3", "count", "dnslog:rate"}, `"rate": want KEY=VALUE`},
		{"chain set duplicate key", []string{"chain", "set", "vnet3", "dnslog:rate=1,rate=2"}, "key rate given twice"},
		{"chain set bad dir", []string{"chain", "set", "vnet3", "count:dir=up"}, `dir "up"`},
		{"chain set too many", append([]string{"chain", "set", "vnet3"}, strings.Fields(strings.Repeat("count ", 17))...), "17 filters: a chain holds at most 16"},
		{"chain unknown subcommand", []string{"chain", "get"}, `unknown command "get" for "vfctl chain"`},
		{"detach without vnic", []string{"detach"}, "detach: missing VNIC"},
		{"detach bad slot", []string{"detach", "vnet3", "--slot", "-1"}, "want a slot number"},
		{"show without vnic", []string{"show"}, "show: missing VNIC"},
		{"show two vnics", []string{"show", "a", "b"}, `show: unexpected argument "b" (takes VNIC)`},
		{"list with arg", []string{"list", "x"}, `list: unexpected argument "x" (takes no arguments)`},
		{"stats two vnics", []string{"stats", "a", "b"}, `unexpected argument "b"`},
		{"stats watch too fast", []string{"stats", "--watch", "1ms"}, "--watch 1ms: want an interval of at least 100ms"},
		{"stats watch not a duration", []string{"stats", "--watch", "often"}, `invalid argument "often" for "--watch"`},
		{"unknown command", []string{"attch"}, `unknown command "attch"`},
		{"unknown flag", []string{"list", "--bogus"}, "unknown flag: --bogus"},
		{"bad output", []string{"-o", "yaml", "list"}, `--output "yaml": want text or json`},
		{"bad timeout", []string{"--timeout", "0s", "list"}, "--timeout 0s: want a positive duration"},
		{"version with arg", []string{"version", "x"}, `version: unexpected argument "x"`},
	}
	socket := noDaemon(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := vfctl(t, context.Background(), socket, tt.args...)
			if r.code != ExitUsage {
				t.Errorf("exit code %d, want %d (stderr %q)", r.code, ExitUsage, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "vfctl: ") || !contains(r.stderr, tt.want) {
				t.Errorf("stderr %q, want \"vfctl: ...%s...\"", r.stderr, tt.want)
			}
			if !contains(r.stderr, "hint: ") {
				t.Errorf("stderr %q has no hint line", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
		})
	}
}

// TestRequests: the flags and the chain syntax become the API requests
// documented in filterd/api.
func TestRequests(t *testing.T) {
	v := cannedVNIC()
	f := newFakeDaemon(t, map[string]cannedReply{
		"POST /v1/vnics/vnet3/filters": {body: v},
		"PUT /v1/vnics/vnet3":          {body: v},
		"DELETE /v1/vnics/vnet3":       {},
	})
	slot := func(n int) *int { return &n }
	tests := []struct {
		name  string
		args  []string
		route string
		got   any
		want  any
	}{
		{
			name:  "attach minimal",
			args:  []string{"attach", "vnet3", "count"},
			route: "POST /v1/vnics/vnet3/filters",
			got:   &api.AttachRequest{},
			want:  &api.AttachRequest{Filter: api.FilterSpec{Name: "count"}},
		},
		{
			name: "attach all flags",
			args: []string{"attach", "vnet3", "dnslog", "--slot", "1", "--param", "rate=5", "--param", "log=a,b=c",
				"--failmode", "open", "--direction", "in"},
			route: "POST /v1/vnics/vnet3/filters",
			got:   &api.AttachRequest{},
			want: &api.AttachRequest{Slot: slot(1), Filter: api.FilterSpec{Name: "dnslog",
				Params: map[string]string{"rate": "5", "log": "a,b=c"}, FailMode: "open", Directions: "to-vm"}},
		},
		{
			name:  "attach slot 0",
			args:  []string{"attach", "vnet3", "count", "--slot", "0"},
			route: "POST /v1/vnics/vnet3/filters",
			got:   &api.AttachRequest{},
			want:  &api.AttachRequest{Slot: slot(0), Filter: api.FilterSpec{Name: "count"}},
		},
		{
			name:  "chain set",
			args:  []string{"chain", "set", "vnet3", "count:dir=from-vm", "dnslog:rate=5,failmode=open", "punt", "--owner", "libvirt:web01"},
			route: "PUT /v1/vnics/vnet3",
			got:   &api.ChainRequest{},
			want: &api.ChainRequest{Owner: "libvirt:web01", Filters: []api.FilterSpec{
				{Name: "count", Directions: "from-vm"},
				{Name: "dnslog", Params: map[string]string{"rate": "5"}, FailMode: "open"},
				{Name: "punt"},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := vfctl(t, context.Background(), f.socket, tt.args...)
			if r.code != ExitOK {
				t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
			}
			if err := json.Unmarshal(f.body(tt.route), tt.got); err != nil {
				t.Fatalf("request body %q: %v", f.body(tt.route), err)
			}
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("request = %+v, want %+v", tt.got, tt.want)
			}
			if !contains(r.stdout, "vnet3  ifindex 12  mode tcx  owner libvirt:web01") || !contains(r.stdout, "SLOT") {
				t.Errorf("stdout does not show the resulting chain:\n%s", r.stdout)
			}
		})
	}
}

// TestJSONOutput: -o json prints the API objects, which read back into the
// api types unchanged.
func TestJSONOutput(t *testing.T) {
	v := cannedVNIC()
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics":                {body: cannedList()},
		"GET /v1/vnics/vnet3":          {body: v},
		"GET /v1/vnics/vnet4":          {body: cannedList()[1]},
		"POST /v1/vnics/vnet3/filters": {body: v},
		"PUT /v1/vnics/vnet3":          {body: v},
		"GET /v1/check":                {body: cannedCheck(false)},
		"GET /v1/version":              {body: api.VersionInfo{Version: "1.2.3", API: "v1", ABI: 1, AttachMode: "tcx", BPFFSRoot: "/sys/fs/bpf/vnicfilter"}},
	})
	check := cannedCheck(false)
	list := cannedList()
	tests := []struct {
		name string
		args []string
		got  any
		want any
	}{
		{"list", []string{"list"}, &[]api.VNIC{}, &list},
		{"show", []string{"show", "vnet3"}, &api.VNIC{}, &v},
		{"attach", []string{"attach", "vnet3", "count"}, &api.VNIC{}, &v},
		{"chain set", []string{"chain", "set", "vnet3", "count"}, &api.VNIC{}, &v},
		{"stats one", []string{"stats", "vnet3"}, &[]api.VNIC{}, &[]api.VNIC{v}},
		{"stats all", []string{"stats"}, &[]api.VNIC{}, &[]api.VNIC{v, cannedList()[1]}},
		{"check", []string{"check"}, &api.CheckReport{}, &check},
		{"version", []string{"version"}, &versionOutput{}, func() *versionOutput {
			var o versionOutput
			o.Client.Version, o.Client.API = Version, api.Version
			o.Daemon = &api.VersionInfo{Version: "1.2.3", API: "v1", ABI: 1, AttachMode: "tcx", BPFFSRoot: "/sys/fs/bpf/vnicfilter"}
			return &o
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := vfctl(t, context.Background(), f.socket, append([]string{"-o", "json"}, tt.args...)...)
			if r.code != ExitOK {
				t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
			}
			if !strings.HasPrefix(r.stdout, "{\n  \"") && !strings.HasPrefix(r.stdout, "[\n  {") {
				t.Errorf("output is not indented JSON:\n%s", r.stdout)
			}
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(tt.got); err != nil {
				t.Fatalf("decode %s: %v", r.stdout, err)
			}
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %+v\nwant %+v", tt.got, tt.want)
			}
		})
	}

	t.Run("empty list is []", func(t *testing.T) {
		f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/vnics": {body: []api.VNIC{}}})
		r := vfctl(t, context.Background(), f.socket, "list", "-o", "json")
		if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
			t.Errorf("exit %d, stdout %q, want []", r.code, r.stdout)
		}
	})
	t.Run("filters", func(t *testing.T) {
		if !paramTypeDecodes() {
			t.Skip("sdk.ParamType has no UnmarshalText: api.Client.Filters cannot decode /v1/filters (fix in sdk/params.go)")
		}
		f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/filters": {body: cannedFilters()}})
		r := vfctl(t, context.Background(), f.socket, "filters", "-o", "json")
		var got []api.FilterInfo
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 3 || got[0].Name != "count" {
			t.Errorf("exit %d, %v, got %+v", r.code, err, got)
		}
	})
}

// TestExitCodes: every API error code maps to its exit code, with the
// daemon's message and a hint.
func TestExitCodes(t *testing.T) {
	tests := []struct {
		code   string
		status int
		exit   int
		hint   string
	}{
		{api.CodeNoSuchDevice, http.StatusNotFound, ExitNotFound, "ip link show"},
		{api.CodeNotAttached, http.StatusNotFound, ExitNotFound, "vfctl list"},
		{api.CodeUnknownFilter, http.StatusNotFound, ExitNotFound, "vfctl filters"},
		{api.CodeInvalidParam, http.StatusBadRequest, ExitBadInput, "vfctl filters"},
		{api.CodeSlotTaken, http.StatusConflict, ExitBadInput, "without --slot"},
		{api.CodeAlreadyExists, http.StatusConflict, ExitBadInput, "vfctl detach VNIC"},
		{api.CodeBadRequest, http.StatusBadRequest, ExitBadInput, ""},
		{api.CodeNotSupported, http.StatusNotImplemented, ExitFailure, "vfctl check"},
		{api.CodeInternal, http.StatusInternalServerError, ExitFailure, ""},
	}
	commands := [][]string{
		{"attach", "vnet3", "count"},
		{"chain", "set", "vnet3", "count"},
		{"detach", "vnet3"},
		{"detach", "vnet3", "--slot", "2"},
		{"show", "vnet3"},
		{"stats", "vnet3"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			msg := "vnet3: it went wrong (" + tt.code + ")"
			e := apiError(tt.status, tt.code, msg)
			f := newFakeDaemon(t, map[string]cannedReply{
				"POST /v1/vnics/vnet3/filters":     e,
				"PUT /v1/vnics/vnet3":              e,
				"DELETE /v1/vnics/vnet3":           e,
				"DELETE /v1/vnics/vnet3/filters/2": e,
				"GET /v1/vnics/vnet3":              e,
			})
			for _, args := range commands {
				r := vfctl(t, context.Background(), f.socket, args...)
				if r.code != tt.exit {
					t.Errorf("%v: exit code %d, want %d", args, r.code, tt.exit)
				}
				if !strings.HasPrefix(r.stderr, "vfctl: "+msg+"\n") {
					t.Errorf("%v: stderr %q, want the daemon's message", args, r.stderr)
				}
				if tt.hint != "" && !contains(r.stderr, "hint: ") || !contains(r.stderr, tt.hint) {
					t.Errorf("%v: stderr %q, want a hint with %q", args, r.stderr, tt.hint)
				}
			}
		})
	}
	t.Run("garbage error body", func(t *testing.T) {
		f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/vnics": {status: 502, body: "bad gateway"}})
		if r := vfctl(t, context.Background(), f.socket, "list"); r.code != ExitFailure {
			t.Errorf("exit code %d, want %d (stderr %q)", r.code, ExitFailure, r.stderr)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/vnics": {body: []api.VNIC{}, delay: 5 * time.Second}})
		r := vfctl(t, context.Background(), f.socket, "--timeout", "100ms", "list")
		if r.code != ExitFailure || !contains(r.stderr, "raise --timeout") {
			t.Errorf("exit code %d, stderr %q; want 1 and a hint to raise --timeout", r.code, r.stderr)
		}
	})
}

// TestDaemonNotRunning: exit 3 with a hint naming the socket, except for
// version, which reports it and succeeds.
func TestDaemonNotRunning(t *testing.T) {
	absent := noDaemon(t)
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	for _, tc := range []struct{ name, socket, want string }{
		{"absent socket", absent, "filterd is not running"},
		{"stale socket", stale, "stale socket"},
	} {
		for _, args := range [][]string{
			{"list"}, {"show", "vnet3"}, {"attach", "vnet3", "count"}, {"chain", "set", "vnet3", "count"},
			{"detach", "vnet3"}, {"stats"}, {"check"}, {"filters"}, {"metrics"},
		} {
			t.Run(tc.name+"/"+strings.Join(args, " "), func(t *testing.T) {
				r := vfctl(t, context.Background(), tc.socket, args...)
				if r.code != ExitNoDaemon {
					t.Errorf("exit code %d, want %d (stderr %q)", r.code, ExitNoDaemon, r.stderr)
				}
				if !contains(r.stderr, "vfctl: ") || !contains(r.stderr, tc.want) {
					t.Errorf("stderr %q, want %q", r.stderr, tc.want)
				}
				if !contains(r.stderr, "hint: ") || !contains(r.stderr, "filterd --socket "+tc.socket) {
					t.Errorf("stderr %q, want the hint to start filterd on %s", r.stderr, tc.socket)
				}
			})
		}
	}
	t.Run("env", func(t *testing.T) {
		t.Setenv(SocketEnv, absent)
		var out, errb strings.Builder
		if code := run(context.Background(), []string{"list"}, &out, &errb); code != ExitNoDaemon || !contains(errb.String(), absent) {
			t.Errorf("exit code %d, stderr %q; want 3 naming %s", code, errb.String(), absent)
		}
	})
	t.Run("version", func(t *testing.T) {
		r := vfctl(t, context.Background(), absent, "version")
		if r.code != ExitOK || !contains(r.stdout, "vfctl    "+Version) || !contains(r.stdout, "filterd  not running") {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
		r = vfctl(t, context.Background(), absent, "version", "-o", "json")
		if r.code != ExitOK || !contains(r.stdout, `"daemon": null`) {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
	})
}

func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores the socket's file mode")
	}
	f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/vnics": {body: []api.VNIC{}}})
	if err := os.Chmod(f.socket, 0); err != nil {
		t.Fatal(err)
	}
	r := vfctl(t, context.Background(), f.socket, "list")
	if r.code != ExitFailure || !contains(r.stderr, "permission denied") || !contains(r.stderr, "run vfctl as root") {
		t.Errorf("exit %d, stderr %q; want 1, permission denied and the root hint", r.code, r.stderr)
	}
}

func TestTextOutput(t *testing.T) {
	v := cannedVNIC()
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics":                    {body: cannedList()},
		"GET /v1/vnics/vnet3":              {body: v},
		"GET /v1/vnics/vnet4":              {body: cannedList()[1]},
		"DELETE /v1/vnics/vnet3":           {},
		"DELETE /v1/vnics/vnet3/filters/1": {},
		"GET /v1/check":                    {body: cannedCheck(false)},
		"GET /metrics":                     {body: "# TYPE vnicfilter_chain_packets_total counter\nvnicfilter_chain_packets_total{vnic=\"vnet3\"} 5\n"},
	})
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"list", []string{"list"}, []string{
			"VNIC   IFINDEX  MODE    CHAIN",
			"vnet3  12       tcx     0:count 1:dnslog(slow path down) 2:punt(open,to-vm)  libvirt:web01",
			"vnet4  13       clsact  (empty: frames pass)",
		}},
		{"show", []string{"show", "vnet3"}, []string{
			"vnet3  ifindex 12  mode tcx  owner libvirt:web01",
			"CHAIN    FROM-VM PKTS  FROM-VM BYTES  TO-VM PKTS  TO-VM BYTES",
			"entered  1.50k         879 KiB        2.50k       2.86 MiB",
			"dropped  100           97.7 KiB       0           0 B",
			"slot 1: dnslog 0.3.0  directions both  failmode closed  slow path down",
			"params: log=true,rate=5",
			"! slow path down: frames this filter punts are dropped (fail closed)",
			"fail_closed  42            4.10 KiB",
			"fail_open    0             0 B",
			"! 42 frames dropped because dnslog could not decide (fail_closed)",
			"FILTER COUNTER  LABELS             VALUE",
			"packets_total   direction=from-vm  1500",
			"slot 2: punt 0.1.0  directions to-vm  failmode open  slow path running",
			"no verdict counters",
		}},
		{"stats", []string{"stats"}, []string{
			"VNIC   DIR      ENTERED  PASSED  DROPPED  FAIL_CLOSED  BYTES",
			"vnet3  from-vm  1.50k    1.40k   100      42           879 KiB",
			"vnet3  to-vm    2.50k    2.50k   0        0            2.86 MiB",
			"vnet4  -        -",
		}},
		{"check", []string{"check"}, []string{
			"kernel 6.8.0  attach mode tcx",
			"FEATURE      STATUS  REQUIRED  DETAIL",
			"bpf_ringbuf  ok      yes",
		}},
		{"detach", []string{"detach", "vnet3"}, []string{"detached the chain of vnet3"}},
		{"detach slot", []string{"detach", "vnet3", "--slot", "1"}, []string{"detached slot 1 of vnet3", "SLOT  FILTER"}},
		{"metrics", []string{"metrics"}, []string{"vnicfilter_chain_packets_total{vnic=\"vnet3\"} 5\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := vfctl(t, context.Background(), f.socket, tt.args...)
			if r.code != ExitOK {
				t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
			}
			for _, w := range tt.want {
				if !contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
	t.Run("detach json prints nothing", func(t *testing.T) {
		r := vfctl(t, context.Background(), f.socket, "detach", "vnet3", "-o", "json")
		if r.code != 0 || r.stdout != "" {
			t.Errorf("exit %d, stdout %q", r.code, r.stdout)
		}
	})
}

func TestCheckMissingRequired(t *testing.T) {
	f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/check": {body: cannedCheck(true)}})
	r := vfctl(t, context.Background(), f.socket, "check")
	if r.code != ExitFailure {
		t.Errorf("exit code %d, want %d", r.code, ExitFailure)
	}
	if !contains(r.stdout, "bpf_ringbuf  MISSING  yes") {
		t.Errorf("table lacks the MISSING line:\n%s", r.stdout)
	}
	if !contains(r.stderr, "vfctl: required kernel feature missing: bpf_ringbuf") {
		t.Errorf("stderr %q", r.stderr)
	}
}

func TestFilters(t *testing.T) {
	if !paramTypeDecodes() {
		t.Skip("sdk.ParamType has no UnmarshalText: api.Client.Filters cannot decode /v1/filters (fix in sdk/params.go)")
	}
	f := newFakeDaemon(t, map[string]cannedReply{"GET /v1/filters": {body: cannedFilters()}})
	r := vfctl(t, context.Background(), f.socket, "filters")
	for _, w := range []string{
		"NAME    VERSION  DIRECTIONS  FAST  SLOW  FAILMODE  SUMMARY",
		"count   1.0.0    both        yes   no    closed    count frames",
		"count: no parameters",
		"dnslog parameters:",
		"rate  int >=1  50       most log lines per second",
		"verdict  string pass|drop  pass",
	} {
		if !contains(r.stdout, w) {
			t.Errorf("output lacks %q:\n%s", w, r.stdout)
		}
	}
	r = vfctl(t, context.Background(), f.socket, "filters", "nope")
	if r.code != ExitNotFound || !contains(r.stderr, "registered filters: count, dnslog, punt") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestStatsWatch: --watch prints rates until the context is cancelled
// (what SIGINT does in Main), then exits 0.
func TestStatsWatch(t *testing.T) {
	var n atomic.Uint64
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/vnics/vnet3": {body: func() any {
			k := n.Add(1) * 1000
			return api.VNIC{Name: "vnet3", Slots: []api.Slot{}, Chain: map[string]api.ChainCounters{
				"from-vm": {Entered: api.Counter{Packets: k, Bytes: k * 100}, Passed: api.Counter{Packets: k}},
			}}
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), 450*time.Millisecond)
	defer cancel()
	r := vfctl(t, ctx, f.socket, "stats", "vnet3", "--watch", "100ms")
	if r.code != ExitOK {
		t.Fatalf("exit code %d, stderr %q", r.code, r.stderr)
	}
	if !contains(r.stdout, "ENTERED/s") || strings.Count(r.stdout, "rates over") < 2 {
		t.Errorf("want at least two rate tables:\n%s", r.stdout)
	}
	if !contains(r.stdout, "vnet3  from-vm  1.00k") {
		t.Errorf("want the first totals:\n%s", r.stdout)
	}
}

// TestHelp: every command documents itself and --help succeeds.
func TestHelp(t *testing.T) {
	a := &app{}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			walk(sub)
		}
		if c.Name() == "help" || c.Name() == "completion" || c.HasParent() && c.Parent().Name() == "completion" {
			return
		}
		t.Run(c.CommandPath(), func(t *testing.T) {
			if c.Short == "" || c.Long == "" || c.Example == "" && c.Runnable() && !c.HasSubCommands() {
				t.Errorf("%s lacks Short, Long or Example", c.CommandPath())
			}
			args := append(strings.Fields(c.CommandPath())[1:], "--help")
			r := vfctl(t, context.Background(), noDaemon(t), args...)
			if r.code != ExitOK || !contains(r.stdout, "Usage:") {
				t.Errorf("%v: exit %d, stdout %q", args, r.code, r.stdout)
			}
		})
	}
	walk(a.rootCommand())
}
