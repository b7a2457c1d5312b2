// Package api holds the management service's wire types (REST API v1,
// manager/openapi.yaml) and its Go client. It imports only the standard
// library, so vfctl and the host agent link it cheaply.
package api

import (
	"encoding/json"
	"time"
)

// Roles of bearer tokens and of the tokens an admin mints.
const (
	// RoleAdmin may read and write everything.
	RoleAdmin = "admin"
	// RoleReadOnly may only read (GET); writes answer 403.
	RoleReadOnly = "read-only"
	// RoleJoin is a single-use enrollment token: an agent exchanges it at
	// POST /v1/enroll for a client certificate. It is no API credential.
	RoleJoin = "join"
)

// Error codes (Error.Code), stable for clients.
const (
	CodeUnauthorized = "unauthorized" // 401: no or unknown credential
	CodeForbidden    = "forbidden"    // 403: the credential may not do this
	CodeNotFound     = "not_found"    // 404
	CodeBadRequest   = "bad_request"  // 400: malformed body or parameters
	CodeInvalid      = "invalid"      // 422: well-formed but refused by validation
	CodeConflict     = "conflict"     // 409: in use, exists, or changed concurrently
	CodeInternal     = "internal"     // 500
)

// Error is the body of every 4xx/5xx answer.
type Error struct {
	// Status is the HTTP status (not sent; set by the client).
	Status  int    `json:"-"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Host is an enrolled host (one filterd and its agent).
type Host struct {
	Name string `json:"name"`
	// EnrolledAt and CertSerial identify the client certificate issued at
	// enrollment; only that certificate is accepted for the host.
	EnrolledAt time.Time `json:"enrolled_at"`
	CertSerial string    `json:"cert_serial"`
	// The rest is computed when read.
	VMs             int   `json:"vms"`
	VNICs           int   `json:"vnics"`
	DesiredVersion  int64 `json:"desired_version"`
	RealizedVersion int64 `json:"realized_version"`
	// Connected: an agent of the host holds a desired-state stream open
	// on the manager instance that answered.
	Connected bool `json:"connected"`
}

// Inventory is what a host's agent reports (PUT /v1/agent/inventory):
// the VMs running there with their vNICs, and the host's own network
// facts the overlay and the encryption mesh need. It replaces the host's
// previous report.
type Inventory struct {
	VMs []VM `json:"vms"`
	// Underlay is the host's address on the underlay network (vfagent
	// --underlay): the source of its VXLAN tunnels and the address other
	// hosts reach it at. Empty: the host takes no part in segments.
	Underlay string `json:"underlay,omitempty"`
	// Tunnel is the host's encryption tunnel as filterd reports it
	// (GET /v1/encrypt/host): its public key and the endpoint on the
	// underlay. Nil: the host takes no part in encryption. The private key
	// never leaves the host.
	Tunnel     *Tunnel   `json:"tunnel,omitempty"`
	ReportedAt time.Time `json:"reported_at,omitzero"`
}

// Tunnel is a host's WireGuard identity as its agent reports it.
type Tunnel struct {
	// PublicKey is base64 of the 32-byte Curve25519 public key.
	PublicKey string `json:"public_key"`
	// Endpoint is "ip:port" on the underlay ("[ip]:port" for IPv6).
	Endpoint string `json:"endpoint"`
	// KeyCreated is when the key was generated or last rotated.
	KeyCreated time.Time `json:"key_created,omitzero"`
}

// VM is a virtual machine as reported by its host's agent. Tags and Groups
// are the manager's (set with PUT /v1/vms/{vm}/tags, computed).
type VM struct {
	Name   string            `json:"name"`
	UUID   string            `json:"uuid,omitempty"`
	Host   string            `json:"host,omitempty"`
	VNICs  []VNIC            `json:"vnics"`
	Tags   map[string]string `json:"tags,omitempty"`
	Groups []string          `json:"groups,omitempty"`
}

// VNIC is one VM interface: the host-side device filterd protects, the
// guest's MAC on it and the addresses the VM uses on it (they make up
// group address sets).
type VNIC struct {
	Name string   `json:"name"`
	MAC  string   `json:"mac,omitempty"`
	IPs  []string `json:"ips,omitempty"`
}

// Tags are a VM's labels, key to value.
type Tags map[string]string

// Group is a set of VMs: the union of a static list, a tag selector, a
// name pattern and other groups. At least one must be given.
type Group struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// VMs are members by name (they need not be reported yet).
	VMs []string `json:"vms,omitempty"`
	// Selector matches VMs carrying every key with the given value ("*":
	// any value).
	Selector map[string]string `json:"selector,omitempty"`
	// NameGlob matches VM names (shell pattern: * ? [a-z]).
	NameGlob string `json:"name_glob,omitempty"`
	// Include adds the members of other groups (no cycles).
	Include []string `json:"include,omitempty"`
	// Revision is the store revision of the last change (read only).
	Revision int64 `json:"revision,omitempty"`
}

// GroupMembers is a group resolved now.
type GroupMembers struct {
	Group string   `json:"group"`
	VMs   []string `json:"vms"`
	// Addresses are the members' vNIC addresses, what firewall rules
	// naming the group match.
	Addresses []string `json:"addresses"`
}

// Policy is a firewall policy in the shape of filters/firewall's JSON
// policy (docs/firewall.md) without "version" and "groups": rules name
// manager groups in src_groups/dst_groups.
type Policy struct {
	Name        string            `json:"name"`
	Description string            `json:"description,omitempty"`
	Defaults    map[string]string `json:"defaults,omitempty"`
	NonIP       string            `json:"non_ip,omitempty"`
	Rules       []json.RawMessage `json:"rules"`
	Revision    int64             `json:"revision,omitempty"`
}

// Segment places the vNICs of a group's VMs in an overlay segment
// (filters/encap, docs/encap.md): their frames travel VXLAN-encapsulated
// between hosts with the segment's VNI and reach only vNICs of the same
// segment. Each host gets the forwarding table of its segments (which host
// each member MAC is on) from the manager.
type Segment struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// VNI is the segment id, 1-16777215, unique among segments.
	VNI int64 `json:"vni"`
	// Group's VMs are the members (all of their vNICs).
	Group string `json:"group"`
	// GBP is the VXLAN-GBP group policy id the members' frames carry (the
	// sender's identity on the wire), 0-65535; 0: none.
	GBP int `json:"gbp,omitempty"`
	// UnderlayMTU is the underlay's MTU (default 1500): larger
	// encapsulated frames are dropped and counted.
	UnderlayMTU int   `json:"underlay_mtu,omitempty"`
	Revision    int64 `json:"revision,omitempty"`
}

// Encryption protects the traffic between the VMs of two groups when it
// crosses hosts (filters/encrypt, docs/encrypt.md): "pci <-> pci", or
// "web <-> db". Both directions are protected; traffic the policy protects
// is never sent in clear (no tunnel: dropped and counted).
type Encryption struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// From and To are groups; they may be the same group.
	From string `json:"from"`
	To   string `json:"to"`
	// Space (optional) is where the members' addresses live: prefixes a
	// member's traffic is never sent to in clear. Traffic to an address
	// in the space that no host carries — a VM of a revoked host, one not
	// reported yet, a non-member — is dropped, not sent in clear. Without
	// it, only the addresses of reported members are protected.
	Space    []string `json:"space,omitempty"`
	Revision int64    `json:"revision,omitempty"`
}

// Assignment applies a policy to the VMs of a group.
type Assignment struct {
	Name     string `json:"name"`
	Policy   string `json:"policy"`
	Group    string `json:"group"`
	Revision int64  `json:"revision,omitempty"`
}

// HostDesired is what a host should enforce: one entry per vNIC it
// reported. Version is the store revision of the last change to it.
type HostDesired struct {
	Host    string        `json:"host"`
	Version int64         `json:"version"`
	VNICs   []DesiredVNIC `json:"vnics"`
	// Documents are the firewall policy documents the chains refer to
	// (Filter.PolicyRef), each once however many vNICs share it: a large
	// group's addresses would otherwise travel once per vNIC.
	Documents map[string]json.RawMessage `json:"documents"`
	// HostDocs are the host-wide documents the agent puts into filterd.
	HostDocs HostDocs `json:"host_docs"`
}

// Host document names (HostDocs fields, RealizedDoc.Name).
const (
	DocEncap         = "encap"
	DocEncryptPeers  = "encrypt_peers"
	DocEncryptPolicy = "encrypt_policy"
)

// HostDocs are a host's host-wide documents, each put into filterd whole
// when its hash changes. A nil document is not managed by the manager on
// this host (nothing configured that needs it): filterd keeps what it has.
type HostDocs struct {
	// Encap is the overlay forwarding table of the host's segments: the
	// body of filterd's PUT /v1/encap/fdb (docs/encap.md).
	Encap *HostDoc `json:"encap,omitempty"`
	// EncryptPeers is the host's WireGuard peers document: the body of
	// filterd's PUT /v1/encrypt/peers (docs/encrypt.md).
	EncryptPeers *HostDoc `json:"encrypt_peers,omitempty"`
	// EncryptPolicy is the host's encryption policy document: the body of
	// filterd's PUT /v1/encrypt/policy.
	EncryptPolicy *HostDoc `json:"encrypt_policy,omitempty"`
}

// Docs lists the documents set, by name (DocEncap, …).
func (h HostDocs) Docs() map[string]*HostDoc {
	out := map[string]*HostDoc{}
	for name, d := range map[string]*HostDoc{DocEncap: h.Encap, DocEncryptPeers: h.EncryptPeers, DocEncryptPolicy: h.EncryptPolicy} {
		if d != nil {
			out[name] = d
		}
	}
	return out
}

// HostDoc is one host-wide document.
type HostDoc struct {
	// Hash identifies Document (first 16 hex digits of its SHA-256); the
	// agent reports it back as realized.
	Hash     string          `json:"hash"`
	Document json.RawMessage `json:"document,omitempty"`
	// Error: the manager could not build a valid document (named
	// problem); the agent keeps what filterd has.
	Error string `json:"error,omitempty"`
}

// Document returns the policy document f refers to, or nil.
func (d *HostDesired) Document(f Filter) json.RawMessage {
	if f.PolicyRef == "" {
		return nil
	}
	return d.Documents[f.PolicyRef]
}

// DesiredVNIC is one vNIC's chain. An empty Chain means "no chain".
type DesiredVNIC struct {
	VNIC string `json:"vnic"`
	VM   string `json:"vm"`
	MAC  string `json:"mac,omitempty"`
	// Policies are the assigned policies merged into the firewall slot.
	Policies []string `json:"policies,omitempty"`
	Chain    []Filter `json:"chain"`
	// Hash identifies Chain; the agent reports it back as realized.
	Hash string `json:"hash"`
	// Error: the merged policy did not compile; the agent keeps what it
	// enforces.
	Error string `json:"error,omitempty"`
}

// Filter is one slot of a desired chain, in filterd's terms (a FilterSpec
// of filterd/api) plus, for the firewall, a reference to its policy
// document (HostDesired.Documents), which the agent writes to a file and
// passes as the "policy" parameter.
type Filter struct {
	Filter   string            `json:"filter"`
	FailMode string            `json:"failmode,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
	// PolicyRef names the document: the first 16 hex digits of its
	// SHA-256, so equal documents share a reference and a changed one
	// gets a new reference.
	PolicyRef string `json:"policy_ref,omitempty"`
}

