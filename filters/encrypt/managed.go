package encrypt

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// PeersAPI is the value of the peers parameter that selects the peers
// document filterd's API manages (PUT /v1/encrypt/peers, written by the
// control plane's agent) instead of a file of the operator's choosing.
const PeersAPI = "api"

// PolicyAPI is the value of the policy parameter that selects the policy
// document filterd's API manages (PUT /v1/encrypt/policy, written by the
// control plane's agent) instead of a file of the operator's choosing.
const PolicyAPI = "api"

// ManagedDir is where filterd keeps encrypt's host-wide documents, under
// its state directory. With filterd's default state directory it is also
// encrypt's default key directory.
func ManagedDir(stateDir string) string { return filepath.Join(stateDir, "encrypt") }

// ManagedPeersFile is the peers document filterd's API manages: the file
// every instance with peers=api reads.
func ManagedPeersFile(stateDir string) string {
	return filepath.Join(ManagedDir(stateDir), "peers.json")
}

// ManagedPolicyFile is the policy document filterd's API manages: the
// file every instance with policy=api reads.
func ManagedPolicyFile(stateDir string) string {
	return filepath.Join(ManagedDir(stateDir), "policy.json")
}

// loadPeersFile reads a peers file; a managed one that does not exist yet
// (no control plane has pushed it) is the empty document: no peers, so
// nothing is sent to any host and protected destinations in the policy's
// space are dropped.
func loadPeersFile(path string, managed bool) (*Peers, error) {
	if managed {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return &Peers{ListenPort: DefaultListenPort}, nil
		}
	}
	return LoadPeers(path)
}

// LoadManagedPeers reads the peers document filterd's API manages under
// stateDir: the empty document while none was written.
func LoadManagedPeers(stateDir string) (*Peers, error) {
	return loadPeersFile(ManagedPeersFile(stateDir), true)
}

// loadPolicyFile reads a policy file; a managed one that does not exist
// yet (no control plane has pushed it) is the empty policy: no space, no
// destinations, no pairs. It protects nothing beyond what protect=all
// protects by itself (every prefix behind a peer); a protect=policy vNIC
// sends in clear until the first document arrives.
func loadPolicyFile(path string, managed bool) (*Policy, error) {
	if managed {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			return &Policy{VNICs: map[string][]Destination{}}, nil
		}
	}
	return LoadPolicy(path)
}

// CheckPolicy parses a policy document and checks it against peers and
// groups as a reload would: every peer:<name> must name one of peers,
// every host group of a pair must resolve through groups (filterd's
// table; nil: none, and any group is an error). Errors are *ConfigError
// naming line, column and field.
func CheckPolicy(data []byte, peers *Peers, groups sdk.Groups) (*Policy, error) {
	pol, err := ParsePolicy(data)
	if err != nil {
		return nil, err
	}
	if err := pol.Check("", peers); err != nil {
		return nil, err
	}
	if _, err := resolvePairs("", pol, peers, groups, assignPairBits(nil, pol)); err != nil {
		return nil, err
	}
	return pol, nil
}

// CheckPeers parses a peers document as a reload would, and refuses one
// that lists own, this host's public key (zero: not known). Errors are
// *ConfigError naming line, column and field.
func CheckPeers(data []byte, own Key) (*Peers, error) {
	p, err := ParsePeers(data)
	if err != nil {
		return nil, err
	}
	if own.IsZero() {
		return p, nil
	}
	root, err := parseJSON(data)
	if err != nil {
		return nil, err
	}
	for i, peer := range p.Peers {
		if peer.PublicKey == own {
			kn := root.get("peers").vals[i].get("public_key")
			return nil, errAt(kn, fmt.Sprintf("peers[%d].public_key", i), "peer %q has this host's own public key", peer.Name)
		}
	}
	return p, nil
}

// HostInfo is what a control plane collects from each host to build the
// other hosts' peers documents (GET /v1/encrypt/host). It never holds the
// private key.
type HostInfo struct {
	// Tunnel is the tunnel device's name.
	Tunnel string `json:"tunnel"`
	// Running: a tunnel is up on this host (some vNIC carries encrypt);
	// otherwise the key is the one a tunnel will use once started with
	// the key directory KeyDir.
	Running bool `json:"running"`
	// PublicKey is the host's WireGuard public key (base64): its
	// "public_key" in the other hosts' peers documents.
	PublicKey string `json:"public_key"`
	// KeyDir holds the private key (0700, the key file 0600).
	KeyDir string `json:"key_dir"`
	// KeyCreated is when the key pair was generated or last rotated.
	KeyCreated time.Time `json:"key_created"`
	// ListenPort is the tunnel's UDP port.
	ListenPort int `json:"listen_port"`
	// Endpoints are the host's addresses with the listen port, one per
	// global unicast address of an up interface (the tunnel's own
	// excepted): the control plane picks the underlay's as the host's
	// "endpoint".
	Endpoints []Endpoint `json:"endpoints"`
	// Prefixes are the VM addresses behind this host, as its peers
	// document says.
	Prefixes []string `json:"prefixes"`
	// PeersFile is the peers file the tunnel reads (the managed one for
	// peers=api).
	PeersFile string `json:"peers_file,omitempty"`
}

// Endpoint is one address the tunnel can be reached at.
type Endpoint struct {
	Interface string `json:"interface"`
	Endpoint  string `json:"endpoint"`
}

// PeersDocument is the peers file in its written form (docs/encrypt.md,
// "Peers file"), for control planes that build one: ParsePeers (or
// CheckPeers) is the authority on what it means.
type PeersDocument struct {
	ListenPort int         `json:"listen_port"`
	Prefixes   []string    `json:"prefixes"`
	Peers      []PeerEntry `json:"peers"`
}

// PeerEntry is one peer of a PeersDocument.
type PeerEntry struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Endpoint  string   `json:"endpoint"`
	Prefixes  []string `json:"prefixes"`
}

// PolicyDocument is the policy file's per-vNIC part in its written form
// (docs/encrypt.md, "Policy file"): each vNIC's protected destinations.
// ParsePolicy is the authority on what it means.
type PolicyDocument struct {
	Space []string            `json:"space,omitempty"`
	VNICs map[string][]string `json:"vnics"`
}
