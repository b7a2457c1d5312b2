// Package mirror copies a vNIC's frames (optionally matched, sampled and
// rate limited) to a pcapng file or to an ERSPAN type II / III collector.
// Its fast path copies each selected frame, truncated to the snap length,
// into a BPF ring buffer and always continues the chain; its Go side (in
// the FastPath instance) reads the ring and feeds the sink. It is
// fail-open: a broken mirror never affects the VM's traffic.
package mirror

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "mirror"

// MaxSnaplen is the largest snap length (a jumbo frame).
const MaxSnaplen = 9216

// Descriptor registers the mirror filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "0.1.0",
	Summary:    "mirror frames to pcapng or ERSPAN II/III (sampled, rate limited, never blocks)",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailOpen, // a broken mirror must never affect the VM
	Params: []sdk.ParamSpec{
		{Name: "sink", Type: sdk.String, Required: true, Doc: "pcapng file path, erspan2://collector or erspan3://collector (IPv4), or vnic://TAP (SPAN: whole frames to a monitoring VM's vNIC)"},
		{Name: "session", Type: sdk.Int, Default: "1", Min: sdk.Bound(0), Max: sdk.Bound(1023), Doc: "ERSPAN session id"},
		{Name: "snaplen", Type: sdk.Int, Default: "9216", Min: sdk.Bound(14), Max: sdk.Bound(MaxSnaplen), Doc: "bytes of each frame copied"},
		{Name: "sample", Type: sdk.Int, Default: "1", Min: sdk.Bound(1), Max: sdk.Bound(1 << 30), Doc: "mirror 1 frame in N"},
		{Name: "rate", Type: sdk.Int, Default: "10000", Min: sdk.Bound(0), Max: sdk.Bound(10_000_000), Doc: "most mirrored frames per second (burst: one second's worth); 0 = unlimited"},
		{Name: "match", Type: sdk.String, Doc: "frames to mirror, terms ANDed, separated by commas or blanks: src=, dst=, host= PREFIX (IPv4 or IPv6), proto=tcp|udp|icmp|icmpv6|N, sport=, dport=, port= N or N-M, bidir (docs/mirror.md); empty: every frame"},
		{Name: "proto", Type: sdk.Int, Default: "0", Min: sdk.Bound(0), Max: sdk.Bound(255), Doc: "match shorthand: IP protocol number (0 = any); not with match"},
		{Name: "port", Type: sdk.Int, Default: "0", Min: sdk.Bound(0), Max: sdk.Bound(65535), Doc: "match shorthand: TCP/UDP source or destination port (0 = any); not with match"},
		{Name: "cidr", Type: sdk.Prefix, Doc: "match shorthand: source or destination prefix (IPv4 or IPv6); not with match"},
	},
	FastPath: loadFastPath,
}

func init() { sdk.Register(Descriptor) }

// SinkKind is where mirrored frames go.
type SinkKind int

const (
	SinkPcapng SinkKind = iota
	SinkERSPAN2
	SinkERSPAN3
	SinkVNIC // SPAN to a local monitor vNIC
)

// Config is an instance's validated configuration.
type Config struct {
	Kind      SinkKind
	Path      string     // SinkPcapng
	Monitor   string     // SinkVNIC: the monitor vNIC's name
	Collector netip.Addr // SinkERSPAN*
	Session   uint16
	Snaplen   uint32
	Sample    uint32
	Rate      uint32 // frames per second, 0 = unlimited
	// Match selects the frames mirrored (the match parameter, or the
	// proto, port and cidr shorthands); the zero Match takes every frame.
	Match Match
}

