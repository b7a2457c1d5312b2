package encap

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/internal/jsonpos"
)

// ErrInvalidFIB is wrapped by every error about a forwarding table's
// content.
var ErrInvalidFIB = errors.New("invalid encap forwarding table")

// FIB is a parsed forwarding table: the segments, the hosts each spans,
// and where each VM's MAC lives. The same file serves every host; each
// vNIC's instance compiles the part of its own segment.
type FIB struct {
	// Generation is the table's version (Table.Generation).
	Generation uint64
	// Segments in file order.
	Segments []*Segment
}

// Segment is one VNI: its member hosts and its VMs.
type Segment struct {
	VNI uint32
	// Hosts are the underlay addresses of every host with a vNIC of
	// the segment: broadcast and unknown unicast go to these only.
	Hosts []netip.Addr
	// Entries are the segment's VMs, in file order.
	Entries []Entry
}

// Entry places one VM's MAC (and the addresses it answers ARP/ND for) on
// a host.
type Entry struct {
	MAC  [6]byte
	Host netip.Addr
	IPs  []netip.Addr
}

// Segment returns the segment vni, or nil.
func (f *FIB) Segment(vni uint32) *Segment {
	for _, s := range f.Segments {
		if s.VNI == vni {
			return s
		}
	}
	return nil
}

// FIBError is an error at a place in a forwarding table file.
type FIBError struct {
	File      string
	Line, Col int
	// Field is the JSON path of the value, e.g. entries[3].host.
	Field string
	Err   error
}

func (e *FIBError) Error() string {
	return jsonpos.Format(e.File, e.Line, e.Col, e.Field, e.Err)
}

func (e *FIBError) Unwrap() []error { return []error{ErrInvalidFIB, e.Err} }

// Table is the forwarding table in the form the control plane writes it:
// the file's JSON (docs/encap.md) and the body of PUT /v1/encap/fdb. It is
// what the manager pushes to each host's filterd. VNIs are int64 so that
// an out-of-range value is reported as such rather than as a decoding
// error. ParseTable checks it.
type Table struct {
	// Generation versions the table: filterd refuses a pushed table whose
	// generation is not above the live one (0: the next one). Optional
	// and informational in a file.
	Generation uint64         `json:"generation,omitempty"`
	Segments   []TableSegment `json:"segments"`
	Entries    []TableEntry   `json:"entries"`
}

// TableSegment is a segment and its member hosts.
type TableSegment struct {
	VNI   int64    `json:"vni"`
	Hosts []string `json:"hosts"`
}

// TableEntry places a VM's MAC on a host, with the addresses answered for.
type TableEntry struct {
	VNI  int64    `json:"vni"`
	MAC  string   `json:"mac"`
	Host string   `json:"host"`
	IPs  []string `json:"ips,omitempty"`
}

type (
	rawFIB     = Table
	rawSegment = TableSegment
	rawEntry   = TableEntry
)

// ParseTable checks a table given as a Go value; errors are *FIBError
// naming the field (e.g. entries[3].host), without a position.
func ParseTable(t Table) (*FIB, error) {
	fail := func(field, format string, args ...any) error {
		return &FIBError{Field: field, Err: fmt.Errorf(format, args...)}
	}
	f, err := build(&t, func(string) bool { return true }, fail, func(field string) string { return field })
	if err != nil {
		return nil, err
	}
	f.Generation = t.Generation
	return f, nil
}

// Table returns f in its written form (ParseTable(f.Table()) is f).
func (f *FIB) Table() Table {
	t := Table{Generation: f.Generation, Segments: []TableSegment{}, Entries: []TableEntry{}}
	for _, s := range f.Segments {
		ts := TableSegment{VNI: int64(s.VNI)}
		for _, h := range s.Hosts {
			ts.Hosts = append(ts.Hosts, h.String())
		}
		t.Segments = append(t.Segments, ts)
		for _, e := range s.Entries {
			te := TableEntry{VNI: int64(s.VNI), MAC: net.HardwareAddr(e.MAC[:]).String(), Host: e.Host.String()}
			for _, ip := range e.IPs {
				te.IPs = append(te.IPs, ip.String())
			}
			t.Entries = append(t.Entries, te)
		}
	}
	return t
}