// Watch event types on a desired-state stream.
const (
	// EventState carries the full desired state.
	EventState = "state"
	// EventCurrent: the client's "since" version is current; nothing to
	// send.
	EventCurrent = "current"
	// EventChanges carries the vNICs changed or removed since the previous
	// event on the same stream, and the documents they refer to that the
	// stream has not sent yet.
	EventChanges = "changes"
	// EventPing keeps idle connections alive.
	EventPing = "ping"
)

// WatchEvent is one line of a desired-state stream
// (GET …/desired?watch=true, application/x-ndjson).
type WatchEvent struct {
	Type    string        `json:"type"`
	Version int64         `json:"version"`
	State   *HostDesired  `json:"state,omitempty"`
	Upsert  []DesiredVNIC `json:"upsert,omitempty"`
	Remove  []string      `json:"remove,omitempty"`
	// Documents: with "changes", the policy documents Upsert refers to
	// that earlier events of the stream did not carry. A client keeps
	// the documents its vNICs still refer to.
	Documents map[string]json.RawMessage `json:"documents,omitempty"`
	// HostDocs: with "changes", the host-wide documents when any of them
	// changed (all of them, as in the state).
	HostDocs *HostDocs `json:"host_docs,omitempty"`
}

// Realized is what a host's agent reports it enforces
// (PUT /v1/agent/realized).
type Realized struct {
	// Version is the desired version the agent last applied.
	Version int64          `json:"version"`
	VNICs   []RealizedVNIC `json:"vnics"`
	// Docs are the host-wide documents put into filterd.
	Docs       []RealizedDoc `json:"docs,omitempty"`
	ReportedAt time.Time     `json:"reported_at,omitzero"`
}

