// Package encrypt is the distributed network encryption filter
// (docs/encrypt.md): traffic a VM's policy protects is steered at its vNIC
// into the host's WireGuard tunnel (wireguard-go on a TUN device, one per
// host, peers = the other hosts) and never leaves in clear: when the peer's
// session is not alive it is dropped and counted. In the other direction a
// protected source must arrive through the tunnel; in clear it is dropped.
package encrypt

import "github.com/vnicfilter/vnicfilter/sdk"

// Name is the filter's registered name.
const Name = "encrypt"

// Limits and defaults.
const (
	// MaxPeers is the number of peer hosts one tunnel holds (ENC_MAX_PEERS).
	MaxPeers = 1024
	// DefaultTunnel is the name of the tunnel device.
	DefaultTunnel = "vfwg0"
	// DefaultKeyDir holds the hosts' private keys (0700; files 0600).
	DefaultKeyDir = "/var/lib/vnicfilter/encrypt"
	// DefaultMTU of the tunnel device: a VM's 1500-byte packet becomes a
	// 1560-byte UDP/IPv4 datagram (1580 over IPv6) on the underlay.
	DefaultMTU = 1500
)

// Descriptor registers the encrypt filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "0.1.0",
	Summary:    "per-VM encryption between hosts by policy: protected traffic goes through the host's WireGuard tunnel or is dropped",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailClosed,
	Params: []sdk.ParamSpec{
		{Name: "peers", Type: sdk.String, Required: true, Doc: "path of the JSON peers file: this host's listen port and prefixes, the other hosts (docs/encrypt.md); \"api\": the document filterd's API manages (PUT /v1/encrypt/peers)"},
		{Name: "policy", Type: sdk.String, Doc: "path of the JSON policy file: protected destinations per vNIC, the protected address space; \"api\": the document filterd's API manages (PUT /v1/encrypt/policy; the empty policy until the first one)"},
		{Name: "protect", Type: sdk.String, Default: "policy", Enum: []string{"all", "policy"}, Doc: "all: every destination behind a peer and in the policy's space; policy: the policy file's list for this vNIC"},
		{Name: "tunnel", Type: sdk.String, Default: DefaultTunnel, Doc: "name of the host's tunnel device (every vNIC of a host shares it)"},
		{Name: "key_dir", Type: sdk.String, Doc: "directory of the host's private key (created 0700, key file 0600); default: <filterd's state directory>/encrypt, the key GET /v1/encrypt/host publishes (" + DefaultKeyDir + " with filterd's defaults, and outside filterd)"},
		{Name: "keepalive", Type: sdk.Duration, Default: "5s", Doc: "WireGuard persistent keepalive toward every peer (whole seconds)"},
		{Name: "peer_timeout", Type: sdk.Duration, Default: "15s", Doc: "a peer silent this long is down: protected traffic to it is dropped (more than 10s: WireGuard's passive keepalive)"},
	},
	FastPath: loadFastPath,
}

func init() { sdk.Register(Descriptor) }
