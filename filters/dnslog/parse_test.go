package dnslog

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/vnicfilter/vnicfilter/sdk"
)

var (
	macA = net.HardwareAddr{2, 0x76, 0x66, 0, 0, 1}
	macB = net.HardwareAddr{2, 0x76, 0x66, 0, 0, 2}
)

// frame builds an Ethernet frame: IPv4 or IPv6, UDP or TCP between ports
// sport and dport, with payload.
func frame(t testing.TB, v6, tcp bool, sport, dport int, payload []byte) []byte {
	t.Helper()
	eth := &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: layers.EthernetTypeIPv4}
	var ip gopacket.NetworkLayer
	proto := layers.IPProtocolUDP
	if tcp {
		proto = layers.IPProtocolTCP
	}
	if v6 {
		eth.EthernetType = layers.EthernetTypeIPv6
		ip = &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: proto, SrcIP: net.ParseIP("fd99::1"), DstIP: net.ParseIP("fd99::2")}
	} else {
		ip = &layers.IPv4{Version: 4, TTL: 64, Protocol: proto, SrcIP: net.IPv4(10, 99, 0, 1), DstIP: net.IPv4(10, 99, 0, 2)}
	}
	var l4 gopacket.SerializableLayer
	if tcp {
		tl := &layers.TCP{SrcPort: layers.TCPPort(sport), DstPort: layers.TCPPort(dport), ACK: true, PSH: len(payload) > 0, Window: 512}
		tl.SetNetworkLayerForChecksum(ip)
		l4 = tl
	} else {
		ul := &layers.UDP{SrcPort: layers.UDPPort(sport), DstPort: layers.UDPPort(dport)}
		ul.SetNetworkLayerForChecksum(ip)
		l4 = ul
	}
	buf := gopacket.NewSerializeBuffer()
	err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		eth, ip.(gopacket.SerializableLayer), l4, gopacket.Payload(payload))
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// dnsMsg serialises a DNS message with one question.
func dnsMsg(t testing.TB, id uint16, name string, typ layers.DNSType, resp bool, rcode layers.DNSResponseCode, answers int) []byte {
	t.Helper()
	d := &layers.DNS{ID: id, QR: resp, RD: true, ResponseCode: rcode,
		Questions: []layers.DNSQuestion{{Name: []byte(name), Type: typ, Class: layers.DNSClassIN}}}
	for i := 0; i < answers; i++ {
		d.Answers = append(d.Answers, layers.DNSResourceRecord{Name: []byte(name), Type: layers.DNSTypeA, Class: layers.DNSClassIN, TTL: 60, IP: net.IPv4(192, 0, 2, byte(i+1))})
	}
	buf := gopacket.NewSerializeBuffer()
	if err := d.SerializeTo(buf, gopacket.SerializeOptions{FixLengths: true}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func arpFrame() []byte {
	arp := append(append(append([]byte{}, macB...), macA...), 0x08, 0x06)
	return append(arp, make([]byte, 28)...)
}

func tcpDNS(msg []byte) []byte {
	return append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

type parseCase struct {
	name  string
	frame []byte
	want  Message
	err   error // ErrNoDNS, errAny, or nil
}

var errAny = errors.New("any parse error")

func parseCases(t testing.TB) []parseCase {
	q := dnsMsg(t, 0x1234, "example.com", layers.DNSTypeA, false, 0, 0)
	r := dnsMsg(t, 0x1234, "example.com", layers.DNSTypeA, true, layers.DNSResponseCodeNoErr, 2)
	nx := dnsMsg(t, 7, "nope.example", layers.DNSTypeAAAA, true, layers.DNSResponseCodeNXDomain, 0)
	arp := arpFrame()
	return []parseCase{
		{"udp4 query", frame(t, false, false, 40000, 53, q), Message{ID: 0x1234, Name: "example.com", Type: layers.DNSTypeA}, nil},
		{"udp4 answer", frame(t, false, false, 53, 40000, r), Message{ID: 0x1234, Response: true, Name: "example.com", Type: layers.DNSTypeA, Answers: 2}, nil},
		{"udp6 nxdomain", frame(t, true, false, 53, 40000, nx), Message{ID: 7, Response: true, Name: "nope.example", Type: layers.DNSTypeAAAA, RCode: layers.DNSResponseCodeNXDomain}, nil},
		{"tcp4 query", frame(t, false, true, 40000, 53, tcpDNS(q)), Message{ID: 0x1234, Name: "example.com", Type: layers.DNSTypeA, TCP: true}, nil},
		{"tcp6 answer", frame(t, true, true, 53, 40000, tcpDNS(r)), Message{ID: 0x1234, Response: true, Name: "example.com", Type: layers.DNSTypeA, Answers: 2, TCP: true}, nil},
		{"tcp bare ack", frame(t, false, true, 40000, 53, nil), Message{}, ErrNoDNS},
		{"arp", arp, Message{}, ErrNoDNS},
		{"udp garbage", frame(t, false, false, 40000, 53, []byte{1, 2, 3}), Message{}, errAny},
		{"truncated answer", frame(t, false, false, 53, 40000, r[:len(r)-5]), Message{}, errAny},
		{"runt", []byte{1, 2, 3}, Message{}, errAny},
	}
}

func TestParse(t *testing.T) {
	p := NewParser()
	for _, c := range parseCases(t) {
		t.Run(c.name, func(t *testing.T) {
			m, err := p.Parse(c.frame)
			switch {
			case c.err == errAny:
				if err == nil || errors.Is(err, ErrNoDNS) {
					t.Fatalf("got %+v, %v; want a parse error", m, err)
				}
			case c.err != nil:
				if !errors.Is(err, c.err) {
					t.Fatalf("got %+v, %v; want %v", m, err, c.err)
				}
			case err != nil:
				t.Fatal(err)
			case m != c.want:
				t.Fatalf("got %+v, want %+v", m, c.want)
			}
		})
	}
}

func newTestSlowPath(t *testing.T, raw map[string]string, out *bytes.Buffer) *slowPath {
	t.Helper()
	params, err := sdk.ValidateParams(Descriptor.Params, raw)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := Descriptor.SlowPath(&sdk.SlowPathContext{
		Instance: sdk.Instance{VNIC: sdk.VNIC{Name: "vnet3", Ifindex: 3}, Params: params},
		Logger:   slog.New(slog.NewTextHandler(out, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	return sp.(*slowPath)
}

func counters(s *slowPath) map[string]float64 {
	out := map[string]float64{}
	for _, c := range s.Counters() {
		k := c.Name
		if d := c.Labels["direction"]; d != "" {
			k += "/" + d
		}
		out[k] = c.Value
	}
	return out
}

func TestSlowPathLogsAndRateLimits(t *testing.T) {
	var out bytes.Buffer
	s := newTestSlowPath(t, map[string]string{"rate": "2"}, &out)
	q := frame(t, false, false, 40000, 53, dnsMsg(t, 42, "a.example", layers.DNSTypeMX, false, 0, 0))
	for i := 0; i < 5; i++ {
		if v := s.Process(&sdk.Frame{Direction: sdk.FromVM, Data: q}); v != sdk.Pass {
			t.Fatalf("verdict %v", v)
		}
	}
	bad := frame(t, false, false, 53, 40000, []byte{0xff})
	if v := s.Process(&sdk.Frame{Direction: sdk.ToVM, Data: bad}); v != sdk.Pass {
		t.Fatalf("verdict %v for a malformed frame", v)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	c := counters(s)
	// Five queries within (most likely) one second: 2 logged, 3 suppressed;
	// a second boundary in between lets at most 2 more through.
	if len(lines) < 2 || len(lines) > 4 || c["log_suppressed_total"] != float64(5-len(lines)) {
		t.Errorf("%d lines, %v suppressed:\n%s", len(lines), c["log_suppressed_total"], out.String())
	}
	want := `msg="dns query" vnic=vnet3 dir=from-vm id=42 name=a.example type=MX`
	if !strings.Contains(lines[0], want) {
		t.Errorf("log line %q lacks %q", lines[0], want)
	}
	if c["queries_total/from-vm"] != 5 || c["parse_errors_total"] != 1 {
		t.Errorf("counters %v", c)
	}
}

func TestSlowPathLogOff(t *testing.T) {
	var out bytes.Buffer
	s := newTestSlowPath(t, map[string]string{"log": "false"}, &out)
	r := frame(t, true, false, 53, 40000, dnsMsg(t, 1, "b.example", layers.DNSTypeA, true, 0, 1))
	s.Process(&sdk.Frame{Direction: sdk.ToVM, Data: r})
	if out.Len() != 0 || counters(s)["responses_total/to-vm"] != 1 {
		t.Errorf("log=false: output %q, counters %v", out.String(), counters(s))
	}
}

func TestParams(t *testing.T) {
	if _, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"rate": "0"}); !errors.Is(err, sdk.ErrInvalidParam) {
		t.Errorf("rate=0: %v", err)
	}
	d, err := sdk.Lookup(Name)
	if err != nil || d.FailMode != sdk.FailOpen {
		t.Errorf("registered %+v, %v: want fail-open", d, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte{})
	p := NewParser()
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := p.Parse(b)
		if err != nil && m != (Message{}) {
			t.Fatalf("error %v with message %+v", err, m)
		}
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzParse from the parse
// cases: VF_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("VF_WRITE_CORPUS") == "" {
		t.Skip("set VF_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range parseCases(t) {
		name := strings.ReplaceAll(c.name, " ", "_")
		data := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(c.frame)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
