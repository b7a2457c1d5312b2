package firewall

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Flow states (struct fw_ct_val.state in firewall.c).
const (
	ctSynSent     = 1
	ctSynRecv     = 2
	ctEstablished = 3
	ctFinWait     = 4 // one side sent FIN
	ctTimeWait    = 5 // both sides sent FIN
	ctClosed      = 6 // RST seen
	ctUDP         = 7
	ctOther       = 8 // ICMP echo and other protocols
)

// Timeouts per state: how long a flow lives after its last packet.
var ctTimeouts = [...]time.Duration{
	ctSynSent:     60 * time.Second,
	ctSynRecv:     60 * time.Second,
	ctEstablished: 5 * 24 * time.Hour,
	ctFinWait:     120 * time.Second,
	ctTimeWait:    120 * time.Second,
	ctClosed:      10 * time.Second,
	ctUDP:         60 * time.Second,
	ctOther:       30 * time.Second,
}

var ctStateNames = [...]string{ctSynSent: "syn_sent", ctSynRecv: "syn_recv", ctEstablished: "established",
	ctFinWait: "fin_wait", ctTimeWait: "time_wait", ctClosed: "closed", ctUDP: "udp", ctOther: "other"}

// ctStateName names a flow state as flow logs and `vfctl fw conns` do.
func ctStateName(s uint8) string {
	if int(s) < len(ctStateNames) && ctStateNames[s] != "" {
		return ctStateNames[s]
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// ctLastSeen is when a flow expiring at expires (in state) last saw a
// packet.
func ctLastSeen(expires uint64, state uint8) uint64 {
	if int(state) < len(ctTimeouts) {
		return expires - uint64(ctTimeouts[state])
	}
	return expires
}

// ctKey is a flow seen from the VM: its own address and port first, the
// remote side second, whichever direction the packet crosses. Both
// directions of a flow therefore find the same entry without comparing
// addresses. ICMP echo uses the identifier as the local port.
type ctKey struct {
	Local, Remote         [16]byte
	LocalPort, RemotePort uint16
	Proto, Family         uint8
	_                     [2]byte
}

// ctVal is a tracked flow (struct fw_ct_val).
type ctVal struct {
	Expires uint64 // monotonic ns
	Gen     uint32 // policy generation that last allowed the flow
	P1, P2  uint16 // the first packet's P1/P2 (to re-classify on a swap)
	State   uint8
	OrigDir uint8 // direction of the packet that opened the flow
	Fins    uint8 // bit 0: FIN from the originator, bit 1: from the responder
	_       [5]byte
}

func addr16(p *Packet, src bool) [16]byte {
	a := p.Dst
	if src {
		a = p.Src
	}
	if p.Family == 4 {
		var out [16]byte
		b := a.As4()
		copy(out[:], b[:])
		return out
	}
	return a.As16()
}

func flowKey(p *Packet) ctKey {
	k := ctKey{Proto: p.Proto, Family: p.Family}
	fromVM := p.Dir == sdk.FromVM
	k.Local, k.Remote = addr16(p, fromVM), addr16(p, !fromVM)
	switch {
	case p.Proto == ProtoTCP || p.Proto == ProtoUDP:
		if fromVM {
			k.LocalPort, k.RemotePort = p.P1, p.P2
		} else {
			k.LocalPort, k.RemotePort = p.P2, p.P1
		}
	case p.isEcho():
		k.LocalPort = p.EchoID
	}
	return k
}

// tracked: packets that belong to a flow the table can hold.
func (p *Packet) tracked() bool {
	if p.Fragment {
		return false
	}
	if p.Proto == ProtoICMP || p.Proto == ProtoICMPv6 {
		return p.isEcho()
	}
	return true
}

// newFlowState is the state of a flow opened by p (ok false: none).
func newFlowState(p *Packet) (uint8, bool) {
	switch p.Proto {
	case ProtoTCP:
		if p.TCPFlags&tcpRST != 0 {
			return 0, false
		}
		if p.TCPFlags&(tcpSYN|tcpACK) == tcpSYN {
			return ctSynSent, true
		}
		return ctEstablished, true // picked up mid-stream
	case ProtoUDP:
		return ctUDP, true
	}
	return ctOther, true
}

// reopens: a SYN on a flow that closed starts a new connection, which the
// policy judges afresh.
func reopens(v *ctVal, p *Packet) bool {
	return p.Proto == ProtoTCP && (v.State == ctClosed || v.State == ctTimeWait) &&
		p.TCPFlags&(tcpSYN|tcpACK) == tcpSYN
}

// advance runs the TCP state machine for a packet of an existing flow.
func advance(v *ctVal, p *Packet) {
	if p.Proto != ProtoTCP || v.State == ctClosed {
		return
	}
	orig := uint8(p.Dir) == v.OrigDir
	f := p.TCPFlags
	switch {
	case f&tcpRST != 0:
		v.State = ctClosed
	case f&tcpFIN != 0:
		if orig {
			v.Fins |= 1
		} else {
			v.Fins |= 2
		}
		v.State = ctFinWait
		if v.Fins == 3 {
			v.State = ctTimeWait
		}
	case v.State == ctSynSent && !orig && f&(tcpSYN|tcpACK) == tcpSYN|tcpACK:
		v.State = ctSynRecv
	case v.State == ctSynRecv && orig && f&(tcpSYN|tcpACK) == tcpACK:
		v.State = ctEstablished
	}
}

// origPacket rebuilds the packet that opened a flow, to classify it again
// against a new policy generation.
func origPacket(k ctKey, v *ctVal) Packet {
	p := Packet{Kind: KindIP, Dir: sdk.Direction(v.OrigDir), Family: k.Family, Proto: k.Proto, P1: v.P1, P2: v.P2}
	local, remote := ctAddr(k.Local, k.Family), ctAddr(k.Remote, k.Family)
	if p.Dir == sdk.FromVM {
		p.Src, p.Dst = local, remote
	} else {
		p.Src, p.Dst = remote, local
	}
	return p
}

func ctAddr(b [16]byte, family uint8) netip.Addr {
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}
