package spoofguard

import (
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

func params(t testing.TB, raw map[string]string) sdk.Params {
	t.Helper()
	p, err := sdk.ValidateParams(Descriptor.Params, raw)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig(params(t, map[string]string{
		"mac":  "52:54:00:AB:cd:01",
		"ipv4": "10.0.0.5, 10.0.1.0/24;10.0.0.5,",
		"ipv6": "2001:db8::5,2001:db8:1::/64",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.MAC != [6]byte{0x52, 0x54, 0, 0xab, 0xcd, 1} || len(c.IPv4) != 2 || len(c.IPv6) != 2 ||
		!c.AllowLinkLocal || c.AllowVLAN || c.AllowOther {
		t.Errorf("config %+v", c)
	}
	if _, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"ipv4": "10.0.0.1"}); err == nil {
		t.Error("mac is not required")
	}
	if _, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"mac": "52:54:00:00:00:01", "vlan": "maybe"}); err == nil {
		t.Error("vlan=maybe accepted")
	}
	for _, bad := range []struct {
		raw  map[string]string
		want string
	}{
		{map[string]string{"mac": "52:54:00:00:00"}, `parameter "mac": "52:54:00:00:00" is not`},
		{map[string]string{"mac": "ff:ff:ff:ff:ff:ff"}, "multicast"},
		{map[string]string{"mac": "01:00:5e:00:00:01"}, "multicast"},
		{map[string]string{"mac": "00:00:00:00:00:00"}, "all-zero"},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv4": "10.0.0.5,10.0.0.300"}, `parameter "ipv4": element 2 "10.0.0.300"`},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv4": "2001:db8::1"}, `element 1 "2001:db8::1" is not an IPv4`},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv4": "10.0.0.0/33"}, `element 1`},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv4": "0.0.0.0"}, "unspecified"},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv4": "224.0.0.1"}, "multicast"},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv6": "10.0.0.1"}, `parameter "ipv6": element 1 "10.0.0.1" is not an IPv6`},
		{map[string]string{"mac": "52:54:00:00:00:01", "ipv6": "fe80::1%eth0"}, "zones"},
	} {
		_, err := ParseConfig(params(t, bad.raw))
		if err == nil || !strings.Contains(err.Error(), bad.want) || !errors.Is(err, sdk.ErrInvalidParam) {
			t.Errorf("%v: error %v, want one containing %q", bad.raw, err, bad.want)
		}
	}
	var many []string
	for i := 0; i <= MaxAddrs; i++ {
		many = append(many, netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String())
	}
	if _, err := ParseConfig(params(t, map[string]string{"mac": "52:54:00:00:00:01", "ipv4": strings.Join(many, ",")})); err == nil {
		t.Errorf("%d addresses accepted", len(many))
	}
}

func TestDescriptor(t *testing.T) {
	if err := Descriptor.Validate(); err != nil {
		t.Fatal(err)
	}
	if Descriptor.Dirs() != sdk.DirFromVM || Descriptor.FailMode != sdk.FailClosed {
		t.Error("spoofguard must be from-vm only and fail-closed")
	}
	if d, err := sdk.Lookup(Name); err != nil || d != Descriptor {
		t.Error("not registered")
	}
}

// testConfig is the configuration of the hand-written cases.
func testConfig() *Config {
	return &Config{
		MAC:            [6]byte{0x52, 0x54, 0, 0, 0, 5},
		IPv4:           []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("10.0.1.0/28")},
		IPv6:           []netip.Prefix{netip.MustParsePrefix("2001:db8::5/128")},
		AllowLinkLocal: true,
	}
}

type tcase struct {
	name  string
	cfg   func(*Config)
	frame []byte
	vlan  bool // skb->vlan_present (model only)
	want  Verdict
}