// LoadFIB reads and parses the forwarding table at path.
func LoadFIB(path string) (*FIB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidFIB, err)
	}
	f, err := ParseFIB(data)
	var fe *FIBError
	if errors.As(err, &fe) {
		fe.File = path
	}
	return f, err
}

// schema is the forwarding table's shape for walk: the fields each object
// may have, and which member or list element is which kind of object.
var schema = jsonpos.Schema{
	Fields: map[string][]string{
		"top":     {"generation", "segments", "entries"},
		"segment": {"vni", "hosts"},
		"entry":   {"vni", "mac", "host", "ips"},
	},
	Members: map[string]string{
		"top.segments": "segments",
		"top.entries":  "entries",
	},
	Elems: map[string]string{
		"segments": "segment",
		"entries":  "entry",
	},
}

// ParseFIB parses a forwarding table (docs/encap.md). Errors are
// *FIBError with line and column; nothing is half accepted.
func ParseFIB(data []byte) (*FIB, error) {
	at := map[string]int64{}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := walk(dec, data, "", "top", at); err != nil {
		return nil, err
	}
	if tok, err := dec.Token(); err != io.EOF {
		line, col := lineCol(data, dec.InputOffset())
		return nil, &FIBError{Line: line, Col: col, Err: fmt.Errorf("trailing data after the top-level object (%v)", tok)}
	}
	var raw rawFIB
	if err := json.Unmarshal(data, &raw); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field, off := te.Field, te.Offset
			if p, o, ok := valueAt(at, te.Offset); ok {
				field, off = p, o
			}
			line, col := lineCol(data, off)
			return nil, &FIBError{Line: line, Col: col, Field: field, Err: fmt.Errorf("want %s, got %s", te.Type, te.Value)}
		}
		return nil, &FIBError{Err: err}
	}
	pos := func(field string) (int, int) {
		off, ok := at[field]
		for !ok && field != "" { // fall back to the enclosing value
			i := strings.LastIndexAny(field, ".[")
			if i < 0 {
				field = ""
			} else {
				field = field[:i]
			}
			off, ok = at[field]
		}
		return lineCol(data, off)
	}
	fail := func(field, format string, args ...any) error {
		line, col := pos(field)
		return &FIBError{Line: line, Col: col, Field: field, Err: fmt.Errorf(format, args...)}
	}
	where := func(field string) string {
		line, col := pos(field)
		return fmt.Sprintf("%s (line %d:%d)", field, line, col)
	}
	if _, ok := at["segments"]; !ok {
		return nil, fail("", `no "segments" list`)
	}
	has := func(field string) bool { _, ok := at[field]; return ok }
	f, err := build(&raw, has, fail, where)
	if err != nil {
		return nil, err
	}
	f.Generation = raw.Generation
	return f, nil
}