// ParseConfig turns validated parameters into a Config, rejecting what the
// schema cannot express (sink syntax, IPv6 collector, match text).
func ParseConfig(p sdk.Params) (Config, error) {
	c := Config{
		Session: uint16(p.Int("session")),
		Snaplen: uint32(p.Int("snaplen")),
		Sample:  uint32(max(p.Int("sample"), 1)),
		Rate:    uint32(p.Int("rate")),
	}
	if !p.Has("snaplen") {
		c.Snaplen = MaxSnaplen
	}
	if !p.Has("rate") {
		c.Rate = 10000
	}
	bad := func(format string, a ...any) (Config, error) {
		return Config{}, fmt.Errorf("%w: %s", sdk.ErrInvalidParam, fmt.Sprintf(format, a...))
	}
	sink := p.String("sink")
	switch {
	case sink == "":
		return bad("parameter \"sink\" is required")
	case strings.HasPrefix(sink, "erspan2://"), strings.HasPrefix(sink, "erspan3://"):
		c.Kind = SinkERSPAN2
		if sink[6] == '3' {
			c.Kind = SinkERSPAN3
		}
		a, err := netip.ParseAddr(strings.TrimSuffix(sink[len("erspan2://"):], "/"))
		if err != nil || !a.Is4() {
			return bad("parameter \"sink\": collector %q is not an IPv4 address (erspan2://10.0.0.9)", sink[len("erspan2://"):])
		}
		c.Collector = a
	case strings.HasPrefix(sink, "vnic://"):
		c.Kind, c.Monitor = SinkVNIC, sink[len("vnic://"):]
		if c.Monitor == "" || len(c.Monitor) > 15 || strings.ContainsAny(c.Monitor, "/ ") {
			return bad("parameter \"sink\": %q: want vnic://<device name>", sink)
		}
		if p.Int("snaplen") != MaxSnaplen {
			return bad("parameter \"snaplen\": a vnic:// (SPAN) mirror sends whole frames")
		}
	case strings.Contains(sink, "://"):
		return bad("parameter \"sink\": %q: want a pcapng file path, erspan2://collector, erspan3://collector or vnic://TAP", sink)
	default:
		c.Kind = SinkPcapng
		c.Path = sink
	}
	legacy := p.Int("proto") != 0 || p.Int("port") != 0 || p.Has("cidr")
	if text := p.String("match"); text != "" {
		if legacy {
			return bad("parameter \"match\": cannot be combined with proto, port or cidr (write them as match terms: proto=6,port=53,host=10.0.0.0/8)")
		}
		m, err := ParseMatch(text)
		if err != nil {
			return Config{}, fmt.Errorf("%w: parameter \"match\": %w", sdk.ErrInvalidParam, err)
		}
		c.Match = m
	} else if legacy {
		// The shorthands of the first version, kept: proto, port (source
		// or destination), cidr (source or destination).
		if n := p.Int("proto"); n != 0 {
			c.Match.Proto, c.Match.HasProto = uint8(n), true
		}
		if n := p.Int("port"); n != 0 {
			c.Match.Port = &PortRange{uint16(n), uint16(n)}
		}
		if p.Has("cidr") {
			c.Match.Host = p.Prefix("cidr").Masked()
			if c.Match.Host.Addr().Is4In6() {
				return bad("parameter \"cidr\": %s is IPv4-mapped: write the IPv4 prefix", c.Match.Host)
			}
		}
		if c.Match.Port != nil && c.Match.HasProto && c.Match.Proto != protoTCP && c.Match.Proto != protoUDP {
			return bad("parameter \"port\" needs proto 6 (tcp), 17 (udp) or 0")
		}
	}
	return c, nil
}

// Record is one mirrored frame as the fast path reports it.
type Record struct {
	MonoNS  uint64 // CLOCK_MONOTONIC, ns
	Seq     uint32
	Ifindex uint32
	OrigLen uint32
	Dir     sdk.Direction
	Data    []byte // the frame, truncated to the snap length
}

// hdrLen is sizeof(struct mirror_hdr).
const hdrLen = 24

// parseRecord decodes a ring buffer sample.
func parseRecord(raw []byte, r *Record) error {
	if len(raw) < hdrLen {
		return fmt.Errorf("short record: %d bytes", len(raw))
	}
	le := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24 }
	r.MonoNS = uint64(le(raw[0:])) | uint64(le(raw[4:]))<<32
	r.Seq = le(raw[8:])
	r.Ifindex = le(raw[12:])
	r.OrigLen = le(raw[16:])
	capLen := int(raw[20]) | int(raw[21])<<8
	r.Dir = sdk.Direction(raw[22] & 1)
	if hdrLen+capLen > len(raw) {
		return fmt.Errorf("record claims %d bytes, has %d", capLen, len(raw)-hdrLen)
	}
	r.Data = raw[hdrLen : hdrLen+capLen]
	return nil
}
