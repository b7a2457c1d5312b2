package mirror

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseMatch(t *testing.T) {
	for _, c := range []struct {
		in    string
		canon string // "" = error expected
		field string // the field the error names
	}{
		{"", "", ""},
		{"src=10.0.0.0/24,dst=10.1.0.0/16,proto=tcp,dport=80-90,sport=1024-65535", "src=10.0.0.0/24,dst=10.1.0.0/16,proto=tcp,sport=1024-65535,dport=80-90", ""},
		{"dst=2001:db8::/64 proto=udp  port=53", "dst=2001:db8::/64,proto=udp,port=53", ""},
		{"host=fd00::1,proto=58", "host=fd00::1/128,proto=icmpv6", ""},
		{"src=10.0.0.7,bidir,dport=443", "src=10.0.0.7/32,dport=443,bidir", ""},
		{"proto=TCP", "proto=tcp", ""},
		{"proto=200", "proto=200", ""},
		{"sport=0-0", "sport=0", ""},
		{"src=10.0.0.1/24", "", "src"},
		{"src=10.0.0.0/33", "", "src"},
		{"dst=::ffff:10.0.0.0/104", "", "dst"},
		{"dst=fe80::1%eth0", "", "dst"},
		{"src=10.0.0.0/8,dst=2001:db8::/32", "", "dst"},
		{"host=10.0.0.0/8,src=fd00::/8", "", "host"},
		{"proto=icmp,dport=80", "", "dport"},
		{"proto=44", "", "proto"},
		{"proto=0", "", "proto"},
		{"proto=256", "", "proto"},
		{"proto=", "", "proto"},
		{"dport=90-80", "", "dport"},
		{"dport=65536", "", "dport"},
		{"sport=1-", "", "sport"},
		{"port=x", "", "port"},
		{"src", "", "src"},
		{"bidir", "", "bidir"},
		{"host=10.0.0.1,bidir", "", "bidir"},
		{"bidir=1,src=10.0.0.1", "", "bidir"},
		{"dport=80,dport=81", "", "dport"},
		{"vlan=3", "", ""},
	} {
		m, err := ParseMatch(c.in)
		if c.canon == "" && c.in != "" {
			var me *MatchError
			if !errors.As(err, &me) {
				t.Errorf("%q: err %v, want a MatchError", c.in, err)
			} else if me.Field != c.field || !strings.Contains(err.Error(), "match: ") {
				t.Errorf("%q: error %q names field %q, want %q", c.in, err, me.Field, c.field)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got := m.String(); got != c.canon {
			t.Errorf("%q: canonical %q, want %q", c.in, got, c.canon)
		}
	}
}

// frame builds test frames for the model's table test.
type frame struct {
	v6         bool
	src, dst   string
	proto      uint8
	sport      uint16
	dport      uint16
	ext        []uint8 // IPv6 extension headers before the transport header
	fragOffset uint16  // IPv4: in 8-byte units; IPv6: a Fragment header's offset
	truncate   int     // bytes cut from the end
}

func (f frame) bytes() []byte {
	b := make([]byte, 14)
	src, dst := netip.MustParseAddr(f.src), netip.MustParseAddr(f.dst)
	l4 := binary.BigEndian.AppendUint16(nil, f.sport)
	l4 = binary.BigEndian.AppendUint16(l4, f.dport)
	l4 = append(l4, make([]byte, 16)...)
	if !f.v6 {
		binary.BigEndian.PutUint16(b[12:], 0x0800)
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, f.proto
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(ip[6:], f.fragOffset)
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		b = append(append(b, ip...), l4...)
	} else {
		binary.BigEndian.PutUint16(b[12:], 0x86DD)
		ip := make([]byte, 40)
		ip[0], ip[7] = 0x60, 64
		s, d := src.As16(), dst.As16()
		copy(ip[8:], s[:])
		copy(ip[24:], d[:])
		var ext []byte
		nh := []uint8{}
		nh = append(nh, f.ext...)
		nh = append(nh, f.proto)
		ip[6] = nh[0]
		for i, h := range f.ext {
			e := make([]byte, 8)
			e[0] = nh[i+1]
			if h == ipv6Fragment {
				binary.BigEndian.PutUint16(e[2:], f.fragOffset<<3)
			}
			ext = append(ext, e...)
		}
		binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(l4)))
		b = append(append(append(b, ip...), ext...), l4...)
	}
	return b[:len(b)-f.truncate]
}

