package firewall

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// IPFIX export of flow-log events (RFC 7011) over UDP: flow_log=ipfix://HOST:PORT.
//
// Two templates, IPv4 (256) and IPv6 (257), with the same information
// elements: flowStartMilliseconds (152), flowEndMilliseconds (153), source
// and destination address (8/12 or 27/28), ports (7, 11; 0 for ICMP),
// protocolIdentifier (4), packetDeltaCount (2), octetDeltaCount (1),
// firewallEvent (233: 1 flow created = allow, 2 flow deleted = end,
// 3 flow denied = deny, reject, cut), flowDirection (61: 0 ingress =
// from-vm, into the vNIC's chain; 1 egress = to-vm), interfaceName (82,
// the vNIC), then the rule and the VM:
//
//   - selectorId (302) = the deciding rule's index + 1, 0 when a
//     direction's default decided, and selectorName (335) = the rule's
//     name ("" for a default). IANA has no element for a firewall or ACL
//     rule (Cisco's ACL ids, 33000/33001, are NetFlow v9 vendor fields, not
//     IPFIX elements); a PSAMP Selector (RFC 5476/5477) is the function
//     that selected the packet for export — here the rule that decided it,
//     which is also why a flow is logged at all ("log": true).
//   - virtualStationName (350), "the name of a virtual station ... a
//     virtual machine" (IANA): the VM behind the vNIC as filterd knows it
//     (the libvirt domain), "" when unknown. filterd does not know the
//     VM's UUID, so virtualStationUUID (349) is not sent.
//
// Templates go with the first message and again every ipfixTemplateEvery,
// as UDP transport requires; records are batched into messages of at most
// ipfixMaxMessage bytes and sent at each flush.
const (
	ipfixVersion       = 10
	ipfixTemplateV4    = 256
	ipfixTemplateV6    = 257
	ipfixMaxMessage    = 1400
	ipfixTemplateEvery = 30 * time.Second
)

type ipfixField struct{ id, length uint16 }

func ipfixFields(v6 bool) []ipfixField {
	src, dst, alen := uint16(8), uint16(12), uint16(4)
	if v6 {
		src, dst, alen = 27, 28, 16
	}
	return []ipfixField{
		{152, 8}, {153, 8}, {src, alen}, {dst, alen}, {7, 2}, {11, 2}, {4, 1},
		{2, 8}, {1, 8}, {233, 1}, {61, 1}, {82, 0xffff},
		{ieSelectorID, 8}, {ieSelectorName, 0xffff}, {ieVirtualStationName, 0xffff},
	}
}

// Information elements for the rule and the VM (see above).
const (
	ieSelectorID         = 302
	ieSelectorName       = 335
	ieVirtualStationName = 350
)

// appendVarString appends s as a variable-length IPFIX string of at most
// 254 bytes (one length byte), cut at a UTF-8 rune boundary.
func appendVarString(b []byte, s string) []byte {
	if len(s) > 254 {
		cut := 254
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut]
	}
	b = append(b, byte(len(s)))
	return append(b, s...)
}

// ipfixExporter sends IPFIX messages to one collector.
type ipfixExporter struct {
	mu           sync.Mutex
	conn         *net.UDPConn
	domain       uint32
	sent         uint32 // data records in the messages sent so far (the header's sequence number)
	lastTemplate time.Time
	sets         map[uint16][]byte // template id -> pending records
	pending      int               // bytes of pending records
	pendingCount uint32            // pending records
	now          func() time.Time
}

func newIPFIXExporter(target string, domain uint32) (*ipfixExporter, error) {
	addr, err := net.ResolveUDPAddr("udp", target)
	if err != nil || addr.Port == 0 {
		return nil, fmt.Errorf("ipfix collector %q: want HOST:PORT (e.g. ipfix://192.0.2.9:4739)", target)
	}
	conn, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		return nil, fmt.Errorf("ipfix collector %s: %w", target, err)
	}
	return &ipfixExporter{conn: conn, domain: domain, sets: map[uint16][]byte{}, now: time.Now}, nil
}

