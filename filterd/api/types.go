// Package api is filterd's HTTP/JSON API, version 1: the request and
// response types, the error codes, and a client (Client) used by vfctl, the
// libvirt hook and the control-VM agent.
//
// The API is served on a unix socket (DefaultSocket; access is the
// socket's file mode, root only by default). Paths are versioned:
//
//	GET    /v1/version                      Version
//	GET    /v1/check                        CheckReport (kernel feature probe)
//	GET    /v1/filters                      []FilterInfo (registered filters)
//	POST   /v1/filters                      LoadFilterRequest -> FilterInfo (external filter)
//	DELETE /v1/filters/{name}               unload an external filter
//	GET    /v1/vnics                        []VNIC
//	GET    /v1/vnics/{vnic}                 VNIC, with counters
//	PUT    /v1/vnics/{vnic}                 ChainRequest -> VNIC: create the chain with all its filters at once (or, with replace, swap it atomically)
//	DELETE /v1/vnics/{vnic}                 detach the whole chain
//	POST   /v1/vnics/{vnic}/filters         AttachRequest -> VNIC: add one filter (creates the chain if needed)
//	DELETE /v1/vnics/{vnic}/filters/{slot}  remove one filter
//	POST   /v1/vnics/{vnic}/filters/{slot}/reload  ReloadResult: the filter re-reads its configuration (sdk.Reloader; 501 not_supported if it cannot)
//	GET    /v1/vnics/{vnic}/filters/{slot}/inspect  InspectResult: the filter's live state (sdk.Inspector; 501 not_supported if it has none)
//	GET    /v1/vnics/{vnic}/capture     pcapng stream (application/x-pcapng) until the client leaves; query: direction, duration, proto, port, cidr, snaplen, sample, rate
//	GET    /v1/vnics/{vnic}/state       state bundle (application/octet-stream): the movable state of the chain (sdk.StateMover)
//	PUT    /v1/vnics/{vnic}/state       state bundle -> ImportResult: add it to the same chain here (after a VM move)
//	PUT    /v1/vnics/{vnic}/labels     Labels -> GroupChange: the VM's tags and addresses (tag:<t> groups), its guest MAC
//	GET    /v1/groups                  []Group: host address groups, pushed and tag:<t>
//	GET    /v1/groups/{name}           Group
//	PUT    /v1/groups/{name}           GroupRequest -> GroupChange: set pushed members; users reload
//	DELETE /v1/groups/{name}           GroupChange (409 filter_in_use while a policy uses it)
//	GET    /v1/hidden                  HiddenStatus: the hidden bridge, its ports and intrusion alarms (404 if not configured)
//	GET    /v1/policies                []PolicyInfo: policy documents stored for a remote agent (policies.go)
//	GET    /v1/policies/{name}         the document
//	PUT    /v1/policies/{name}         document -> PolicyChange: checked by the policy parser, stored, users reloaded
//	DELETE /v1/policies/{name}         (409 filter_in_use while a chain names it)
//	GET    /v1/labels                  []VNICLabels: every vNIC with a chain or labels (the agent's inventory)
//	GET    /metrics                         Prometheus text format
//
// Errors are returned with a 4xx/5xx status and an Error body.
package api

