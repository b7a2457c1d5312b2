package firewall

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Flow log: firewall.c writes an event into the instance's ring buffer
// (fw_events) for every denied or rejected new packet, every new flow a
// `log: true` rule allows (every new flow with flow_log_all), and every
// logged flow a policy swap cuts; the fast path's reader turns them into
// JSON lines. The sweep adds an "end" line when a logged flow expires.
// docs/firewall.md, "Flow log", documents the format.

// Event kinds (firewall.c FW_EV_*).
const (
	evAllow  = 1
	evDeny   = 2
	evReject = 3
	evCut    = 4
)

var eventNames = [...]string{evAllow: "allow", evDeny: "deny", evReject: "reject", evCut: "cut"}

// eventSize is sizeof(struct fw_event).
const eventSize = 64

// FlowEvent is one line of the flow log.
type FlowEvent struct {
	// Time the packet was seen (or, for "end", the flow was swept).
	Time time.Time `json:"time"`
	VNIC string    `json:"vnic"`
	// VM is the VM behind the vNIC as filterd knows it (the libvirt
	// domain of libvirt-managed chains); absent when unknown.
	VM string `json:"vm,omitempty"`
	// Event is allow (a new flow entered), deny, reject (a new packet
	// dropped), cut (a tracked flow a new policy denies, at its next
	// packet), or end (a logged flow expired and was swept).
	Event string `json:"event"`
	// Dir is the packet's direction (allow, deny, reject, cut) or the
	// flow's opening direction (end).
	Dir   string `json:"dir"`
	Proto string `json:"proto"`
	Src   string `json:"src"`
	Dst   string `json:"dst"`
	// Ports of TCP and UDP; type and code of ICMP.
	SrcPort  *uint16 `json:"sport,omitempty"`
	DstPort  *uint16 `json:"dport,omitempty"`
	ICMPType *uint16 `json:"icmp_type,omitempty"`
	ICMPCode *uint16 `json:"icmp_code,omitempty"`
	TCPFlags string  `json:"tcp_flags,omitempty"`
	// Rule is the deciding rule's name and RuleIndex its position (names
	// are the live policy's: an event from before a swap names the rule
	// now at that position); both absent for a direction's default.
	Rule      string `json:"rule,omitempty"`
	RuleIndex *int   `json:"rule_index,omitempty"`
	// Answered: a reject sent its TCP RST / ICMP unreachable.
	Answered *bool `json:"answered,omitempty"`
	// Len is the frame's length (allow, deny, reject, cut).
	Len uint32 `json:"len,omitempty"`
	// Packets, Bytes, Seconds and State describe an ended flow.
	Packets uint64  `json:"packets,omitempty"`
	Bytes   uint64  `json:"bytes,omitempty"`
	Seconds float64 `json:"duration_seconds,omitempty"`
	State   string  `json:"state,omitempty"`
}

func tcpFlagString(f uint8) string {
	s := ""
	for _, x := range []struct {
		bit  uint8
		name string
	}{{tcpSYN, "S"}, {tcpACK, "A"}, {tcpFIN, "F"}, {tcpRST, "R"}, {0x08, "P"}, {0x20, "U"}} {
		if f&x.bit != 0 {
			s += x.name
		}
	}
	return s
}

func addrOf(family uint8, b []byte) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16([16]byte(b[:16]))
}

// setPorts fills the port or ICMP fields of e.
func (e *FlowEvent) setPorts(proto uint8, p1, p2 uint16) {
	switch proto {
	case ProtoTCP, ProtoUDP:
		e.SrcPort, e.DstPort = &p1, &p2
	case ProtoICMP, ProtoICMPv6:
		e.ICMPType, e.ICMPCode = &p1, &p2
	}
}

// decodeEvent parses a struct fw_event (little-endian, as the kernel
// writes it on the machines bpf2go builds for). ruleName names a rule
// index ("" if out of range).
func decodeEvent(b []byte, vnic string, monoToUnix int64, ruleName func(int) string) (FlowEvent, error) {
	if len(b) < eventSize {
		return FlowEvent{}, fmt.Errorf("flow-log event of %d bytes, want %d", len(b), eventSize)
	}
	le := binary.LittleEndian
	fam, proto, dir, kind := b[44], b[45], b[46], b[47]
	if kind == 0 || int(kind) >= len(eventNames) || (fam != 4 && fam != 6) {
		return FlowEvent{}, fmt.Errorf("flow-log event of unknown kind %d or family %d", kind, fam)
	}
	e := FlowEvent{
		Time:  time.Unix(0, int64(le.Uint64(b[0:]))+monoToUnix).UTC(),
		VNIC:  vnic,
		Event: eventNames[kind],
		Dir:   sdk.Direction(dir & 1).String(),
		Proto: protoName(int(proto)),
		Src:   addrOf(fam, b[8:24]).String(),
		Dst:   addrOf(fam, b[24:40]).String(),
		Len:   le.Uint32(b[52:]),
	}
	e.setPorts(proto, le.Uint16(b[40:]), le.Uint16(b[42:]))
	if proto == ProtoTCP {
		e.TCPFlags = tcpFlagString(b[56])
	}
	if r := int(le.Uint32(b[48:])); r > 0 {
		r--
		e.RuleIndex = &r
		e.Rule = ruleName(r)
	}
	if kind == evReject {
		answered := b[57] != 0
		e.Answered = &answered
	}
	return e, nil
}

// flowLog writes FlowEvents as JSON lines to a file opened for appending,
// or exports them as IPFIX (flow_log=ipfix://HOST:PORT, ipfix.go).
type flowLog struct {
	mu    sync.Mutex
	f     *os.File
	w     *bufio.Writer
	enc   *json.Encoder
	ipfix *ipfixExporter
}

// IPFIXPrefix selects the IPFIX exporter as the flow log's sink.
const IPFIXPrefix = "ipfix://"

func openFlowLog(path string) (*flowLog, error) {
	if target, ok := strings.CutPrefix(path, IPFIXPrefix); ok {
		x, err := newIPFIXExporter(target, uint32(os.Getpid()))
		if err != nil {
			return nil, fmt.Errorf("flow log: %w", err)
		}
		return &flowLog{ipfix: x}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("flow log: %w", err)
	}
	w := bufio.NewWriterSize(f, 64<<10)
	return &flowLog{f: f, w: w, enc: json.NewEncoder(w)}, nil
}

func (l *flowLog) write(e *FlowEvent) error {
	if l.ipfix != nil {
		return l.ipfix.record(e)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.enc.Encode(e)
}

func (l *flowLog) flush() error {
	if l.ipfix != nil {
		return l.ipfix.flush()
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

func (l *flowLog) close() error {
	if l.ipfix != nil {
		return l.ipfix.close()
	}
	return errors.Join(l.flush(), l.f.Close())
}
