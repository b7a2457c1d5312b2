package firewall

import "time"

// What the firewall's Inspect returns (sdk.Inspector; GET
// /v1/vnics/{vnic}/filters/{slot}/inspect?view=…, `vfctl fw conns`,
// `vfctl fw top`, `vfctl fw explain VNIC`). docs/firewall.md, "Inspect".

// Inspect views.
const (
	ViewConns  = "conns"
	ViewTop    = "top"
	ViewPolicy = "policy"
)

// Inspect defaults and bounds of the limit query parameter.
const (
	DefaultConnsLimit = 100
	DefaultTopLimit   = 10
	MaxInspectLimit   = 100000
)

// Conn is one tracked flow, seen from the VM.
type Conn struct {
	Proto  string `json:"proto"`
	Family int    `json:"family"`
	// VM and VMPort are the VM's side (VMPort: the echo identifier of an
	// ICMP echo flow), Remote and RemotePort the other side.
	VM         string `json:"vm"`
	VMPort     uint16 `json:"vm_port"`
	Remote     string `json:"remote"`
	RemotePort uint16 `json:"remote_port"`
	// Dir is the direction of the flow's first packet: from-vm when the
	// VM opened it.
	Dir   string `json:"dir"`
	State string `json:"state"`
	// AgeSeconds since the first packet, IdleSeconds since the last;
	// ExpiresInSeconds until the entry times out.
	AgeSeconds       float64 `json:"age_seconds"`
	IdleSeconds      float64 `json:"idle_seconds"`
	ExpiresInSeconds float64 `json:"expires_in_seconds"`
	// Packets and Bytes of both directions (approximate: plain adds in
	// the datapath).
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	// Rule allowed the flow (its name in the live policy and index);
	// absent when a default did.
	Rule      string `json:"rule,omitempty"`
	RuleIndex *int   `json:"rule_index,omitempty"`
}

// ConnsView answers view=conns: live flows, most recently active first.
type ConnsView struct {
	View string `json:"view"`
	// Flows is the number of live flows in the table; Expired the entries
	// that timed out and wait for the sweep (not listed).
	Flows   int `json:"flows"`
	Expired int `json:"expired"`
	// Capacity is conntrack_size.
	Capacity int `json:"capacity"`
	// Conns holds at most limit flows; Truncated says some were left out.
	Conns     []Conn `json:"conns"`
	Truncated bool   `json:"truncated"`
}

// RuleHits is a rule's hit count (new flows and denied packets it
// decided since the policy was loaded).
type RuleHits struct {
	Index  int    `json:"index"`
	Name   string `json:"name"`
	Action string `json:"action"`
	Hits   uint64 `json:"hits"`
}

// TopView answers view=top: the busiest live flows (by=bytes or
// by=packets), or the rules with the most hits (by=rules).
type TopView struct {
	View  string     `json:"view"`
	By    string     `json:"by"`
	Flows int        `json:"flows,omitempty"`
	Conns []Conn     `json:"conns,omitempty"`
	Rules []RuleHits `json:"rules,omitempty"`
}

// PolicyView answers view=policy: what runs.
type PolicyView struct {
	View string `json:"view"`
	// Generation counts policy swaps of the instance (fw_config[0]).
	Generation uint32 `json:"generation"`
	// File the live policy was read from, and when it was swapped in.
	File     string    `json:"file"`
	LoadedAt time.Time `json:"loaded_at"`
	// SHA256 of the file's bytes as loaded.
	SHA256   string            `json:"sha256"`
	Rules    int               `json:"rules"`
	Defaults map[string]string `json:"defaults"`
	NonIP    string            `json:"non_ip"`
	// Source is the policy file as loaded (with source=true only).
	Source string `json:"source,omitempty"`
}
