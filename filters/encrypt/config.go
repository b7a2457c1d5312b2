package encrypt

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/crypto/curve25519"
)

// Key is a WireGuard (Curve25519) key, public or private.
type Key [32]byte

// ParseKey parses a key in WireGuard's text form: 32 bytes, standard base64
// (what `wg genkey`/`wg pubkey` print).
func ParseKey(s string) (Key, error) {
	var k Key
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return k, fmt.Errorf("key %q is not base64", s)
	}
	if len(b) != len(k) {
		return k, fmt.Errorf("key %q is %d bytes, want %d", s, len(b), len(k))
	}
	copy(k[:], b)
	return k, nil
}

// String is the base64 form.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

func (k Key) hex() string { return hex.EncodeToString(k[:]) }

// IsZero reports the all-zero key (unset).
func (k Key) IsZero() bool { return k == Key{} }

// NewPrivateKey returns a fresh private key: 32 random bytes, clamped as
// Curve25519 requires (what `wg genkey` does).
func NewPrivateKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate private key: %w", err)
	}
	k[0] &= 248
	k[31] = (k[31] & 127) | 64
	return k, nil
}

// Public returns the public key of a private key.
func (k Key) Public() Key {
	var p Key
	out, err := curve25519.X25519(k[:], curve25519.Basepoint)
	if err == nil {
		copy(p[:], out)
	}
	return p
}

// DefaultListenPort is WireGuard's customary port.
const DefaultListenPort = 51820

// Peers is a parsed peers file: this host's side of the mesh and the other
// hosts. The control plane writes it (docs/encrypt.md); a reload swaps it.
type Peers struct {
	// ListenPort is the UDP port this host's tunnel listens on.
	ListenPort int
	// Prefixes are the VM addresses behind this host: never tunnelled.
	Prefixes []netip.Prefix
	// Peers are the other hosts.
	Peers []Peer
}

// Peer is another host of the mesh.
type Peer struct {
	// Name identifies the host in policies ("peer:<name>"), counters and
	// `vfctl crypt show`.
	Name string
	// PublicKey is the host's WireGuard public key.
	PublicKey Key
	// Endpoint is the host's underlay address and port.
	Endpoint netip.AddrPort
	// Prefixes are the VM addresses behind the host (its AllowedIPs).
	Prefixes []netip.Prefix
}

var peerNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)

// LoadPeers reads and parses the peers file at path.
func LoadPeers(path string) (*Peers, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	p, err := ParsePeers(data)
	var ce *ConfigError
	if errors.As(err, &ce) {
		ce.File = path
	}
	return p, err
}

