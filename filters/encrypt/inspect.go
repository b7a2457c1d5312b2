package encrypt

// What Inspect and Act return, for `vfctl crypt` (any OS).

// PeerStatus is one peer as `vfctl crypt show` shows it.
type PeerStatus struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Endpoint  string   `json:"endpoint"`
	Prefixes  []string `json:"prefixes"`
	Slot      uint32   `json:"slot"`
	Up        bool     `json:"up"`
	// HandshakeAgeSeconds is the age of the last completed handshake; -1
	// before the first one.
	HandshakeAgeSeconds float64 `json:"handshake_age_seconds"`
	RxBytes             uint64  `json:"rx_bytes"`
	TxBytes             uint64  `json:"tx_bytes"`
}

// TunnelStatus is the host's tunnel as `vfctl crypt show` shows it.
type TunnelStatus struct {
	Device     string       `json:"device"`
	Ifindex    int          `json:"ifindex"`
	Running    bool         `json:"running"`
	PublicKey  string       `json:"public_key"`
	ListenPort int          `json:"listen_port"`
	Prefixes   []string     `json:"prefixes"`
	Peers      []PeerStatus `json:"peers"`
}

// RouteStatus is one entry of a vNIC's routing table.
type RouteStatus struct {
	Prefix    string `json:"prefix"`
	Peer      string `json:"peer,omitempty"`
	Protected bool   `json:"protected"`
	NoPeer    bool   `json:"no_peer,omitempty"`
}

// PeerCounters are one vNIC's counters toward one peer.
type PeerCounters struct {
	Peer            string `json:"peer"`
	SteeredPackets  uint64 `json:"steered_packets"`
	SteeredBytes    uint64 `json:"steered_bytes"`
	DownDropped     uint64 `json:"down_dropped_packets"`
	ClearDropped    uint64 `json:"clear_dropped_packets"`
	ReceivedPackets uint64 `json:"received_packets"`
}

// NoPeerCounters count protected traffic of prefixes no peer carries.
type NoPeerCounters struct {
	Dropped      uint64 `json:"dropped_packets"`
	ClearDropped uint64 `json:"clear_dropped_packets"`
	// UnsafeDropped counts frames from the VM that could not be
	// classified safely (see encrypt.c's v6_safe), dropped.
	UnsafeDropped uint64 `json:"unsafe_dropped_packets"`
}

// Inspection is what GET .../inspect returns (`vfctl crypt show`).
type Inspection struct {
	Tunnel  TunnelStatus `json:"tunnel"`
	VNIC    string       `json:"vnic"`
	Protect Mode         `json:"protect"`
	// Pairs are the policy's pairs (host-wide) and Groups the host groups
	// they resolved.
	Pairs    []string       `json:"pairs"`
	Groups   []string       `json:"groups"`
	Routes   []RouteStatus  `json:"routes"`
	Counters []PeerCounters `json:"counters"`
	NoPeer   NoPeerCounters `json:"no_peer"`
}

// Rotation is what the "rotate" action returns: the host's new public key,
// for the control plane to push into every peer's peers file.
type Rotation struct {
	Tunnel            string `json:"tunnel"`
	PublicKey         string `json:"public_key"`
	PreviousPublicKey string `json:"previous_public_key"`
}
