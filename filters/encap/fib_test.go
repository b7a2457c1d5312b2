package encap

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const goodFIB = `{
  "segments": [
    {"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]},
    {"vni": 200, "hosts": ["192.0.2.1", "192.0.2.2"]}
  ],
  "entries": [
    {"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1", "ips": ["10.0.0.1", "fd00::1"]},
    {"vni": 100, "mac": "02:00:00:00:00:02", "host": "192.0.2.2", "ips": ["10.0.0.2"]},
    {"vni": 100, "mac": "02:00:00:00:00:03", "host": "192.0.2.3"},
    {"vni": 200, "mac": "02:00:00:00:00:01", "host": "192.0.2.2", "ips": ["10.0.0.1"]}
  ]
}`

func TestParseFIB(t *testing.T) {
	f, err := ParseFIB([]byte(goodFIB))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Segments) != 2 {
		t.Fatalf("%d segments, want 2", len(f.Segments))
	}
	red, blue := f.Segment(100), f.Segment(200)
	if red == nil || blue == nil || f.Segment(300) != nil {
		t.Fatal("Segment lookup wrong")
	}
	if len(red.Entries) != 3 || len(blue.Entries) != 1 {
		t.Errorf("entries: red %d blue %d, want 3 and 1", len(red.Entries), len(blue.Entries))
	}
	// The same MAC and IP in two segments is no conflict.
	if red.Entries[0].MAC != blue.Entries[0].MAC || red.Entries[0].IPs[0] != blue.Entries[0].IPs[0] {
		t.Error("overlapping MAC/IP across segments not kept")
	}
	if got := red.Entries[0].IPs[1]; got != netip.MustParseAddr("fd00::1") {
		t.Errorf("ip %v", got)
	}
}