// RealizedDoc is one host-wide document as filterd took it: the Hash of
// the desired document, or the error that stopped it.
type RealizedDoc struct {
	Name  string `json:"name"`
	Hash  string `json:"hash"`
	Error string `json:"error,omitempty"`
}

// RealizedVNIC is one vNIC as enforced: the Hash of the desired entry it
// applied, or the error that stopped it.
type RealizedVNIC struct {
	VNIC  string `json:"vnic"`
	Hash  string `json:"hash"`
	Error string `json:"error,omitempty"`
}

// Counters are a host's datapath counters as its agent last reported
// them (PUT /v1/agent/counters, GET /v1/hosts/{host}/counters).
type Counters struct {
	VNICs      []VNICCounters `json:"vnics"`
	ReportedAt time.Time      `json:"reported_at,omitzero"`
}

// VNICCounters are one vNIC's chain counters, packets and bytes keyed
// by direction and outcome: "from-vm.entered", "to-vm.dropped", ….
type VNICCounters struct {
	VNIC    string            `json:"vnic"`
	Packets map[string]uint64 `json:"packets"`
	Bytes   map[string]uint64 `json:"bytes"`
}

// HostStatus compares desired and realized state of one host.
type HostStatus struct {
	Host            string       `json:"host"`
	DesiredVersion  int64        `json:"desired_version"`
	RealizedVersion int64        `json:"realized_version"`
	ReportedAt      time.Time    `json:"reported_at,omitzero"`
	Connected       bool         `json:"connected"`
	InSync          bool         `json:"in_sync"`
	VNICs           []VNICStatus `json:"vnics"`
	// Docs compares the host-wide documents.
	Docs []DocStatus `json:"docs,omitempty"`
}

