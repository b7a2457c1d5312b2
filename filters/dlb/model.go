package dlb

import "encoding/binary"

// Verdicts (sdk/bpf/vnicfilter.h).
const (
	VerdictContinue = 0
	VerdictDrop     = 1
	VerdictFail     = 5
)

// CtKey mirrors struct dlb_ct_key.
type CtKey struct {
	Saddr, Daddr        [4]uint32
	Sport, Dport        uint16
	Proto, Kind, Family uint8
}

// Model is the Go model of dlb.c: same tables, same verdicts, same bytes.
type Model struct {
	Gen      uint32
	Services map[SvcKey]SvcVal
	Maglev   map[uint32]uint32
	Backends map[uint32]Target
	// Capacity is dlb_ct's size (two entries per flow).
	Capacity int
	CT       map[CtKey]Target
	Stats    [5]uint64
	// BackendFlows counts new flows per backend index.
	BackendFlows map[uint32]uint64
	// SvcTraffic counts packets and bytes per service id*2+direction.
	SvcTraffic map[uint32][2]uint64
}

// NewModel returns an empty model with a connection table of capacity
// entries.
func NewModel(capacity int) *Model {
	return &Model{Services: map[SvcKey]SvcVal{}, Maglev: map[uint32]uint32{}, Backends: map[uint32]Target{}, Capacity: capacity, CT: map[CtKey]Target{}, BackendFlows: map[uint32]uint64{}, SvcTraffic: map[uint32][2]uint64{}}
}

// SetTables installs a compiled generation and makes it live (as
// fastPath.Update does).
func (m *Model) SetTables(t *Tables) {
	for k := range m.Services {
		if uint32(k.Gen) == t.Gen {
			delete(m.Services, k)
		}
	}
	for i := range uint32(len(t.Backends)) {
		delete(m.BackendFlows, t.BackendBase+i)
	}
	for i, b := range t.Backends {
		m.Backends[t.BackendBase+uint32(i)] = b
	}
	for i, v := range t.Maglev {
		m.Maglev[t.MaglevBase+uint32(i)] = v
	}
	for k, v := range t.Services {
		m.Services[k] = v
	}
	m.Gen = t.Gen
}

// Process runs one frame through the model in dir (0 from-vm, 1 to-vm);
// the frame is rewritten in place. It returns the verdict.
func (m *Model) Process(f []byte, dir int) int {
	if len(f) < 14 {
		return VerdictContinue
	}
	le := binary.LittleEndian
	var k CtKey
	var l4, saddrOff, daddrOff int
	switch binary.BigEndian.Uint16(f[12:]) {
	case 0x0800:
		if len(f) < 34 {
			return VerdictContinue
		}
		ip := f[14:]
		ihl := int(ip[0] & 0xf)
		if ip[0]>>4 != 4 || ihl < 5 || binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return VerdictContinue
		}
		k.Family, k.Proto = 4, ip[9]
		k.Saddr[0], k.Daddr[0] = le.Uint32(f[26:]), le.Uint32(f[30:])
		l4, saddrOff, daddrOff = 14+ihl*4, 26, 30
	case 0x86dd:
		if len(f) < 54 || f[14]>>4 != 6 {
			return VerdictContinue
		}
		k.Family, k.Proto = 6, f[20]
		for i := range 4 {
			k.Saddr[i] = le.Uint32(f[22+4*i:])
			k.Daddr[i] = le.Uint32(f[38+4*i:])
		}
		l4, saddrOff, daddrOff = 54, 22, 38
	default:
		return VerdictContinue
	}
	proto := k.Proto
	if proto != ProtoTCP && proto != ProtoUDP {
		return VerdictContinue
	}
	need := 8
	if proto == ProtoTCP {
		need = 20
	}
	if len(f) < l4+need {
		return VerdictContinue
	}
	k.Sport, k.Dport = le.Uint16(f[l4:]), le.Uint16(f[l4+2:])
	v6 := k.Family == 6
	if dir == 1 {
		k.Kind = 1
		t, ok := m.CT[k]
		if !ok {
			return VerdictContinue
		}
		m.touch(k, f, l4)
		t.Flags = 0
		m.Stats[2]++
		m.count(t.Svc, 1, len(f))
		rewriteModel(f, v6, l4, proto, saddrOff, l4, t)
		return VerdictContinue
	}
	if t, ok := m.CT[k]; ok && proto == ProtoTCP && t.Flags&flagClosing != 0 && f[l4+13]&0x12 == 0x02 {
		// A SYN reusing a closing flow's 5-tuple starts afresh.
		rk := CtKey{t.Addr, k.Saddr, t.Port, k.Sport, proto, 1, k.Family}
		if rv, ok := m.CT[rk]; ok && rv.Port == k.Dport && rv.Addr == k.Daddr {
			delete(m.CT, rk)
		}
		delete(m.CT, k)
	}
	if t, ok := m.CT[k]; ok {
		m.touch(k, f, l4)
		m.Stats[1]++
		m.count(t.Svc, 0, len(f))
		rewriteModel(f, v6, l4, proto, daddrOff, l4+2, t)
		return VerdictContinue
	}
	svc, ok := m.Services[SvcKey{k.Daddr, k.Dport, proto, uint8(m.Gen & 1), k.Family}]
	if !ok {
		return VerdictContinue
	}
	if svc.Size == 0 {
		m.Stats[4]++
		return VerdictFail
	}
	hs := k.Sport
	if svc.Flags&svcAffinity != 0 {
		hs = 0
	}
	var h uint32
	if v6 {
		h = FlowHash6(k.Saddr, k.Daddr, hs, k.Dport, proto)
	} else {
		h = FlowHash(k.Saddr[0], k.Daddr[0], hs, k.Dport, proto)
	}
	bi, ok := m.Maglev[svc.Base+h%svc.Size]
	b := m.Backends[bi]
	if !ok || b.Port == 0 {
		m.Stats[4]++
		return VerdictFail
	}
	if len(m.CT) >= m.Capacity {
		m.Stats[3]++
		return VerdictFail
	}
	b.Svc = svc.ID
	m.CT[k] = b
	rk := CtKey{b.Addr, k.Saddr, b.Port, k.Sport, proto, 1, k.Family}
	if _, exists := m.CT[rk]; !exists && len(m.CT) >= m.Capacity {
		delete(m.CT, k)
		m.Stats[3]++
		return VerdictFail
	}
	m.CT[rk] = Target{Addr: k.Daddr, Port: k.Dport, Svc: svc.ID}
	m.Stats[0]++
	m.count(svc.ID, 0, len(f))
	m.BackendFlows[bi]++
	rewriteModel(f, v6, l4, proto, daddrOff, l4+2, b)
	return VerdictContinue
}