// build checks a decoded table and returns it parsed. has reports whether
// a field was present; fail makes the error of a field (its path, e.g.
// entries[3].host); where names a field for a conflict message. ParseFIB
// places both in the file; the API names them in the request.
func build(raw *rawFIB, has func(string) bool, fail func(field, format string, args ...any) error, where func(string) string) (*FIB, error) {
	fib := &FIB{}
	segField := map[uint32]string{}
	for i, rs := range raw.Segments {
		p := fmt.Sprintf("segments[%d]", i)
		if !has(p + ".vni") {
			return nil, fail(p, `missing "vni"`)
		}
		if rs.VNI < 1 || rs.VNI > MaxVNI {
			return nil, fail(p+".vni", "VNI %d out of range 1-%d", rs.VNI, MaxVNI)
		}
		vni := uint32(rs.VNI)
		if prev, ok := segField[vni]; ok {
			return nil, fail(p+".vni", "segment %d declared twice (also %s)", vni, where(prev))
		}
		segField[vni] = p
		s := &Segment{VNI: vni}
		if len(rs.Hosts) == 0 {
			return nil, fail(p+".hosts", "segment %d has no hosts", vni)
		}
		if len(rs.Hosts) > MaxMembers {
			return nil, fail(p+".hosts", "%d hosts: a segment spans at most %d", len(rs.Hosts), MaxMembers)
		}
		for j, h := range rs.Hosts {
			hp := fmt.Sprintf("%s.hosts[%d]", p, j)
			a, err := parseHost(h)
			if err != nil {
				return nil, fail(hp, "%v", err)
			}
			if slices.Contains(s.Hosts, a) {
				return nil, fail(hp, "host %s listed twice", a)
			}
			s.Hosts = append(s.Hosts, a)
		}
		fib.Segments = append(fib.Segments, s)
	}

	type macKey struct {
		vni uint32
		mac [6]byte
	}
	type ipKey struct {
		vni uint32
		ip  netip.Addr
	}
	macs := map[macKey]string{}
	ips := map[ipKey]string{}
	for i, re := range raw.Entries {
		p := fmt.Sprintf("entries[%d]", i)
		if !has(p + ".vni") {
			return nil, fail(p, `missing "vni"`)
		}
		if re.VNI < 1 || re.VNI > MaxVNI {
			return nil, fail(p+".vni", "VNI %d out of range 1-%d", re.VNI, MaxVNI)
		}
		vni := uint32(re.VNI)
		s := fib.Segment(vni)
		if s == nil {
			return nil, fail(p+".vni", "segment %d is not declared in \"segments\"", vni)
		}
		var e Entry
		mac, err := net.ParseMAC(re.MAC)
		switch {
		case re.MAC == "":
			return nil, fail(p+".mac", "missing")
		case err != nil || len(mac) != 6:
			return nil, fail(p+".mac", "invalid Ethernet address %q", re.MAC)
		case mac[0]&1 != 0:
			return nil, fail(p+".mac", "%s is a group address, not a VM's", mac)
		case bytes.Equal(mac, make([]byte, 6)):
			return nil, fail(p+".mac", "the all-zero address is not a VM's")
		}
		copy(e.MAC[:], mac)
		if re.Host == "" {
			return nil, fail(p+".host", "missing")
		}
		e.Host, err = parseHost(re.Host)
		if err != nil {
			return nil, fail(p+".host", "%v", err)
		}
		if !slices.Contains(s.Hosts, e.Host) {
			return nil, fail(p+".host", "unknown host %s: not a member of segment %d (hosts: %s)", e.Host, vni, joinAddrs(s.Hosts))
		}
		mk := macKey{vni, e.MAC}
		if prev, ok := macs[mk]; ok {
			return nil, fail(p+".mac", "conflicting entries: %s in segment %d is also placed by %s", mac, vni, where(prev))
		}
		macs[mk] = p + ".mac"
		for j, rip := range re.IPs {
			ipp := fmt.Sprintf("%s.ips[%d]", p, j)
			a, err := netip.ParseAddr(rip)
			if err != nil || a.Zone() != "" {
				return nil, fail(ipp, "invalid IP address %q", rip)
			}
			a = a.Unmap()
			if a.IsUnspecified() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
				return nil, fail(ipp, "%s cannot be a VM's address", a)
			}
			ik := ipKey{vni, a}
			if prev, ok := ips[ik]; ok {
				return nil, fail(ipp, "conflicting entries: %s in segment %d is also claimed by %s", a, vni, where(prev))
			}
			ips[ik] = ipp
			e.IPs = append(e.IPs, a)
		}
		s.Entries = append(s.Entries, e)
	}
	return fib, nil
}

func parseHost(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("invalid underlay address %q", s)
	}
	a = a.Unmap()
	if a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("%s cannot be a host's underlay address", a)
	}
	return a, nil
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ", ")
}

// walk records the offset of every value under its path and refuses
// unknown and duplicate fields (jsonpos.Walk with the forwarding table's
// schema; errors are *FIBError).
func walk(dec *json.Decoder, data []byte, path, kind string, at map[string]int64) error {
	err := jsonpos.Walk(dec, data, &schema, path, kind, at)
	var pe *jsonpos.Error
	if errors.As(err, &pe) {
		return &FIBError{Line: pe.Line, Col: pe.Col, Field: pe.Field, Err: pe.Err}
	}
	return err
}

// valueAt returns the path of the innermost value recorded in at whose
// text ends at off (json.UnmarshalTypeError reports the offset after the
// value), so a type error names e.g. segments[1].vni, not segments.vni.
func valueAt(at map[string]int64, off int64) (string, int64, bool) {
	best, bestOff := "", int64(-1)
	for p, o := range at {
		if o < off && o > bestOff {
			best, bestOff = p, o
		}
	}
	return best, bestOff, bestOff >= 0
}

func lineCol(data []byte, off int64) (int, int) { return jsonpos.LineCol(data, off) }