// ParsePeers parses a peers file (docs/encrypt.md). Errors are
// *ConfigError naming line, column and field.
func ParsePeers(data []byte) (*Peers, error) {
	root, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	if err := members(root, "", "listen_port", "prefixes", "peers"); err != nil {
		return nil, err
	}
	out := &Peers{ListenPort: DefaultListenPort}
	if n := root.get("listen_port"); n != nil {
		if out.ListenPort, err = port(n, "listen_port"); err != nil {
			return nil, err
		}
	}
	if n := root.get("prefixes"); n != nil {
		if out.Prefixes, err = prefixes(n, "prefixes"); err != nil {
			return nil, err
		}
	}
	type owner struct {
		name string
		p    netip.Prefix
	}
	var owned []owner
	for _, p := range out.Prefixes {
		owned = append(owned, owner{"this host", p})
	}
	names := map[string]bool{}
	keys := map[Key]bool{}
	if pn := root.get("peers"); pn != nil {
		if err := expect(pn, "peers", '['); err != nil {
			return nil, err
		}
		for i, n := range pn.vals {
			f := fmt.Sprintf("peers[%d]", i)
			if err := members(n, f, "name", "public_key", "endpoint", "prefixes"); err != nil {
				return nil, err
			}
			var peer Peer
			for _, req := range []string{"name", "public_key", "endpoint", "prefixes"} {
				if n.get(req) == nil {
					return nil, errAt(n, join(f, req), "missing")
				}
			}
			nn := n.get("name")
			if err := expect(nn, join(f, "name"), '"'); err != nil {
				return nil, err
			}
			if !peerNameRE.MatchString(nn.str) {
				return nil, errAt(nn, join(f, "name"), "%q: want lower case letters, digits, dots and dashes, at most 63", nn.str)
			}
			if names[nn.str] {
				return nil, errAt(nn, join(f, "name"), "peer %q named twice", nn.str)
			}
			names[nn.str] = true
			peer.Name = nn.str
			kn := n.get("public_key")
			if err := expect(kn, join(f, "public_key"), '"'); err != nil {
				return nil, err
			}
			if peer.PublicKey, err = ParseKey(kn.str); err != nil {
				return nil, errAt(kn, join(f, "public_key"), "malformed: %v", err)
			}
			if peer.PublicKey.IsZero() {
				return nil, errAt(kn, join(f, "public_key"), "the all-zero key")
			}
			if keys[peer.PublicKey] {
				return nil, errAt(kn, join(f, "public_key"), "key %s given to two peers", peer.PublicKey)
			}
			keys[peer.PublicKey] = true
			en := n.get("endpoint")
			if err := expect(en, join(f, "endpoint"), '"'); err != nil {
				return nil, err
			}
			if peer.Endpoint, err = netip.ParseAddrPort(en.str); err != nil || peer.Endpoint.Port() == 0 {
				return nil, errAt(en, join(f, "endpoint"), "%q: want an IP address and a port (192.0.2.1:51820, [2001:db8::1]:51820)", en.str)
			}
			if peer.Prefixes, err = prefixes(n.get("prefixes"), join(f, "prefixes")); err != nil {
				return nil, err
			}
			for j, p := range peer.Prefixes {
				for _, o := range owned {
					if o.p.Overlaps(p) && o.name == "peer "+peer.Name {
						return nil, errAt(n.get("prefixes").vals[j], join(f, "prefixes"), "%s overlaps %s of the same peer (list each address once)", p, o.p)
					}
					if o.p.Overlaps(p) {
						return nil, errAt(n.get("prefixes").vals[j], join(f, "prefixes"), "%s overlaps %s of %s: a prefix is behind one host only", p, o.p, o.name)
					}
				}
				owned = append(owned, owner{"peer " + peer.Name, p})
			}
			out.Peers = append(out.Peers, peer)
		}
	}
	if len(out.Peers) > MaxPeers {
		return nil, errAt(root.get("peers"), "peers", "%d peers, at most %d", len(out.Peers), MaxPeers)
	}
	return out, nil
}

// Peer returns the named peer, or nil.
func (p *Peers) Peer(name string) *Peer {
	for i := range p.Peers {
		if p.Peers[i].Name == name {
			return &p.Peers[i]
		}
	}
	return nil
}

func port(n *jnode, field string) (int, error) {
	if n.kind != 'n' {
		return 0, errAt(n, field, "want a port number, got %s", kindNames[n.kind])
	}
	v, err := strconv.Atoi(n.num.String())
	if err != nil || v < 1 || v > 65535 {
		return 0, errAt(n, field, "%s is not a port (1-65535)", n.num)
	}
	return v, nil
}

func prefixes(n *jnode, field string) ([]netip.Prefix, error) {
	if err := expect(n, field, '['); err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for i, e := range n.vals {
		f := fmt.Sprintf("%s[%d]", field, i)
		if err := expect(e, f, '"'); err != nil {
			return nil, err
		}
		p, err := parsePrefix(e.str)
		if err != nil {
			return nil, errAt(e, f, "%v", err)
		}
		out = append(out, p)
	}
	return out, nil
}

