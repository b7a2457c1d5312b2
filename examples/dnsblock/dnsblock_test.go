package dnsblock

import (
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// query builds a DNS query message for name.
func query(name string) []byte {
	m := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, l := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		m = append(m, byte(len(l)))
		m = append(m, l...)
	}
	return append(m, 0, 0, 1, 0, 1)
}

// udp4Frame wraps payload in Ethernet/IPv4/UDP to dport.
func udp4Frame(dport uint16, payload []byte) []byte {
	f := make([]byte, 14+20+8, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:]
	ip[0], ip[9] = 0x45, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(28+len(payload)))
	binary.BigEndian.PutUint16(f[34+2:], dport)
	binary.BigEndian.PutUint16(f[34+4:], uint16(8+len(payload)))
	return append(f, payload...)
}

func TestManifestMatchesParams(t *testing.T) {
	b, err := os.ReadFile("dnsblock.json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := sdk.ParseManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !m.SlowOnly() || m.SlowPath.Command[0] != "dnsblock" {
		t.Errorf("manifest: want a slow-path-only filter started as ./dnsblock, got %+v", m.SlowPath)
	}
	if len(m.Params) != len(Params) {
		t.Fatalf("manifest has %d params, package %d", len(m.Params), len(Params))
	}
	for i := range Params {
		if m.Params[i].Name != Params[i].Name || m.Params[i].Type != Params[i].Type {
			t.Errorf("param %d: manifest %+v, package %+v", i, m.Params[i], Params[i])
		}
	}
}

func TestQueryName(t *testing.T) {
	for _, tc := range []struct {
		name  string
		frame []byte
		want  string
		ok    bool
	}{
		{"query", udp4Frame(53, query("www.Example.com")), "www.Example.com", true},
		{"root", udp4Frame(53, query(".")), ".", true},
		{"other port", udp4Frame(5353, query("example.com")), "", false},
		{"response", udp4Frame(53, func() []byte { q := query("a.b"); q[2] |= 0x80; return q }()), "", false},
		{"truncated label", udp4Frame(53, query("example.com")[:16]), "", false},
		{"short", []byte{1, 2, 3}, "", false},
		{"compressed", udp4Frame(53, append(query("x")[:12], 0xc0, 12)), "", false},
	} {
		got, ok := QueryName(tc.frame)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: QueryName = %q, %v; want %q, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzQueryName(f *testing.F) {
	f.Add(udp4Frame(53, query("www.example.com")))
	f.Add(udp4Frame(53, []byte{0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63}))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, ok := QueryName(b)
		if ok && len(name) > 254 {
			t.Fatalf("name of %d bytes", len(name))
		}
	})
}

func newBlocker(t *testing.T, names string) *Blocker {
	t.Helper()
	p, err := sdk.ValidateParams(Params, map[string]string{"names": names})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := New(&sdk.SlowPathContext{Instance: sdk.Instance{Params: p}})
	if err != nil {
		t.Fatal(err)
	}
	return sp.(*Blocker)
}

func TestBlocked(t *testing.T) {
	b := newBlocker(t, "Ads.example, tracker.net.")
	for name, want := range map[string]bool{
		"ads.example": true, "x.ads.example": true, "ADS.EXAMPLE": true, "tracker.net": true,
		"example": false, "notads.example": false, "tracker.net.evil": false,
	} {
		if got := b.Blocked(name); got != want {
			t.Errorf("Blocked(%q) = %v, want %v", name, got, want)
		}
	}
	if _, err := New(&sdk.SlowPathContext{Instance: sdk.Instance{Params: mustParams(t, "a..b")}}); err == nil {
		t.Error("a..b accepted as a domain")
	}
}

func mustParams(t *testing.T, names string) sdk.Params {
	p, err := sdk.ValidateParams(Params, map[string]string{"names": names})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
