package firewall

import (
	"net/netip"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// scalePolicy is the benchmark's shape: n-1 deny rules for distinct remote
// /32s in 10.200.0.0/16..10.255.x.x (and their ports), then "allow tcp/5001
// to the VM", default deny to the VM, allow from it.
func scalePolicy(n int) *Policy {
	p := &Policy{Defaults: [sdk.NumDirections]Action{Allow, Deny}}
	for i := range n - 1 {
		a := netip.AddrFrom4([4]byte{10, byte(200 + i>>16), byte(i >> 8), byte(i)})
		p.Rules = append(p.Rules, Rule{
			Name: "deny", Priority: 10, Dirs: sdk.DirToVM, Proto: ProtoTCP,
			Src:      AddrMatch{Prefixes: []netip.Prefix{netip.PrefixFrom(a, 32)}},
			Dst:      AddrMatch{Any: true},
			DstPorts: []PortRange{{uint16(1000 + i%50000), uint16(1000 + i%50000)}},
			ICMPType: -1, ICMPCode: -1, Action: Deny,
		})
	}
	p.Rules = append(p.Rules, Rule{
		Name: "allow-5001", Priority: 20, Dirs: sdk.DirToVM, Proto: ProtoTCP,
		Src: AddrMatch{Any: true}, Dst: AddrMatch{Any: true},
		DstPorts: []PortRange{{5001, 5001}}, ICMPType: -1, ICMPCode: -1, Action: Allow,
	})
	return p
}
