package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestInspect: the views over a table filled through BPF_PROG_TEST_RUN,
// and malformed queries refused as invalid parameters.
func TestInspect(t *testing.T) {
	policy := []byte(`{"version": 1, "defaults": {"from-vm": "deny", "to-vm": "deny"}, "rules": [
		{"name": "web-out", "direction": "from-vm", "proto": "tcp", "dst_ports": [443], "action": "allow"}]}`)
	fp := testInstance(t, policy, "")
	vm, remote := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.9.0.2")
	for i := range 3 {
		syn := pktSpec{dir: sdk.FromVM, src: vm, dst: remote, proto: ProtoTCP, sport: uint16(40000 + i), dport: 443, flags: tcpSYN, payload: 100 * i}
		if pass, _ := run(t, fp.Program(), syn.build(), sdk.FromVM); !pass {
			t.Fatal("SYN dropped")
		}
	}
	ctx := context.Background()
	got, err := fp.Inspect(ctx, map[string]string{"view": "conns", "limit": "2"})
	if err != nil {
		t.Fatal(err)
	}
	cv := got.(*ConnsView)
	if cv.Flows != 3 || len(cv.Conns) != 2 || !cv.Truncated || cv.Capacity != DefaultConntrackSize {
		t.Fatalf("conns: %+v", cv)
	}
	c := cv.Conns[0]
	if c.Proto != "tcp" || c.VM != "10.0.0.1" || c.Remote != "10.9.0.2" || c.RemotePort != 443 || c.State != "syn_sent" ||
		c.Dir != "from-vm" || c.Packets != 1 || c.Rule != "web-out" || *c.RuleIndex != 0 {
		t.Errorf("conn %+v", c)
	}
	got, err = fp.Inspect(ctx, map[string]string{"view": "top", "by": "bytes", "limit": "1"})
	if err != nil {
		t.Fatal(err)
	}
	if tv := got.(*TopView); tv.Flows != 3 || len(tv.Conns) != 1 || tv.Conns[0].VMPort != 40002 {
		t.Errorf("top by bytes: %+v", tv)
	}
	got, err = fp.Inspect(ctx, map[string]string{"view": "top", "by": "rules"})
	if err != nil {
		t.Fatal(err)
	}
	if tv := got.(*TopView); len(tv.Rules) != 1 || tv.Rules[0] != (RuleHits{Index: 0, Name: "web-out", Action: "allow", Hits: 3}) {
		t.Errorf("top by rules: %+v", tv)
	}
	got, err = fp.Inspect(ctx, map[string]string{"view": "policy", "source": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if pv := got.(*PolicyView); pv.Generation != 1 || pv.Rules != 1 || !strings.HasSuffix(pv.File, "policy.json") || pv.Source != string(policy) ||
		len(pv.SHA256) != 64 || pv.Defaults["to-vm"] != "deny" || pv.LoadedAt.IsZero() {
		t.Errorf("policy: %+v", pv)
	}
	for _, q := range []map[string]string{
		{"view": "nope"}, {"view": "conns", "limit": "0"}, {"view": "conns", "by": "bytes"},
		{"view": "top", "by": "colour"}, {"view": "policy", "source": "maybe"}, {"limit": "x"},
	} {
		if _, err := fp.Inspect(ctx, q); !errors.Is(err, sdk.ErrInvalidParam) {
			t.Errorf("Inspect(%v): %v, want ErrInvalidParam", q, err)
		}
	}
}
