package firewall

import (
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestExplainAgreesWithModel: for random policies and packets, Explain
// names the rule Policy.Match picks and the verdict the model reaches on
// the packet's first frame; its description parses back to the packet.
func TestExplainAgreesWithModel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	n := 0
	for range 100 {
		p := randPolicy(t, rng, 1+rng.IntN(40))
		g := &trafficGen{rng: rng}
		for range 100 {
			f := g.newFlow()
			dir := sdk.Direction(rng.IntN(2))
			s := f.spec(dir)
			switch s.proto {
			case ProtoTCP:
				s.flags = tcpSYN
			case ProtoICMP, ProtoICMPv6:
				s.icmpType = []uint8{8, 0, 3, 128, 129, 1, 11}[rng.IntN(7)]
				s.icmpCode = uint8(rng.IntN(3))
			}
			if rng.IntN(10) == 0 {
				s.fragOff = 5
				if s.v6 {
					s.extHdrs = []uint8{44}
				}
			}
			frame := s.build()
			pkt := ParseFrame(frame, dir)
			if pkt.Kind != KindIP {
				continue
			}
			back, err := ParsePacket(pkt.String())
			if err != nil {
				t.Fatalf("%q: %v", pkt.String(), err)
			}
			pkt.EchoID, pkt.Inner = 0, nil // not part of the description
			if !reflect.DeepEqual(*back, pkt) {
				t.Fatalf("%q parses to %+v, want %+v", pkt.String(), *back, pkt)
			}
			e := p.Explain(&pkt)
			m := NewModel(p)
			v := m.Process(frame, dir)
			if e.Rule != p.Match(&pkt) || (e.Verdict == "allow") == v.Drop {
				t.Fatalf("%s: explain %+v, model %v, match %d", pkt.String(), e, v, p.Match(&pkt))
			}
			n++
		}
	}
	t.Logf("%d packets explained", n)
}

func TestParsePacketErrors(t *testing.T) {
	for _, s := range []string{
		"", "from-vm tcp 1.2.3.4", "up tcp 1.2.3.4 -> 1.2.3.5", "from-vm xyz 1.2.3.4 -> 1.2.3.5",
		"from-vm tcp 1.2.3.4 -> fd00::1", "from-vm icmp 1.2.3.4:5 -> 1.2.3.5", "from-vm tcp 1.2.3.4 -> 1.2.3.5 flags=syn,bogus",
		"from-vm tcp 1.2.3.4 -> 1.2.3.5 type=3", "from-vm icmp 1.2.3.4 -> 1.2.3.5 type=300", "from-vm tcp 1.2.3.400 -> 1.2.3.5",
	} {
		if p, err := ParsePacket(s); err == nil {
			t.Errorf("%q parsed: %+v", s, p)
		}
	}
	p, err := ParsePacket("to-vm udp [fd00::5]:53->[fd00::1]:5353")
	if err != nil || p.Family != 6 || p.P1 != 53 || p.P2 != 5353 || p.Dir != sdk.ToVM {
		t.Errorf("v6 packet: %+v, %v", p, err)
	}
}

func TestDiffPolicies(t *testing.T) {
	parse := func(s string) *Policy {
		p, err := ParsePolicy([]byte(s), ParseOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old := parse(`{"version": 1, "rules": [
		{"name": "a", "proto": "tcp", "dst_ports": [80], "action": "allow"},
		{"name": "b", "proto": "udp", "action": "deny"},
		{"name": "c", "src": ["10.0.0.0/8"], "action": "allow"},
		{"name": "d", "action": "deny"}]}`)
	new := parse(`{"version": 1, "defaults": {"to-vm": "allow"}, "rules": [
		{"name": "d", "action": "deny"},
		{"name": "a", "proto": "tcp", "dst_ports": [80, 443], "action": "allow"},
		{"name": "c", "src": ["10.0.0.0/8"], "action": "allow", "log": true},
		{"name": "e", "action": "allow"}]}`)
	d, err := DiffPolicies(old, new)
	if err != nil {
		t.Fatal(err)
	}
	names := func(cs []RuleChange) []string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name+":"+slices.Concat(c.Fields, []string{""})[0])
		}
		return out
	}
	if got := names(d.Added); !slices.Equal(got, []string{"e:"}) {
		t.Errorf("added %v", got)
	}
	if got := names(d.Removed); !slices.Equal(got, []string{"b:"}) {
		t.Errorf("removed %v", got)
	}
	if got := names(d.Changed); !slices.Equal(got, []string{"a:dst_ports", "c:log", "d:order"}) {
		t.Errorf("changed %v", got)
	}
	if len(d.Defaults) != 1 {
		t.Errorf("defaults %v", d.Defaults)
	}
	if d, _ := DiffPolicies(old, old); !d.Empty() {
		t.Errorf("a policy differs from itself: %+v", d)
	}
	dup := parse(`{"version": 1, "rules": [{"name": "x", "action": "deny"}, {"name": "x", "action": "allow"}]}`)
	if _, err := DiffPolicies(dup, old); err == nil {
		t.Error("duplicate names accepted")
	}
}
