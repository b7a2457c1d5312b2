package dlb

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Tables is one generation of the fast path's lookup state, compiled from
// a Config.
type Tables struct {
	Gen uint32
	// Services: key -> {base, size} (keys in the program's byte order).
	Services map[SvcKey]SvcVal
	// Maglev holds backend indexes (absolute in the backends array) from
	// slot MaglevBase on.
	MaglevBase uint32
	Maglev     []uint32
	// Backends from index BackendBase on.
	BackendBase uint32
	Backends    []Target
}

// SvcKey mirrors struct dlb_svc_key (addresses and ports as the program
// loads them: network-order bytes in a little-endian word).
type SvcKey struct {
	VIP    [4]uint32
	Port   uint16
	Proto  uint8
	Gen    uint8
	Family uint8
}

// SvcVal mirrors struct dlb_svc.
type SvcVal struct {
	Base, Size uint32
	ID         uint16
	Flags      uint8
}

// dlb_svc flags (dlb.c DLB_SVC_AFFINITY).
const svcAffinity = 1

// Target mirrors struct dlb_target.
type Target struct {
	Addr  [4]uint32
	Port  uint16
	MAC   [6]byte
	Flags uint8
	// Svc is the service id of a connection-table entry.
	Svc uint16
}

// Target flags (dlb.c DLB_HAS_MAC, DLB_CLOSING).
const (
	flagHasMAC  = 1
	flagClosing = 2
)

// ErrTooLarge is returned when a configuration does not fit the maps.
var ErrTooLarge = fmt.Errorf("%w: services do not fit the fast path's tables", ErrInvalidConfig)

// Compile builds generation gen (0 or 1) of the tables; tableEntries is
// the dlb_maglev size (both generations).
func Compile(cfg *Config, gen uint32, tableEntries int) (*Tables, error) {
	half := uint32(tableEntries / 2)
	t := &Tables{Gen: gen, Services: map[SvcKey]SvcVal{}, MaglevBase: gen * half, BackendBase: gen * MaxBackends}
	for _, s := range cfg.Services {
		if uint32(len(t.Maglev)+s.TableSize) > half {
			return nil, fmt.Errorf("%w: Maglev tables need more than %d slots (parameter table_entries=%d holds two generations)", ErrTooLarge, half, tableEntries)
		}
		if len(t.Backends)+len(s.Backends) > MaxBackends {
			return nil, fmt.Errorf("%w: more than %d backends", ErrTooLarge, MaxBackends)
		}
		names := make([]string, len(s.Backends))
		weights := make([]uint32, len(s.Backends))
		total := uint64(0)
		for i, b := range s.Backends {
			names[i], weights[i] = b.Key(), b.Weight
			total += uint64(b.Weight)
		}
		first := t.BackendBase + uint32(len(t.Backends))
		for _, b := range s.Backends {
			t.Backends = append(t.Backends, targetOf(b))
		}
		key := SvcKey{VIP: addrWords(s.VIP), Port: portWord(s.Port), Proto: s.Proto, Gen: uint8(gen), Family: family(s.VIP)}
		if total == 0 {
			// Every backend is down (the parser refuses a pool without
			// weight): size 0 makes new flows fail closed.
			t.Services[key] = SvcVal{Base: t.MaglevBase + uint32(len(t.Maglev)), ID: s.ID, Flags: svcFlags(s)}
			continue
		}
		base := t.MaglevBase + uint32(len(t.Maglev))
		for _, bi := range Maglev(names, weights, s.TableSize) {
			t.Maglev = append(t.Maglev, first+uint32(bi))
		}
		t.Services[key] = SvcVal{Base: base, Size: uint32(s.TableSize), ID: s.ID, Flags: svcFlags(s)}
	}
	return t, nil
}

func svcFlags(s Service) uint8 {
	if s.Affinity == AffinityClient {
		return svcAffinity
	}
	return 0
}

func targetOf(b Backend) Target {
	t := Target{Addr: addrWords(b.Addr), Port: portWord(b.Port)}
	if len(b.MAC) == 6 {
		copy(t.MAC[:], b.MAC)
		t.Flags = flagHasMAC
	}
	return t
}

// addrWords is an address as the program holds it: IPv4 in the first
// word, IPv6 in all four.
func addrWords(a netip.Addr) [4]uint32 {
	var w [4]uint32
	if a.Is4() {
		w[0] = addrWord(a.As4())
		return w
	}
	b := a.As16()
	for i := range w {
		w[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return w
}

// addrFromWords undoes addrWords.
func addrFromWords(w [4]uint32, family uint8) netip.Addr {
	var b [16]byte
	for i := range w {
		binary.LittleEndian.PutUint32(b[4*i:], w[i])
	}
	if family == 4 {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(b)
}

func family(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}

// addrWord and portWord give the value the program sees when it loads
// network-order bytes into a (little-endian) word.
func addrWord(a [4]byte) uint32 { return binary.LittleEndian.Uint32(a[:]) }

// portWord converts a port to and from the program's view; the swap is
// its own inverse.
func portWord(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.LittleEndian.Uint16(b[:])
}
