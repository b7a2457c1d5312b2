package encrypt

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	keyB = "h65C7n2fG4yCVm340tnM6FeM3Gfeeo+SHZ0yI0eFShw="
	keyC = "PvHLb/Xrqpzv2EL2wNDGDxehDJCkpzPgsCqKKg08r2Y="
)

func TestParsePeersErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"syntax", `{"peers": [}`, "1:12: JSON syntax"},
		{"unknown member", `{"listen_port": 1, "peer": []}`, `1:28: peer: unknown member`},
		{"bad port", `{"listen_port": 70000}`, "1:17: listen_port: 70000 is not a port"},
		{"malformed key", "{\"peers\": [\n {\"name\": \"b\", \"public_key\": \"abc\", \"endpoint\": \"192.0.2.2:51820\", \"prefixes\": []}]}", `2:30: peers[0].public_key: malformed`},
		{"short key", `{"peers": [{"name": "b", "public_key": "AAAA", "endpoint": "192.0.2.2:51820", "prefixes": []}]}`, "is 3 bytes, want 32"},
		{"missing endpoint", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "prefixes": []}]}`, "peers[0].endpoint: missing"},
		{"endpoint without port", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2", "prefixes": []}]}`, "peers[0].endpoint"},
		{"hostname endpoint", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "b.example:51820", "prefixes": []}]}`, "want an IP address and a port"},
		{"bad name", `{"peers": [{"name": "B!", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": []}]}`, "peers[0].name"},
		{"host bits", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.0.0.1/24"]}]}`, "did you mean 10.0.0.0/24"},
		{"same key twice", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": []},{"name": "c", "public_key": "` + keyB + `", "endpoint": "192.0.2.3:1", "prefixes": []}]}`, "given to two peers"},
		{"same name twice", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": []},{"name": "b", "public_key": "` + keyC + `", "endpoint": "192.0.2.3:1", "prefixes": []}]}`, "named twice"},
		{"overlap with self", `{"prefixes": ["10.1.0.0/16"], "peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.1.2.0/24"]}]}`, "overlaps 10.1.0.0/16 of this host"},
		{"overlap between peers", `{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.2.0.0/16"]},{"name": "c", "public_key": "` + keyC + `", "endpoint": "192.0.2.3:1", "prefixes": ["10.2.3.4"]}]}`, "of peer b"},
		{"trailing", `{} {}`, "trailing data"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParsePeers([]byte(tc.in))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
		})
	}
}

func TestLoadPeersNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "peers.json")
	if err := os.WriteFile(p, []byte("{\n  \"listen_port\": \"x\"\n}"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadPeers(p)
	if err == nil || !strings.HasPrefix(err.Error(), p+":2:18: listen_port: ") {
		t.Fatalf("got %v", err)
	}
}

func TestPolicyCheckUnknownPeer(t *testing.T) {
	peers, err := ParsePeers([]byte(`{"peers": [{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.2.0.0/24"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte("{\"vnics\": {\n \"vnet1\": [\"peer:b\", \"peer:zz\"]}}"))
	if err != nil {
		t.Fatal(err)
	}
	err = pol.Check("policy.json", peers)
	if err == nil || err.Error() != `policy.json:2:22: vnics.vnet1[1]: unknown peer "zz" (known: b)` {
		t.Fatalf("got %v", err)
	}
	for _, bad := range []string{`{"vnics": {"vnet1": ["10.0.0.1/8"]}}`, `{"vnics": {"vnet1": "10.0.0.0/8"}}`, `{"space": ["x"]}`, `{"vnics": {"vnet1": ["peer:"]}}`} {
		if _, err := ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

func TestRoutes(t *testing.T) {
	peers, err := ParsePeers([]byte(`{"prefixes": ["10.99.1.0/24"], "peers": [
		{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.99.2.0/24"]},
		{"name": "c", "public_key": "` + keyC + `", "endpoint": "192.0.2.3:1", "prefixes": ["10.99.3.0/24", "fd00:3::/64"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(`{"space": ["10.99.0.0/16"], "vnics": {"vnet1": ["10.99.2.7", "peer:c", "10.99.1.5", "10.50.0.0/16"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	slots := map[string]uint32{"b": 0, "c": 1}
	pp := netip.MustParsePrefix
	for _, tc := range []struct {
		name   string
		mode   Mode
		vnic   string
		check  map[netip.Prefix]Route
		absent []netip.Prefix
	}{
		{"policy vnet1", ProtectPolicy, "vnet1", map[netip.Prefix]Route{
			pp("10.99.2.0/24"): {Peer: 0},                                         // carried, not protected
			pp("10.99.2.7/32"): {Peer: 0, Flags: flagProtect},                     // inside b
			pp("10.99.3.0/24"): {Peer: 1, Flags: flagProtect},                     // peer:c
			pp("fd00:3::/64"):  {Peer: 1, Flags: flagProtect},                     // peer:c
			pp("10.50.0.0/16"): {Peer: peerNone, Flags: flagProtect | flagNoPeer}, // nobody carries it
			pp("10.99.1.0/24"): {Peer: peerNone},                                  // local
		}, []netip.Prefix{pp("10.99.1.5/32"), pp("10.99.0.0/16")}},
		{"policy other vnic", ProtectPolicy, "vnet2", map[netip.Prefix]Route{
			pp("10.99.2.0/24"): {Peer: 0},
			pp("10.99.3.0/24"): {Peer: 1},
		}, []netip.Prefix{pp("10.99.2.7/32"), pp("10.50.0.0/16")}},
		{"all", ProtectAll, "vnet2", map[netip.Prefix]Route{
			pp("10.99.2.0/24"): {Peer: 0, Flags: flagProtect},
			pp("10.99.3.0/24"): {Peer: 1, Flags: flagProtect},
			pp("10.99.0.0/16"): {Peer: peerNone, Flags: flagProtect | flagNoPeer},
			pp("10.99.1.0/24"): {Peer: peerNone},
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Routes(peers, pol, tc.mode, tc.vnic, slots)
			for p, want := range tc.check {
				if got[p] != want {
					t.Errorf("%s: got %+v, want %+v", p, got[p], want)
				}
			}
			for _, p := range tc.absent {
				if r, ok := got[p]; ok {
					t.Errorf("%s: unexpected route %+v", p, r)
				}
			}
		})
	}
}

func TestKeyStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "keys")
	s := KeyStore{Dir: dir, Name: "vfwg0"}
	k, err := s.LoadOrCreate()
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, s.Path(): 0o600} {
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %04o (%v)", path, st.Mode().Perm(), want, err)
		}
	}
	k2, err := s.LoadOrCreate()
	if err != nil || k2 != k {
		t.Fatalf("second load: %v, same key %v", err, k2 == k)
	}
	if k.Public() == (Key{}) || k.Public() == k {
		t.Fatal("no public key")
	}
	if err := os.Chmod(s.Path(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadOrCreate(); err == nil || !strings.Contains(err.Error(), "chmod 0600") {
		t.Errorf("readable key file accepted: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadOrCreate(); err == nil || !strings.Contains(err.Error(), "chmod 0700") {
		t.Errorf("open key directory accepted: %v", err)
	}
	_ = os.Chmod(dir, 0o700)
	_ = os.Chmod(s.Path(), 0o600)
	if err := os.WriteFile(s.Path(), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadOrCreate(); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("garbage key accepted: %v", err)
	}
}

func TestParseIpcGet(t *testing.T) {
	k, _ := ParseKey(keyB)
	got := parseIpcGet("private_key=00\nlisten_port=1\npublic_key=" + k.hex() + "\nendpoint=1.2.3.4:5\nlast_handshake_time_sec=100\nlast_handshake_time_nsec=5\ntx_bytes=7\nrx_bytes=9\n")
	p, ok := got[k]
	if !ok || p.rx != 9 || p.tx != 7 || p.handshake.Unix() != 100 {
		t.Fatalf("got %+v", got)
	}
}