func TestMatchModel(t *testing.T) {
	tcp4 := frame{src: "10.0.0.5", dst: "10.1.2.3", proto: 6, sport: 40000, dport: 80}
	tcp6 := frame{v6: true, src: "2001:db8::5", dst: "2001:db8:1::3", proto: 6, sport: 40000, dport: 80}
	with := func(f frame, edit func(*frame)) frame { edit(&f); return f }
	for _, c := range []struct {
		match string
		f     frame
		want  bool
	}{
		{"", tcp4, true},
		{"src=10.0.0.0/24", tcp4, true},
		{"src=10.1.0.0/16", tcp4, false},
		{"dst=10.1.0.0/16,dport=80", tcp4, true},
		{"host=10.1.2.3", tcp4, true},
		{"src=10.1.2.3,dst=10.0.0.5", tcp4, false},
		{"src=10.1.2.3,dst=10.0.0.5,bidir", tcp4, true},
		{"sport=80,bidir", tcp4, true},
		{"sport=80", tcp4, false},
		{"dport=79-81,proto=tcp", tcp4, true},
		{"port=40000", tcp4, true},
		{"proto=udp", tcp4, false},
		{"src=2001:db8::/32", tcp4, false},
		{"src=2001:db8::/64,dport=80", tcp6, true},
		{"src=10.0.0.0/8", tcp6, false},
		{"src=::/0", tcp6, true},
		{"src=0.0.0.0/0", tcp6, false},
		{"dst=2001:db8:1::/48,proto=tcp", with(tcp6, func(f *frame) { f.ext = []uint8{0, 60} }), true},
		{"dst=2001:db8:1::/48", with(tcp6, func(f *frame) { f.ext = []uint8{0, 0, 0, 0, 0, 0, 0} }), true},
		{"proto=tcp", with(tcp6, func(f *frame) { f.ext = []uint8{0, 0, 0, 0, 0, 0} }), true},
		{"proto=tcp", with(tcp6, func(f *frame) { f.ext = []uint8{0, 0, 0, 0, 0, 0, 0} }), false}, // too many
		{"dport=80", with(tcp6, func(f *frame) { f.ext = []uint8{44} }), true},                    // first fragment
		{"dport=80", with(tcp6, func(f *frame) { f.ext = []uint8{44}; f.fragOffset = 3 }), false},
		{"proto=tcp", with(tcp6, func(f *frame) { f.ext = []uint8{44}; f.fragOffset = 3 }), true},
		{"proto=tcp", with(tcp4, func(f *frame) { f.fragOffset = 3 }), true},
		{"port=80", with(tcp4, func(f *frame) { f.fragOffset = 3 }), false},
		{"port=80", with(tcp4, func(f *frame) { f.fragOffset = 0x2000 }), true}, // MF only
		{"dport=80", with(tcp4, func(f *frame) { f.truncate = 19 }), false},     // 1 byte of ports
		{"dport=80", with(tcp4, func(f *frame) { f.truncate = 16 }), true},
		{"src=10.0.0.5", with(tcp4, func(f *frame) { f.truncate = 21 }), false}, // IPv4 header cut
		{"proto=icmp", with(tcp4, func(f *frame) { f.proto = 1 }), true},
		{"port=80", with(tcp4, func(f *frame) { f.proto = 1 }), false},
	} {
		m, err := ParseMatch(c.match)
		if err != nil {
			t.Fatalf("%q: %v", c.match, err)
		}
		if got := m.Matches(c.f.bytes()); got != c.want {
			t.Errorf("match %q, frame %+v: %v, want %v", c.match, c.f, got, c.want)
		}
	}
	m, _ := ParseMatch("src=10.0.0.0/8")
	bad := tcp4.bytes()
	bad[14] = 0x65 // version 6 in an IPv4 ethertype
	if m.Matches(bad) {
		t.Error("IPv4 frame with version 6 matched")
	}
	bad[14] = 0x44 // header length 4
	if m.Matches(bad) {
		t.Error("IPv4 frame with IHL 4 matched")
	}
	if m.Matches([]byte{1, 2, 3}) {
		t.Error("3-byte frame matched")
	}
}

// FuzzParseMatch: no text makes ParseMatch panic; what it accepts has a
// canonical form that parses back to the same match; every error names
// its field or says the whole text is wrong. The corpus is kept in
// testdata/fuzz/FuzzParseMatch.
func FuzzParseMatch(f *testing.F) {
	for _, s := range []string{
		"", "src=10.0.0.0/24,dst=2001:db8::/64,proto=tcp,dport=80-90,sport=1024",
		"host=fd00::1 port=53 proto=udp", "src=10.0.0.1,bidir", "proto=icmpv6",
		"dport=90-80", "src=10.0.0.1/24", "x=1", ",,", "bidir",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseMatch(s)
		if err != nil {
			var me *MatchError
			if !errors.As(err, &me) {
				t.Fatalf("%q: error %v is not a MatchError", s, err)
			}
			if _, known := keyDoc[me.Field]; me.Field != "" && !known && me.Field != "bidir" {
				t.Fatalf("%q: error names unknown field %q", s, me.Field)
			}
			return
		}
		canon := m.String()
		m2, err := ParseMatch(canon)
		if err != nil {
			t.Fatalf("%q: canonical %q does not parse: %v", s, canon, err)
		}
		if m2.String() != canon {
			t.Fatalf("%q: canonical %q parses to %q", s, canon, m2.String())
		}
		if m.IsZero() != (canon == "") {
			t.Fatalf("%q: IsZero %v but canonical %q", s, m.IsZero(), canon)
		}
	})
}

// FuzzMatches: the model never panics, whatever the frame and the match.
// (TestMatchDifferential checks what it answers against mirror.c.)
func FuzzMatches(f *testing.F) {
	tcp6 := frame{v6: true, src: "2001:db8::5", dst: "2001:db8:1::3", proto: 6, sport: 40000, dport: 80, ext: []uint8{0, 44}}
	f.Add(tcp6.bytes(), "src=2001:db8::/64,dport=80,bidir")
	f.Add(frame{src: "10.0.0.5", dst: "10.1.2.3", proto: 17, sport: 53, dport: 53}.bytes(), "host=10.0.0.0/8,proto=udp,port=53")
	f.Fuzz(func(t *testing.T, b []byte, text string) {
		m, err := ParseMatch(text)
		if err != nil {
			return
		}
		m.Matches(b)
	})
}