func (m *Model) count(id uint16, dir, bytes int) {
	i := uint32(id)*2 + uint32(dir)
	c := m.SvcTraffic[i]
	c[0]++
	c[1] += uint64(bytes)
	m.SvcTraffic[i] = c
}

// touch mirrors dlb.c's touch(): a TCP FIN or RST marks the entry closing.
func (m *Model) touch(k CtKey, f []byte, l4 int) {
	if k.Proto == ProtoTCP && f[l4+13]&0x05 != 0 {
		v := m.CT[k]
		v.Flags |= flagClosing
		m.CT[k] = v
	}
}

// rewriteModel mirrors dlb.c's rewrite(), including the kernel's
// checksum helpers' arithmetic and order.
func rewriteModel(f []byte, v6 bool, l4 int, proto uint8, addrOff, portOff int, t Target) {
	csumOff := l4 + 6
	if proto == ProtoTCP {
		csumOff = l4 + 16
	}
	alen := 4
	if v6 {
		alen = 16
	}
	var newAddr [16]byte
	for i := range 4 {
		binary.LittleEndian.PutUint32(newAddr[4*i:], t.Addr[i])
	}
	var newPort [2]byte
	binary.LittleEndian.PutUint16(newPort[:], t.Port)
	mangled0 := proto == ProtoUDP
	l4Replace := func(old, new []byte) {
		cs := binary.BigEndian.Uint16(f[csumOff:])
		if mangled0 && cs == 0 {
			return
		}
		cs = csumReplace(cs, old, new)
		if mangled0 && cs == 0 {
			cs = 0xffff
		}
		binary.BigEndian.PutUint16(f[csumOff:], cs)
	}
	oldAddr := append([]byte(nil), f[addrOff:addrOff+alen]...)
	oldPort := append([]byte(nil), f[portOff:portOff+2]...)
	for i := 0; i < alen; i += 4 {
		l4Replace(oldAddr[i:i+4], newAddr[i:i+4])
	}
	l4Replace(oldPort, newPort[:])
	if !v6 {
		ipcs := binary.BigEndian.Uint16(f[24:])
		binary.BigEndian.PutUint16(f[24:], csumReplace(ipcs, oldAddr, newAddr[:4]))
	}
	copy(f[addrOff:], newAddr[:alen])
	copy(f[portOff:], newPort[:])
	if t.Flags&flagHasMAC != 0 {
		copy(f[0:6], t.MAC[:])
	}
}

// csumReplace is the kernel's csum_replace4/2 (and inet_proto_csum_replace
// on a CHECKSUM_NONE skb): ~fold(~unfold(sum) - old + new) where ~unfold
// of a 16-bit sum carries 0xffff in the high half, so the folded sum is
// never +0.
func csumReplace(cs uint16, old, new []byte) uint16 {
	s := uint64(0xffff) + uint64(^cs)
	for i := 0; i < len(old); i += 2 {
		s += uint64(^binary.BigEndian.Uint16(old[i:]))
		s += uint64(binary.BigEndian.Uint16(new[i:]))
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