// DocStatus is one host-wide document of a HostStatus.
type DocStatus struct {
	Name         string `json:"name"`
	DesiredHash  string `json:"desired_hash,omitempty"`
	RealizedHash string `json:"realized_hash,omitempty"`
	InSync       bool   `json:"in_sync"`
	Error        string `json:"error,omitempty"`
}

// VNICStatus is one vNIC of a HostStatus.
type VNICStatus struct {
	VNIC         string   `json:"vnic"`
	VM           string   `json:"vm,omitempty"`
	Policies     []string `json:"policies,omitempty"`
	DesiredHash  string   `json:"desired_hash,omitempty"`
	RealizedHash string   `json:"realized_hash,omitempty"`
	InSync       bool     `json:"in_sync"`
	Error        string   `json:"error,omitempty"`
}

// TokenRequest asks for a new token (POST /v1/tokens).
type TokenRequest struct {
	// Role: admin, read-only, or join (an enrollment token).
	Role string `json:"role"`
	// Name labels the token (who holds it).
	Name string `json:"name,omitempty"`
	// Host binds a join token to one host name (optional).
	Host string `json:"host,omitempty"`
	// TTL of a join token (Go duration, default 1h, at most 168h).
	TTL string `json:"ttl,omitempty"`
}

// Token describes a token. Secret is set only in the answer that creates
// it: the manager keeps a hash.
type Token struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Role      string    `json:"role"`
	Host      string    `json:"host,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	Secret    string    `json:"token,omitempty"`
}

// EnrollRequest exchanges a join token for a client certificate
// (POST /v1/enroll). The agent keeps its private key: it sends a CSR.
type EnrollRequest struct {
	Token string `json:"token"`
	Host  string `json:"host"`
	// CSR is a PEM "CERTIFICATE REQUEST"; its subject is ignored (the
	// certificate's CN is Host).
	CSR string `json:"csr"`
}

// EnrollResponse carries the signed certificate and the CA to trust.
type EnrollResponse struct {
	Host        string `json:"host"`
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// Revision is the answer of GET /v1/revision.
type Revision struct {
	Revision int64 `json:"revision"`
}
