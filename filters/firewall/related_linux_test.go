package firewall

import (
	"net/netip"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestICMPRelated: an ICMP error quoting a tracked flow passes whatever
// the policy (related); one quoting no flow is handled as plain ICMP (here
// the to-vm default, deny). IPv4 and IPv6, kernel and model alike.
func TestICMPRelated(t *testing.T) {
	policy := []byte(`{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}}`)
	fp := testInstance(t, policy, "")
	p, err := ParsePolicy(policy, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	model := NewModel(p)
	for _, v6 := range []bool{false, true} {
		vm, remote, router := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.9.0.2"), netip.MustParseAddr("10.0.0.254")
		errType, proto := uint8(3), uint8(ProtoICMP)
		if v6 {
			vm, remote, router = netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd09::2"), netip.MustParseAddr("fd00::fe")
			errType, proto = 1, ProtoICMPv6
		}
		tracked := flow{v6: v6, vm: vm, remote: remote, proto: ProtoUDP, vmPort: 40000, remotePort: 53}
		unknown := tracked
		unknown.remotePort = 54
		icmpErr := func(f flow) []byte {
			in := f.spec(sdk.FromVM)
			s := pktSpec{dir: sdk.ToVM, v6: v6, src: router, dst: vm, proto: proto, icmpType: errType, quote: in.build()[14:]}
			return s.build()
		}
		steps := []struct {
			frame []byte
			dir   sdk.Direction
			pass  bool
			what  string
		}{
			{icmpErr(tracked), sdk.ToVM, false, "error before the flow exists"},
			{tracked.spec(sdk.FromVM).build(), sdk.FromVM, true, "flow opens"},
			{icmpErr(tracked), sdk.ToVM, true, "error about the flow (related)"},
			{icmpErr(unknown), sdk.ToVM, false, "error about another port"},
		}
		for _, s := range steps {
			got, ok := run(t, fp.Program(), s.frame, s.dir)
			if !ok {
				t.Fatal("harness refused a frame")
			}
			want := model.Process(s.frame, s.dir)
			if got != s.pass || want.Drop == s.pass {
				t.Fatalf("v6=%v %s: kernel passes=%v, model %v, want pass=%v", v6, s.what, got, want, s.pass)
			}
		}
	}
	if st := fp.statsForTest(t); st[StatRelated] != 2 || st != model.Stats {
		t.Fatalf("counters: kernel %v, model %v", st, model.Stats)
	}
}