func handCases() []tcase {
	own := [6]byte{0x52, 0x54, 0, 0, 0, 5}
	other := [6]byte{0x52, 0x54, 0, 0, 0, 6}
	a := netip.MustParseAddr
	me4, me6, ll := a("10.0.0.5"), a("2001:db8::5"), a("fe80::1234")
	peer4, peer6 := a("10.0.0.9"), a("2001:db8::9")
	icmp := []byte{8, 0, 0, 0, 0, 1, 0, 1}
	echo6 := []byte{128, 0, 0, 0, 0, 1, 0, 1}
	dhcp := udp(68, 67, make([]byte, 20))
	vlanAllow := func(c *Config) { c.AllowVLAN = true }
	tagged := func(f []byte, tpids ...uint16) []byte {
		out := append([]byte{}, f[:12]...)
		inner := f[12:14]
		for _, tp := range tpids {
			out = append(out, byte(tp>>8), byte(tp), 0, 7)
		}
		out = append(out, inner...)
		return append(out, f[14:]...)
	}
	ipv4 := ipv4Frame(own, me4, peer4, 1, icmp)
	fragDHCP := ipv4Frame(own, netip.IPv4Unspecified(), netip.AddrFrom4([4]byte{255, 255, 255, 255}), 17, dhcp)
	fragDHCP[14+6] = 0x20 // MF
	ihl4 := ipv4Frame(own, me4, peer4, 1, icmp)
	ihl4[14] = 0x44
	ns := func(src, target netip.Addr, opts ...[]byte) []byte {
		return ipv6Frame(own, src, a("ff02::1:ff00:9"), 58, nd(135, target, opts...))
	}
	na := func(src, target netip.Addr, opts ...[]byte) []byte {
		return ipv6Frame(own, src, peer6, 58, nd(136, target, opts...))
	}
	withExt := func(nh byte, ext []byte, l4 []byte) []byte {
		f := eth(own, 0x86dd)
		f = append(f, ipv6Hdr(me6, peer6, nh, len(ext)+len(l4))...)
		return append(append(f, ext...), l4...)
	}
	arp := func(op uint16, sha [6]byte, spa, tpa netip.Addr) []byte {
		return append(eth(own, 0x0806), arpBody(op, sha, spa, tpa)...)
	}
	lyingARP := arp(1, own, me4, peer4)
	lyingARP[14+4] = 8 // hlen 8
	other6 := ipv6Frame(own, a("2001:db8::6"), peer6, 58, echo6)
	return []tcase{
		{name: "ipv4 own", frame: ipv4},
		{name: "ipv4 in own prefix", frame: ipv4Frame(own, a("10.0.1.14"), peer4, 17, udp(1, 2, nil))},
		{name: "ipv4 other source", frame: ipv4Frame(own, a("10.0.0.6"), peer4, 1, icmp), want: drop(ReasonIPv4)},
		{name: "ipv4 outside prefix", frame: ipv4Frame(own, a("10.0.1.16"), peer4, 1, icmp), want: drop(ReasonIPv4)},
		{name: "forged mac", frame: ipv4Frame(other, me4, peer4, 1, icmp), want: drop(ReasonMAC)},
		{name: "dhcp discover", frame: ipv4Frame(own, netip.IPv4Unspecified(), a("255.255.255.255"), 17, dhcp)},
		{name: "0.0.0.0 not dhcp", frame: ipv4Frame(own, netip.IPv4Unspecified(), a("255.255.255.255"), 17, udp(67, 68, nil)), want: drop(ReasonIPv4)},
		{name: "0.0.0.0 tcp", frame: ipv4Frame(own, netip.IPv4Unspecified(), peer4, 6, dhcp), want: drop(ReasonIPv4)},
		{name: "0.0.0.0 fragment", frame: fragDHCP, want: drop(ReasonIPv4)},
		{name: "ipv4 truncated", frame: ipv4[:14+19], want: drop(ReasonMalformed)},
		{name: "ipv4 ihl 4", frame: ihl4, want: drop(ReasonMalformed)},
		{name: "arp request", frame: arp(1, own, me4, peer4)},
		{name: "arp reply", frame: arp(2, own, me4, peer4)},
		{name: "arp probe own", frame: arp(1, own, netip.IPv4Unspecified(), me4)},
		{name: "arp probe other", frame: arp(1, own, netip.IPv4Unspecified(), peer4), want: drop(ReasonARP)},
		{name: "arp lying sender ip", frame: arp(2, own, peer4, peer4), want: drop(ReasonARP)},
		{name: "arp lying sender mac", frame: arp(2, other, me4, peer4), want: drop(ReasonARP)},
		{name: "arp lying hlen", frame: lyingARP, want: drop(ReasonARP)},
		{name: "arp op 3", frame: arp(3, own, me4, peer4), want: drop(ReasonARP)},
		{name: "arp truncated", frame: arp(1, own, me4, peer4)[:14+27], want: drop(ReasonMalformed)},
		{name: "ipv6 own", frame: ipv6Frame(own, me6, peer6, 58, echo6)},
		{name: "ipv6 link-local", frame: ipv6Frame(own, ll, peer6, 58, echo6)},
		{name: "ipv6 link-local off", cfg: func(c *Config) { c.AllowLinkLocal = false }, frame: ipv6Frame(own, ll, peer6, 58, echo6), want: drop(ReasonIPv6)},
		{name: "ipv6 other", frame: other6, want: drop(ReasonIPv6)},
		{name: "ipv6 truncated", frame: other6[:14+39], want: drop(ReasonMalformed)},
		{name: "ns own sll", frame: ns(me6, peer6, ndOpt(1, own))},
		{name: "ns forged sll", frame: ns(me6, peer6, ndOpt(1, other)), want: drop(ReasonND)},
		{name: "ns forged sll second", frame: ns(me6, peer6, []byte{14, 1, 1, 2, 3, 4, 5, 6}, ndOpt(1, other)), want: drop(ReasonND)},
		{name: "ns zero-length option", frame: ns(me6, peer6, []byte{14, 0, 0, 0, 0, 0, 0, 0}), want: drop(ReasonND)},
		{name: "ns option overruns", frame: ns(me6, peer6, ndOpt(1, own)[:6]), want: drop(ReasonND)},
		{name: "ns sll length 2", frame: ns(me6, peer6, append([]byte{1, 2}, make([]byte, 14)...)), want: drop(ReasonND)},
		{name: "dad ns own", frame: ns(netip.IPv6Unspecified(), me6)},
		{name: "dad ns with sll", frame: ns(netip.IPv6Unspecified(), me6, ndOpt(1, own)), want: drop(ReasonND)},
		{name: "dad ns other target", frame: ns(netip.IPv6Unspecified(), peer6), want: drop(ReasonND)},
		{name: "unspecified echo", frame: ipv6Frame(own, netip.IPv6Unspecified(), peer6, 58, echo6), want: drop(ReasonIPv6)},
		{name: "unspecified na", frame: na(netip.IPv6Unspecified(), me6), want: drop(ReasonIPv6)},
		{name: "na own", frame: na(me6, me6, ndOpt(2, own))},
		{name: "na other target", frame: na(me6, peer6, ndOpt(2, own)), want: drop(ReasonND)},
		{name: "na forged tll", frame: na(me6, me6, ndOpt(2, other)), want: drop(ReasonND)},
		{name: "na truncated", frame: na(me6, me6)[:14+40+20], want: drop(ReasonND)},
		{name: "na behind hop-by-hop", frame: withExt(0, []byte{58, 0, 1, 4, 0, 0, 0, 0}, nd(136, peer6)), want: drop(ReasonND)},
		{name: "na behind dstopts ok", frame: withExt(60, []byte{58, 0, 1, 4, 0, 0, 0, 0}, nd(136, me6, ndOpt(2, own)))},
		{name: "fragmented ns", frame: withExt(44, []byte{58, 0, 0, 1, 0, 0, 0, 1}, nd(135, peer6, ndOpt(1, own))), want: drop(ReasonND)},
		{name: "later fragment", frame: withExt(44, []byte{58, 0, 0, 0x11, 0, 0, 0, 1}, make([]byte, 24))},
		{name: "ext header truncated", frame: withExt(0, []byte{58}, nil), want: drop(ReasonMalformed)},
		{name: "vlan dropped", frame: tagged(ipv4, 0x8100), want: drop(ReasonVLAN)},
		{name: "qinq dropped", frame: tagged(ipv4, 0x88a8, 0x8100), want: drop(ReasonVLAN)},
		{name: "vlan allowed", cfg: vlanAllow, frame: tagged(ipv4, 0x8100)},
		{name: "vlan allowed inner spoof", cfg: vlanAllow, frame: tagged(ipv4Frame(own, a("10.0.0.6"), peer4, 1, icmp), 0x8100), want: drop(ReasonIPv4)},
		{name: "vlan allowed qinq", cfg: vlanAllow, frame: tagged(arp(1, own, me4, peer4), 0x88a8, 0x8100)},
		{name: "vlan allowed three tags", cfg: vlanAllow, frame: tagged(ipv4, 0x88a8, 0x8100, 0x8100), want: drop(ReasonVLAN)},
		{name: "vlan allowed truncated tag", cfg: vlanAllow, frame: tagged(eth(own, 0x0800), 0x8100)[:16], want: drop(ReasonMalformed)},
		{name: "offloaded tag", frame: ipv4, vlan: true, want: drop(ReasonVLAN)},
		{name: "offloaded tag allowed", cfg: vlanAllow, frame: ipv4, vlan: true},
		{name: "offloaded tag plus two", cfg: vlanAllow, frame: tagged(ipv4, 0x8100, 0x8100), vlan: true, want: drop(ReasonVLAN)},
		{name: "lldp dropped", frame: append(eth(own, 0x88cc), make([]byte, 40)...), want: drop(ReasonEthertype)},
		{name: "lldp allowed", cfg: func(c *Config) { c.AllowOther = true }, frame: append(eth(own, 0x88cc), make([]byte, 40)...)},
		{name: "802.3 length", frame: append(eth(own, 0x0026), make([]byte, 40)...), want: drop(ReasonEthertype)},
	}
}