import (
	"encoding/json"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Version is the API version in paths.
const Version = "v1"

// DefaultSocket is where filterd listens by default.
const DefaultSocket = "/run/vnicfilter/filterd.sock"

// FilterSpec names a filter and configures one instance of it.
type FilterSpec struct {
	// Name of a registered filter (GET /v1/filters).
	Name string `json:"name"`
	// Params are the instance's parameters, checked against the filter's
	// schema.
	Params map[string]string `json:"params,omitempty"`
	// FailMode overrides the filter's default: "closed" or "open".
	FailMode string `json:"failmode,omitempty"`
	// Directions limits the instance to "from-vm" or "to-vm"; default:
	// the directions the filter declares.
	Directions string `json:"directions,omitempty"`
}

// ChainRequest creates a vNIC's chain with its filters in order (slot 0
// first). The dispatchers are attached only once every filter is loaded.
type ChainRequest struct {
	Filters []FilterSpec `json:"filters"`
	// Owner is free text recording who asked (e.g. "libvirt:web01").
	Owner string `json:"owner,omitempty"`
	// Tags and Addresses label the vNIC's VM: it joins the host group
	// "tag:<t>" of each tag with its addresses (host groups, see Labels).
	// Both omitted, the vNIC's tags and addresses are left as they are.
	Tags      []string `json:"tags,omitempty"`
	Addresses []string `json:"addresses,omitempty"`
	// MAC is the guest MAC of the vNIC's interface (the domain XML's
	// <mac address=…>, not the tap's own), recorded as its label; the
	// manager places the VM in overlay segments by it. Omitted, the
	// recorded MAC is left as it is.
	MAC string `json:"mac,omitempty"`
	// Replace swaps an existing chain for this one atomically: a frame
	// meets the old chain or the new one, never a mix. A filter kept in
	// the same slot with the same parameters keeps its state (connection
	// table, counters). Without Replace an existing chain is an error.
	Replace bool `json:"replace,omitempty"`
}

// AttachRequest adds one filter to a vNIC's chain.
type AttachRequest struct {
	// Slot to use; nil means the first free slot after the last used one.
	Slot   *int       `json:"slot,omitempty"`
	Filter FilterSpec `json:"filter"`
}

// Counter is a packets/bytes pair.
type Counter struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// Verdicts counts what happened to frames in one slot and direction.
type Verdicts struct {
	Continue   Counter `json:"continue"`
	Drop       Counter `json:"drop"`
	Punt       Counter `json:"punt"`
	Redirect   Counter `json:"redirect"`
	Consumed   Counter `json:"consumed"`
	FailClosed Counter `json:"fail_closed"`
	FailOpen   Counter `json:"fail_open"`
}

// ChainCounters are the chain-level counters of one direction.
type ChainCounters struct {
	// Entered: frames the dispatcher saw.
	Entered Counter `json:"entered"`
	// Passed: frames that left the chain allowed.
	Passed Counter `json:"passed"`
	// Dropped: frames any slot or the framework dropped.
	Dropped Counter `json:"dropped"`
}

// Slot is one filter instance in a chain.
type Slot struct {
	Slot       int               `json:"slot"`
	Filter     string            `json:"filter"`
	Version    string            `json:"version"`
	FailMode   string            `json:"failmode"`
	Directions string            `json:"directions"`
	Params     map[string]string `json:"params,omitempty"`
	FastPath   bool              `json:"fast_path"`
	SlowPath   bool              `json:"slow_path"`
	// SlowPathState: "running", "down", "stalled" or "panicked"; empty
	// for a filter without a slow path.
	SlowPathState string `json:"slow_path_state,omitempty"`
	// Verdicts by direction ("from-vm", "to-vm"); filled by GET of one vNIC.
	Verdicts map[string]Verdicts `json:"verdicts,omitempty"`
	// Counters the filter itself reports.
	Counters []sdk.Counter `json:"counters,omitempty"`
}

// VNIC is a protected device and its chain.
type VNIC struct {
	Name    string `json:"name"`
	Ifindex int    `json:"ifindex"`
	// Mode is the attach mode: "tcx" or "clsact".
	Mode  string `json:"mode"`
	Owner string `json:"owner,omitempty"`
	Slots []Slot `json:"slots"`
	// Chain counters by direction; filled by GET of one vNIC.
	Chain map[string]ChainCounters `json:"chain,omitempty"`
}

// FilterInfo describes a registered filter.
type FilterInfo struct {
	Name       string          `json:"name"`
	Version    string          `json:"version"`
	Summary    string          `json:"summary"`
	Directions string          `json:"directions"`
	FailMode   string          `json:"failmode"`
	FastPath   bool            `json:"fast_path"`
	SlowPath   bool            `json:"slow_path"`
	Params     []sdk.ParamSpec `json:"params,omitempty"`
	// External is true for filters loaded from a manifest at run time.
	External bool `json:"external,omitempty"`
	// Process is the external slow-path process of the filter, if any.
	Process *ProcessStatus `json:"process,omitempty"`
}

// ProcessStatus describes an external slow-path filter's process.
type ProcessStatus struct {
	// State: running, backoff (restarting after a crash), stopped.
	State     string `json:"state"`
	PID       int    `json:"pid,omitempty"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
	// Instances are the filter's slots on vNICs the process serves.
	Instances int `json:"instances"`
}

// Feature is one line of the kernel feature probe.
type Feature struct {
	Name string `json:"name"`
	// OK is true when the feature is present and works.
	OK bool `json:"ok"`
	// Required features make filterd refuse to start when missing.
	Required bool   `json:"required"`
	Detail   string `json:"detail,omitempty"`
}

// CheckReport is the result of the kernel feature probe.
type CheckReport struct {
	Kernel   string    `json:"kernel"`
	Mode     string    `json:"mode"`
	Features []Feature `json:"features"`
}

// VersionInfo answers GET /v1/version.
type VersionInfo struct {
	Version    string `json:"version"`
	API        string `json:"api"`
	ABI        int    `json:"abi"`
	BPFFSRoot  string `json:"bpffs_root"`
	AttachMode string `json:"attach_mode"`
}

// ReloadResult answers POST /v1/vnics/{vnic}/filters/{slot}/reload.
type ReloadResult struct {
	VNIC   string `json:"vnic"`
	Slot   int    `json:"slot"`
	Filter string `json:"filter"`
	// Seconds the reload took (parse, compile, swap).
	Seconds float64 `json:"seconds"`
}

// InspectResult answers GET /v1/vnics/{vnic}/filters/{slot}/inspect.
type InspectResult struct {
	VNIC   string `json:"vnic"`
	Slot   int    `json:"slot"`
	Filter string `json:"filter"`
	// State is what the filter's Inspect returned; its shape is the
	// filter's own (documented with the filter). Decode it with
	// json.Unmarshal into the filter's type.
	State any `json:"state"`
}

// ImportResult answers PUT /v1/vnics/{vnic}/state.
type ImportResult struct {
	VNIC string `json:"vnic"`
	// From is the vNIC the bundle was exported from, and when.
	From       string         `json:"from"`
	ExportedAt time.Time      `json:"exported_at"`
	Slots      []ImportedSlot `json:"slots"`
	// Seconds the import took in all.
	Seconds float64 `json:"seconds"`
}

// ImportedSlot is one filter's part of an import.
type ImportedSlot struct {
	Slot    int     `json:"slot"`
	Filter  string  `json:"filter"`
	Entries int     `json:"entries"`
	Bytes   int     `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Labels are a vNIC's tags, addresses and guest MAC: the vNIC's
// addresses are members of the host group "tag:<t>" for each of its tags,
// which filters' configurations can name (a firewall rule's src_groups:
// ["tag:web"]). Tags and Addresses replace what was set before.
type Labels struct {
	Tags      []string `json:"tags"`
	Addresses []string `json:"addresses"`
	// MAC is the guest MAC of the vNIC's interface (6-byte unicast
	// Ethernet, any case; stored lower case). Omitted, the recorded MAC
	// is left as it is; it is forgotten with the vNIC's chain.
	MAC string `json:"mac,omitempty"`
}

// GroupRequest sets the members a host group is pushed (addresses or
// CIDR prefixes). For a tag group they add to the tagged vNICs' addresses
// (e.g. the control plane's view of other hosts).
type GroupRequest struct {
	Members []string `json:"members"`
}

// Group is one host address group.
type Group struct {
	Name string `json:"name"`
	// Members are the addresses filters resolve the group to now.
	Members []string `json:"members"`
	// Pushed are the members set with PUT /v1/groups/{name}.
	Pushed []string `json:"pushed"`
	// VNICs are the tagged vNICs of a tag group.
	VNICs []string `json:"vnics"`
	// UsedBy lists "vnic slot N" of the filters using the group.
	UsedBy []string `json:"used_by"`
}

// GroupChange reports what a group or label change reloaded.
type GroupChange struct {
	Groups   []string   `json:"groups"`
	Reloaded []Reloaded `json:"reloaded"`
}

// Reloaded is one filter instance reloaded for a group change.
type Reloaded struct {
	VNIC    string  `json:"vnic"`
	Slot    int     `json:"slot"`
	Filter  string  `json:"filter"`
	Seconds float64 `json:"seconds"`
	// Error is why the instance kept its live configuration ("" if it
	// took the change).
	Error string `json:"error,omitempty"`
}

// HiddenStatus answers GET /v1/hidden: the hidden bridge and its alarms.
type HiddenStatus struct {
	Bridge  string   `json:"bridge"`
	Address string   `json:"address"`
	Port    int      `json:"port"`
	Allow   []string `json:"allow"`
	// Ports are the bridge's ports now.
	Ports []string `json:"ports"`
	// Intrusions are the last (at most 100) ports removed from it.
	Intrusions      []Intrusion `json:"intrusions"`
	IntrusionsTotal uint64      `json:"intrusions_total"`
}

// Intrusion is a port found on the hidden bridge that had no business there.
type Intrusion struct {
	Port    string    `json:"port"`
	MAC     string    `json:"mac"`
	At      time.Time `json:"at"`
	Removed bool      `json:"removed"`
	Error   string    `json:"error,omitempty"`
}

// Error codes, stable for scripts.
const (
	CodeUnknownFilter = "unknown_filter"
	CodeInvalidParam  = "invalid_param"
	CodeNoSuchDevice  = "no_such_device"
	CodeSlotTaken     = "slot_taken"
	CodeNotAttached   = "not_attached"
	CodeAlreadyExists = "already_attached"
	CodeNotSupported  = "not_supported"
	CodeBadRequest    = "bad_request"
	CodeInternal      = "internal"
	// CodeBadState: a state bundle is damaged, of another version or
	// format, or does not fit the destination chain.
	CodeBadState = "bad_state"
	// External filters (POST/DELETE /v1/filters).
	CodeBadManifest      = "bad_manifest"
	CodeABIMismatch      = "abi_mismatch"
	CodeVerifierRejected = "verifier_rejected"
	CodeFilterInUse      = "filter_in_use"
)

// LoadFilterRequest is the body of POST /v1/filters: an external fast-path
// filter's manifest and eBPF object (base64 in JSON).
type LoadFilterRequest struct {
	Manifest json.RawMessage `json:"manifest"`
	Object   []byte          `json:"object"`
}

// Error is the body of every non-2xx response.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"error"`
}

func (e *Error) Error() string { return e.Message }