func TestParseFIBErrors(t *testing.T) {
	seg := `{"segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]}],` + "\n"
	cases := []struct {
		name, in, want string
	}{
		{"syntax", `{"segments": [}`, "1:15: invalid character '}'"},
		{"truncated", `{"segments": [`, "1:15: unexpected end of file"},
		{"trailing", `{"segments": []} x`, "1:18: trailing data"},
		{"no segments", `{}`, `1:1: no "segments" list`},
		{"unknown top field", `{"segments": [], "colour": 1}`, `1:18: colour: unknown field "colour" (known: generation, segments, entries)`},
		{"unknown segment field", `{"segments": [{"vni": 1, "hosts": ["192.0.2.1"], "mtu": 9000}]}`, `1:50: segments[0].mtu: unknown field "mtu"`},
		{"duplicate field", `{"segments": [{"vni": 1, "vni": 2}]}`, `1:26: segments[0].vni: duplicate field`},
		{"type", `{"segments": [{"vni": "one"}]}`, `1:23: segments[0].vni: want int64, got string`},
		{"vni zero", `{"segments": [{"vni": 0, "hosts": ["192.0.2.1"]}]}`, `1:23: segments[0].vni: VNI 0 out of range 1-16777215`},
		{"vni too large", `{"segments": [{"vni": 16777216, "hosts": ["192.0.2.1"]}]}`, `1:23: segments[0].vni: VNI 16777216 out of range 1-16777215`},
		{"vni missing", `{"segments": [{"hosts": ["192.0.2.1"]}]}`, `1:15: segments[0]: missing "vni"`},
		{"segment twice", `{"segments": [{"vni": 5, "hosts": ["192.0.2.1"]},` + "\n" + `{"vni": 5, "hosts": ["192.0.2.1"]}]}`, `2:9: segments[1].vni: segment 5 declared twice (also segments[0] (line 1:15))`},
		{"no hosts", `{"segments": [{"vni": 5}]}`, `1:15: segments[0].hosts: segment 5 has no hosts`},
		{"bad host", `{"segments": [{"vni": 5, "hosts": ["192.0.2.300"]}]}`, `1:36: segments[0].hosts[0]: invalid underlay address "192.0.2.300"`},
		{"multicast host", `{"segments": [{"vni": 5, "hosts": ["239.1.1.1"]}]}`, `1:36: segments[0].hosts[0]: 239.1.1.1 cannot be a host's underlay address`},
		{"host twice", `{"segments": [{"vni": 5, "hosts": ["192.0.2.1", "192.0.2.1"]}]}`, `1:49: segments[0].hosts[1]: host 192.0.2.1 listed twice`},
		{"entry vni out of range", seg + `"entries": [{"vni": 99999999, "mac": "02:00:00:00:00:01", "host": "192.0.2.1"}]}`, `2:21: entries[0].vni: VNI 99999999 out of range`},
		{"entry segment undeclared", seg + `"entries": [{"vni": 7, "mac": "02:00:00:00:00:01", "host": "192.0.2.1"}]}`, `2:21: entries[0].vni: segment 7 is not declared in "segments"`},
		{"bad mac", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:01", "host": "192.0.2.1"}]}`, `2:33: entries[0].mac: invalid Ethernet address "02:00:00:00:01"`},
		{"group mac", seg + `"entries": [{"vni": 100, "mac": "03:00:00:00:00:01", "host": "192.0.2.1"}]}`, `entries[0].mac: 03:00:00:00:00:01 is a group address`},
		{"missing host", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:00:01"}]}`, `2:13: entries[0].host: missing`},
		{"unknown host", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.9"}]}`, `2:62: entries[0].host: unknown host 192.0.2.9: not a member of segment 100 (hosts: 192.0.2.1, 192.0.2.2)`},
		{"conflicting mac", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1"},` + "\n" + `{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.2"}]}`, `3:21: entries[1].mac: conflicting entries: 02:00:00:00:00:01 in segment 100 is also placed by entries[0].mac (line 2:33)`},
		{"conflicting ip", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1", "ips": ["10.0.0.1"]},` + "\n" + `{"vni": 100, "mac": "02:00:00:00:00:02", "host": "192.0.2.2", "ips": ["10.0.0.1"]}]}`, `3:71: entries[1].ips[0]: conflicting entries: 10.0.0.1 in segment 100 is also claimed by entries[0].ips[0] (line 2:83)`},
		{"bad ip", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1", "ips": ["10.0.0"]}]}`, `entries[0].ips[0]: invalid IP address "10.0.0"`},
		{"broadcast ip", seg + `"entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1", "ips": ["255.255.255.255"]}]}`, `entries[0].ips[0]: 255.255.255.255 cannot be a VM's address`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseFIB([]byte(c.in))
			if err == nil {
				t.Fatalf("accepted:\n%s", c.in)
			}
			if !errors.Is(err, ErrInvalidFIB) {
				t.Errorf("%v does not wrap ErrInvalidFIB", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error\n  %v\nwant it to contain\n  %s", err, c.want)
			}
		})
	}
}

func TestParseFIBTooManyHosts(t *testing.T) {
	var hosts []string
	for i := range MaxMembers + 1 {
		hosts = append(hosts, `"192.0.2.`+itoa(i+1)+`"`)
	}
	_, err := ParseFIB([]byte(`{"segments": [{"vni": 1, "hosts": [` + strings.Join(hosts, ",") + `]}]}`))
	if err == nil || !strings.Contains(err.Error(), "65 hosts: a segment spans at most 64") {
		t.Errorf("got %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestLoadFIBNamesTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fib.json")
	if err := os.WriteFile(path, []byte(`{"segments": [{"vni": 0}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFIB(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+":1:23: segments[0].vni: ") {
		t.Errorf("got %v, want it to start with %s:1:23:", err, path)
	}
	if _, err := LoadFIB(filepath.Join(t.TempDir(), "nosuch.json")); !errors.Is(err, ErrInvalidFIB) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestCompile(t *testing.T) {
	f, err := ParseFIB([]byte(goodFIB))
	if err != nil {
		t.Fatal(err)
	}
	h1, h2, h3 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	mac := func(b byte) [6]byte { return [6]byte{2, 0, 0, 0, 0, b} }

	tb, err := Compile(f, 100, h2, 16)
	if err != nil {
		t.Fatal(err)
	}
	// MACs on this host are not remote: local delivery goes by the
	// host's registry.
	if len(tb.Remote) != 2 || tb.Remote[mac(1)] != h1 || tb.Remote[mac(3)] != h3 {
		t.Errorf("remote %v", tb.Remote)
	}
	if !slices.Equal(tb.Members, []netip.Addr{h1, h3}) {
		t.Errorf("members %v, want the other hosts in table order", tb.Members)
	}
	if len(tb.Neigh) != 3 || tb.Neigh[netip.MustParseAddr("10.0.0.2")] != mac(2) || tb.Neigh[netip.MustParseAddr("fd00::1")] != mac(1) {
		t.Errorf("neigh %v", tb.Neigh)
	}
	// Segment 200 from h1: its only VM is remote, and 10.0.0.1 maps to
	// segment 200's MAC 01, whatever segment 100 says.
	tb, err = Compile(f, 200, h1, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.Remote) != 1 || tb.Remote[mac(1)] != h2 || !slices.Equal(tb.Members, []netip.Addr{h2}) || len(tb.Neigh) != 1 {
		t.Errorf("segment 200 from h1: %+v", tb)
	}

	for _, c := range []struct {
		name  string
		vni   uint32
		local string
		size  int
		want  string
	}{
		{"undeclared segment", 300, "192.0.2.1", 16, "segment 300 is not in the table"},
		{"not a member", 200, "192.0.2.3", 16, "this host (local_ip 192.0.2.3) is not a member of segment 200 (hosts: 192.0.2.1, 192.0.2.2)"},
		{"family", 100, "2001:db8::1", 16, "host 192.0.2.1 is not of the address family of local_ip 2001:db8::1"},
		{"too small", 100, "192.0.2.3", 1, "segment 100 has 2 remote MACs, more than fib_size 1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := Compile(f, c.vni, netip.MustParseAddr(c.local), c.size)
			if err == nil || !errors.Is(err, ErrInvalidFIB) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want %q", err, c.want)
			}
		})
	}
}

func TestReplicas(t *testing.T) {
	f, err := ParseFIB([]byte(goodFIB))
	if err != nil {
		t.Fatal(err)
	}
	tb, err := Compile(f, 100, netip.MustParseAddr("192.0.2.1"), 16)
	if err != nil {
		t.Fatal(err)
	}
	vnics, hosts := tb.Replicas(7, []int{5, 7, 9})
	if !slices.Equal(vnics, []int{5, 9}) {
		t.Errorf("local copies %v, want every other local vNIC of the segment", vnics)
	}
	if !slices.Equal(hosts, []netip.Addr{netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")}) {
		t.Errorf("host copies %v, want the members but this host", hosts)
	}
	// A lone VM of a one-host segment: no copy at all.
	f2, _ := ParseFIB([]byte(`{"segments": [{"vni": 1, "hosts": ["192.0.2.1"]}]}`))
	tb, err = Compile(f2, 1, netip.MustParseAddr("192.0.2.1"), 16)
	if err != nil {
		t.Fatal(err)
	}
	if v, h := tb.Replicas(3, []int{3}); len(v) != 0 || len(h) != 0 {
		t.Errorf("lone VM: copies to %v and %v", v, h)
	}
}

func TestFloodList(t *testing.T) {
	ports := []Port{
		{VNI: 100, Ifindex: 9}, {VNI: 200, Ifindex: 4}, {VNI: 100, Ifindex: 3},
		{VNI: 100, Ifindex: 9}, // the same vNIC twice (a chain being replaced)
	}
	if got := FloodList(ports, 100); !slices.Equal(got, []int{3, 9}) {
		t.Errorf("segment 100: %v, want [3 9]", got)
	}
	if got := FloodList(ports, 300); len(got) != 0 {
		t.Errorf("segment 300: %v", got)
	}
}

func FuzzParseFIB(f *testing.F) {
	f.Add([]byte(goodFIB))
	f.Add([]byte(`{"segments": [{"vni": 1, "hosts": ["::1"]}], "entries": [{}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		fib, err := ParseFIB(data)
		if err != nil {
			var fe *FIBError
			if !errors.As(err, &fe) {
				t.Fatalf("error %v is not a *FIBError", err)
			}
			return
		}
		for _, s := range fib.Segments {
			if s.VNI < 1 || s.VNI > MaxVNI || len(s.Hosts) == 0 || len(s.Hosts) > MaxMembers {
				t.Fatalf("accepted segment %+v", s)
			}
			for _, e := range s.Entries {
				if !slices.Contains(s.Hosts, e.Host) {
					t.Fatalf("accepted entry on unknown host %v", e.Host)
				}
			}
		}
	})
}