func (c tcase) config() *Config {
	cfg := testConfig()
	if c.cfg != nil {
		c.cfg(cfg)
	}
	return cfg
}

func TestModel(t *testing.T) {
	for _, c := range handCases() {
		if got := NewModel(c.config()).Decide(c.frame, c.vlan); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
}

// TestModelRandom: the generator reaches every reason and both verdicts.
func TestModelRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	seen := map[Verdict]int{}
	for i := 0; i < 200; i++ {
		cfg := randomConfig(rng)
		g := &gen{rng: rng, cfg: cfg}
		m := NewModel(cfg)
		for j := 0; j < 200; j++ {
			seen[m.Decide(g.frame(), false)]++
		}
	}
	if seen[pass] == 0 {
		t.Error("nothing passed")
	}
	for r := Reason(0); r < NumReasons; r++ {
		if seen[drop(r)] == 0 {
			t.Errorf("reason %v never produced", r)
		}
	}
	t.Logf("%v", seen)
}

func FuzzParseAddrList(f *testing.F) {
	for _, s := range []string{"10.0.0.5", "10.0.0.0/24, 10.0.1.1", "2001:db8::/64,fe80::1", ",,", "1.2.3.4/40"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, v6 := range []bool{false, true} {
			ps, err := ParseAddrList(s, v6)
			if err != nil {
				continue
			}
			for _, p := range ps {
				if !p.IsValid() || p.Addr().Is6() != v6 || p != p.Masked() {
					t.Fatalf("%q: bad prefix %v", s, p)
				}
			}
		}
	})
}

// FuzzModel: the model never panics, whatever the frame.
func FuzzModel(f *testing.F) {
	for _, c := range handCases() {
		f.Add(c.frame, c.vlan)
	}
	m1 := NewModel(testConfig())
	cfg := testConfig()
	cfg.AllowVLAN, cfg.AllowOther = true, true
	m2 := NewModel(cfg)
	f.Fuzz(func(t *testing.T, b []byte, vlan bool) {
		m1.Decide(b, vlan)
		m2.Decide(b, vlan)
	})
}