// record appends one event as a data record; it sends first if the
// message would grow too large.
func (x *ipfixExporter) record(e *FlowEvent) error {
	src, err1 := netip.ParseAddr(e.Src)
	dst, err2 := netip.ParseAddr(e.Dst)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("ipfix: event without addresses: %q %q", e.Src, e.Dst)
	}
	v6 := src.Is6() && !src.Is4In6()
	tid := uint16(ipfixTemplateV4)
	if v6 {
		tid = ipfixTemplateV6
	}
	var b []byte
	start, end := e.Time, e.Time
	packets, octets := uint64(1), uint64(e.Len)
	if e.Event == "end" {
		start = e.Time.Add(-time.Duration(e.Seconds * float64(time.Second)))
		packets, octets = e.Packets, e.Bytes
	}
	b = binary.BigEndian.AppendUint64(b, uint64(start.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(end.UnixMilli()))
	if v6 {
		s, d := src.As16(), dst.As16()
		b = append(append(b, s[:]...), d[:]...)
	} else {
		s, d := src.Unmap().As4(), dst.Unmap().As4()
		b = append(append(b, s[:]...), d[:]...)
	}
	var sp, dp uint16
	if e.SrcPort != nil {
		sp = *e.SrcPort
	}
	if e.DstPort != nil {
		dp = *e.DstPort
	}
	b = binary.BigEndian.AppendUint16(b, sp)
	b = binary.BigEndian.AppendUint16(b, dp)
	b = append(b, protoNumber(e.Proto))
	b = binary.BigEndian.AppendUint64(b, packets)
	b = binary.BigEndian.AppendUint64(b, octets)
	ev := byte(3)
	switch e.Event {
	case "allow":
		ev = 1
	case "end":
		ev = 2
	}
	dir := byte(0)
	if e.Dir == "to-vm" {
		dir = 1
	}
	b = append(b, ev, dir)
	b = appendVarString(b, e.VNIC)
	var selector uint64 // 0: a direction's default
	if e.RuleIndex != nil {
		selector = uint64(*e.RuleIndex) + 1
	}
	b = binary.BigEndian.AppendUint64(b, selector)
	b = appendVarString(b, e.Rule)
	b = appendVarString(b, e.VM)

	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pending+len(b)+64 > ipfixMaxMessage {
		if err := x.sendLocked(); err != nil {
			return err
		}
	}
	x.sets[tid] = append(x.sets[tid], b...)
	x.pending += len(b)
	x.pendingCount++
	return nil
}

func protoNumber(p string) byte {
	switch strings.ToLower(p) {
	case "tcp":
		return 6
	case "udp":
		return 17
	case "icmp":
		return 1
	case "icmpv6":
		return 58
	}
	var n int
	if _, err := fmt.Sscan(p, &n); err == nil && n >= 0 && n < 256 {
		return byte(n)
	}
	return 0
}

// flush sends what is pending (and the templates when due).
func (x *ipfixExporter) flush() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.pending == 0 && !x.templatesDue() {
		return nil
	}
	return x.sendLocked()
}

func (x *ipfixExporter) templatesDue() bool {
	return x.lastTemplate.IsZero() || x.now().Sub(x.lastTemplate) >= ipfixTemplateEvery
}

func (x *ipfixExporter) sendLocked() error {
	var body []byte
	if x.templatesDue() {
		var set []byte
		for _, tid := range []uint16{ipfixTemplateV4, ipfixTemplateV6} {
			fs := ipfixFields(tid == ipfixTemplateV6)
			set = binary.BigEndian.AppendUint16(set, tid)
			set = binary.BigEndian.AppendUint16(set, uint16(len(fs)))
			for _, f := range fs {
				set = binary.BigEndian.AppendUint16(set, f.id)
				set = binary.BigEndian.AppendUint16(set, f.length)
			}
		}
		body = binary.BigEndian.AppendUint16(body, 2) // template set
		body = binary.BigEndian.AppendUint16(body, uint16(4+len(set)))
		body = append(body, set...)
		x.lastTemplate = x.now()
	}
	for _, tid := range []uint16{ipfixTemplateV4, ipfixTemplateV6} {
		recs := x.sets[tid]
		if len(recs) == 0 {
			continue
		}
		body = binary.BigEndian.AppendUint16(body, tid)
		body = binary.BigEndian.AppendUint16(body, uint16(4+len(recs)))
		body = append(body, recs...)
		x.sets[tid] = recs[:0]
	}
	seq := x.sent // RFC 7011: data records sent before this message
	x.sent += x.pendingCount
	x.pending, x.pendingCount = 0, 0
	msg := make([]byte, 16, 16+len(body))
	binary.BigEndian.PutUint16(msg[0:], ipfixVersion)
	binary.BigEndian.PutUint16(msg[2:], uint16(16+len(body)))
	binary.BigEndian.PutUint32(msg[4:], uint32(x.now().Unix()))
	binary.BigEndian.PutUint32(msg[8:], seq)
	binary.BigEndian.PutUint32(msg[12:], x.domain)
	msg = append(msg, body...)
	_, err := x.conn.Write(msg)
	return err
}

func (x *ipfixExporter) close() error {
	err := x.flush()
	if cerr := x.conn.Close(); err == nil {
		err = cerr
	}
	return err
}
