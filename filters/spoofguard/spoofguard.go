// Package spoofguard is the spoof guard filter (NSX SpoofGuard, libvirt
// nwfilter clean-traffic): per vNIC, frames the VM sends with a source MAC,
// IPv4/IPv6 source, ARP sender or ND link-layer address / target that is not
// the vNIC's own are dropped and counted by reason. Fast path only, from-vm
// only, fail-closed. See README.md and docs/spoofguard.md.
package spoofguard

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "spoofguard"

// MaxAddrs bounds each of the ipv4 and ipv6 lists (the LPM tries hold
// 512 entries; fe80::/64 may take one more).
const MaxAddrs = 256

// Parameter names.
const (
	ParamMAC            = "mac"
	ParamIPv4           = "ipv4"
	ParamIPv6           = "ipv6"
	ParamAllowLinkLocal = "allow_link_local"
	ParamVLAN           = "vlan"
	ParamOtherEthertype = "other_ethertypes"
)

// Descriptor registers the filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "1.0.0",
	Summary:    "drop frames whose source MAC/IP, ARP sender or ND address is not the vNIC's own",
	Directions: sdk.DirFromVM,
	FailMode:   sdk.FailClosed,
	Params: []sdk.ParamSpec{
		{Name: ParamMAC, Type: sdk.String, Required: true, Doc: "the vNIC's MAC address (unicast), e.g. 52:54:00:12:34:56"},
		{Name: ParamIPv4, Type: sdk.String, Doc: "IPv4 addresses or prefixes (separated by , or ;) the VM may use as source; none: only DHCP from 0.0.0.0"},
		{Name: ParamIPv6, Type: sdk.String, Doc: "IPv6 addresses or prefixes (separated by , or ;) the VM may use as source"},
		{Name: ParamAllowLinkLocal, Type: sdk.Bool, Default: "true", Doc: "also allow any fe80::/64 source (false: list link-local addresses in ipv6)"},
		{Name: ParamVLAN, Type: sdk.String, Enum: []string{"drop", "allow"}, Default: "drop", Doc: "VLAN-tagged frames: drop, or allow up to two tags and check the inner frame"},
		{Name: ParamOtherEthertype, Type: sdk.String, Enum: []string{"drop", "allow"}, Default: "drop", Doc: "ethertypes other than IPv4, IPv6 and ARP: drop or allow"},
	},
	FastPath: loadFastPath,
}

func init() { sdk.Register(Descriptor) }

// Config is an instance's validated configuration.
type Config struct {
	MAC            [6]byte
	IPv4           []netip.Prefix // masked, deduplicated
	IPv6           []netip.Prefix // masked, deduplicated; fe80::/64 not included
	AllowLinkLocal bool
	AllowVLAN      bool
	AllowOther     bool
}

// LinkLocal is the prefix allow_link_local admits.
var LinkLocal = netip.MustParsePrefix("fe80::/64")

// ParseConfig checks the parameters sdk.ValidateParams cannot (the MAC and
// the address lists); errors name the parameter and the bad element.
func ParseConfig(p sdk.Params) (*Config, error) {
	c := &Config{
		AllowLinkLocal: p.Bool(ParamAllowLinkLocal),
		AllowVLAN:      p.String(ParamVLAN) == "allow",
		AllowOther:     p.String(ParamOtherEthertype) == "allow",
	}
	mac, err := ParseMAC(p.String(ParamMAC))
	if err != nil {
		return nil, fmt.Errorf("%w: parameter %q: %v", sdk.ErrInvalidParam, ParamMAC, err)
	}
	c.MAC = mac
	if c.IPv4, err = ParseAddrList(p.String(ParamIPv4), false); err != nil {
		return nil, fmt.Errorf("%w: parameter %q: %v", sdk.ErrInvalidParam, ParamIPv4, err)
	}
	if c.IPv6, err = ParseAddrList(p.String(ParamIPv6), true); err != nil {
		return nil, fmt.Errorf("%w: parameter %q: %v", sdk.ErrInvalidParam, ParamIPv6, err)
	}
	return c, nil
}

// ParseMAC parses a unicast, non-zero Ethernet address.
func ParseMAC(s string) ([6]byte, error) {
	var out [6]byte
	hw, err := net.ParseMAC(strings.TrimSpace(s))
	if err != nil || len(hw) != 6 {
		return out, fmt.Errorf("%q is not an Ethernet MAC address (want e.g. 52:54:00:12:34:56)", s)
	}
	copy(out[:], hw)
	if out[0]&1 != 0 {
		return out, fmt.Errorf("%q is a multicast/broadcast address, not a vNIC's", s)
	}
	if out == ([6]byte{}) {
		return out, fmt.Errorf("%q is the all-zero address", s)
	}
	return out, nil
}

// ParseAddrList parses a list of addresses and CIDR prefixes of one family,
// separated by commas, semicolons or spaces (';' needs no escaping in
// `vfctl chain set`). The result is masked and deduplicated.
func ParseAddrList(s string, v6 bool) ([]netip.Prefix, error) {
	fam := "IPv4"
	if v6 {
		fam = "IPv6"
	}
	var out []netip.Prefix
	seen := map[netip.Prefix]bool{}
	sep := func(r rune) bool { return r == ',' || r == ';' || unicode.IsSpace(r) }
	for i, el := range strings.FieldsFunc(s, sep) {
		var pr netip.Prefix
		if strings.Contains(el, "/") {
			p, err := netip.ParsePrefix(el)
			if err != nil {
				return nil, fmt.Errorf("element %d %q is not an %s address or prefix", i+1, el, fam)
			}
			pr = p.Masked()
		} else {
			a, err := netip.ParseAddr(el)
			if err != nil {
				return nil, fmt.Errorf("element %d %q is not an %s address or prefix", i+1, el, fam)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("element %d %q: zones are not allowed", i+1, el)
			}
			pr = netip.PrefixFrom(a, a.BitLen())
		}
		if v6 != pr.Addr().Is6() {
			return nil, fmt.Errorf("element %d %q is not an %s address or prefix", i+1, el, fam)
		}
		if pr.Addr().IsMulticast() {
			return nil, fmt.Errorf("element %d %q is multicast, not a source address", i+1, el)
		}
		if pr.Bits() == pr.Addr().BitLen() && pr.Addr().IsUnspecified() {
			return nil, fmt.Errorf("element %d %q is the unspecified address", i+1, el)
		}
		if seen[pr] {
			continue
		}
		seen[pr] = true
		out = append(out, pr)
	}
	if len(out) > MaxAddrs {
		return nil, fmt.Errorf("%d entries, at most %d", len(out), MaxAddrs)
	}
	return out, nil
}

// Drop reasons, indexes of the sg_drops map (SG_R_* in spoofguard.c).
type Reason uint32

const (
	ReasonMAC Reason = iota
	ReasonVLAN
	ReasonEthertype
	ReasonMalformed
	ReasonIPv4
	ReasonARP
	ReasonIPv6
	ReasonND
	NumReasons
)

var reasonNames = [NumReasons]string{"mac", "vlan", "ethertype", "malformed", "ipv4", "arp", "ipv6", "nd"}

func (r Reason) String() string {
	if r < NumReasons {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason(%d)", uint32(r))
}