// parsePrefix accepts a CIDR prefix or a single address. A prefix with
// host bits set is refused: "10.0.0.1/24" is most likely a typo.
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR prefix", s)
		}
		if p.Addr().Is4In6() {
			return netip.Prefix{}, fmt.Errorf("%q: write IPv4 prefixes as IPv4", s)
		}
		if p != p.Masked() {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" || a.Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Policy is a parsed policy file: which destinations each vNIC's traffic
// must be encrypted to.
type Policy struct {
	// Space is the protected address space: a vNIC with protect=all never
	// talks to it in clear, also where no peer carries a part of it (a
	// revoked host's VMs): that traffic is dropped.
	Space []netip.Prefix
	// VNICs maps a vNIC (host-side device name) to its protected
	// destinations.
	VNICs map[string][]Destination
	// Pairs protect traffic between two sets of addresses, host groups
	// among them (pairs.go): every vNIC of the host applies them.
	Pairs []Pair
}

// Destination is one protected destination: a prefix, or every prefix
// behind a peer host.
type Destination struct {
	Prefix netip.Prefix
	Peer   string // "peer:<name>": the peer's prefixes
	line   int
	col    int
}

func (d Destination) String() string {
	if d.Peer != "" {
		return "peer:" + d.Peer
	}
	return d.Prefix.String()
}

var vnicNameRE = regexp.MustCompile(`^[^/\s]{1,15}$`)

// LoadPolicy reads and parses the policy file at path.
func LoadPolicy(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	p, err := ParsePolicy(data)
	var ce *ConfigError
	if errors.As(err, &ce) {
		ce.File = path
	}
	return p, err
}

// ParsePolicy parses a policy file (docs/encrypt.md).
func ParsePolicy(data []byte) (*Policy, error) {
	root, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	if err := members(root, "", "space", "vnics", "pairs"); err != nil {
		return nil, err
	}
	out := &Policy{VNICs: map[string][]Destination{}}
	if n := root.get("space"); n != nil {
		if out.Space, err = prefixes(n, "space"); err != nil {
			return nil, err
		}
	}
	if vn := root.get("vnics"); vn != nil {
		if err := expect(vn, "vnics", '{'); err != nil {
			return nil, err
		}
		for i, name := range vn.keys {
			f := "vnics." + name
			if !vnicNameRE.MatchString(name) {
				return nil, errAt(vn.vals[i], f, "%q is not a device name", name)
			}
			list := vn.vals[i]
			if err := expect(list, f, '['); err != nil {
				return nil, err
			}
			var dests []Destination
			for j, e := range list.vals {
				ef := fmt.Sprintf("%s[%d]", f, j)
				if err := expect(e, ef, '"'); err != nil {
					return nil, err
				}
				d := Destination{line: e.line, col: e.col}
				if peer, ok := strings.CutPrefix(e.str, "peer:"); ok {
					if !peerNameRE.MatchString(peer) {
						return nil, errAt(e, ef, "%q is not a peer name", peer)
					}
					d.Peer = peer
				} else if d.Prefix, err = parsePrefix(e.str); err != nil {
					return nil, errAt(e, ef, "%v (or peer:<name>)", err)
				}
				dests = append(dests, d)
			}
			out.VNICs[name] = dests
		}
	}
	if pn := root.get("pairs"); pn != nil {
		if out.Pairs, err = parsePairs(pn); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Check verifies the policy against the peers it will be used with: every
// "peer:<name>" must name a known peer. file names the policy in errors.
func (p *Policy) Check(file string, peers *Peers) error {
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range p.VNICs {
			if !yield(k) {
				return
			}
		}
	})
	for _, vnic := range names {
		for j, d := range p.VNICs[vnic] {
			if d.Peer != "" && peers.Peer(d.Peer) == nil {
				known := make([]string, len(peers.Peers))
				for i, pp := range peers.Peers {
					known[i] = pp.Name
				}
				if len(known) == 0 {
					known = []string{"none"}
				}
				return &ConfigError{File: file, Line: d.line, Col: d.col, Field: fmt.Sprintf("vnics.%s[%d]", vnic, j),
					Err: fmt.Errorf("unknown peer %q (known: %s)", d.Peer, strings.Join(known, ", "))}
			}
		}
	}
	return nil
}
