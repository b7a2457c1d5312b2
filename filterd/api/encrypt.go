package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"
)

// The encryption mesh's host side (docs/encrypt.md, Key distribution):
//
//	GET /v1/encrypt/host                     EncryptHost: public key, endpoints, key time
//	GET /v1/encrypt/peers                     EncryptPeers: the API-managed peers document
//	PUT /v1/encrypt/peers[?if_generation=N]   peers document -> EncryptPeersResult
//	GET /v1/encrypt/policy                    EncryptPolicy: the API-managed policy document
//	PUT /v1/encrypt/policy[?if_generation=N]  policy document -> EncryptPolicyResult
//	    (400 invalid_param: the document or a reload refused it, nothing
//	    changed; 409 generation_mismatch: if_generation is not current)

// CodeGenerationMismatch: a compare-and-swap (?if_generation=) named a
// generation that is not the current one; nothing changed.
const CodeGenerationMismatch = "generation_mismatch"

// EncryptHost answers GET /v1/encrypt/host: what a control plane collects
// from each host to build the other hosts' peers documents. It never holds
// the private key. Its fields are encrypt.HostInfo's.
type EncryptHost struct {
	Tunnel     string           `json:"tunnel"`
	Running    bool             `json:"running"`
	PublicKey  string           `json:"public_key"`
	KeyDir     string           `json:"key_dir"`
	KeyCreated time.Time        `json:"key_created"`
	ListenPort int              `json:"listen_port"`
	Endpoints  []EncryptAddress `json:"endpoints"`
	Prefixes   []string         `json:"prefixes"`
	PeersFile  string           `json:"peers_file,omitempty"`
}

// EncryptAddress is one address the host's tunnel listens on.
type EncryptAddress struct {
	Interface string `json:"interface"`
	Endpoint  string `json:"endpoint"`
}

// EncryptDocument answers GET /v1/encrypt/peers and GET
// /v1/encrypt/policy: one of the encrypt filter's host-wide documents
// filterd keeps for the instances attached with peers=api or policy=api.
type EncryptDocument struct {
	// Generation counts the accepted PUTs (0: none yet); a PUT with
	// ?if_generation=N succeeds only while it is N.
	Generation uint64 `json:"generation"`
	// File is the file the instances with peers=api (policy=api) read.
	File string `json:"file"`
	// Updated is when the document was last accepted (zero: never).
	Updated time.Time `json:"updated,omitzero"`
	// Document is the document as accepted (the schema of a peers or a
	// policy file); null until the first PUT.
	Document json.RawMessage `json:"document"`
}

// EncryptPeers answers GET /v1/encrypt/peers.
type EncryptPeers = EncryptDocument

// EncryptPolicy answers GET /v1/encrypt/policy.
type EncryptPolicy = EncryptDocument

// EncryptDocumentResult answers PUT /v1/encrypt/peers and PUT
// /v1/encrypt/policy.
type EncryptDocumentResult struct {
	Generation uint64 `json:"generation"`
	File       string `json:"file"`
	// Reloaded lists the encrypt instances with peers=api (policy=api),
	// reloaded with the new document (one reload updates the whole
	// host's tunnel; each instance's routes follow).
	Reloaded []Reloaded `json:"reloaded"`
	// Unmanaged lists encrypt instances reading another file
	// (peers=FILE, policy=FILE or no policy): the document does not
	// reach them.
	Unmanaged []Reloaded `json:"unmanaged,omitempty"`
}

// EncryptPeersResult answers PUT /v1/encrypt/peers.
type EncryptPeersResult = EncryptDocumentResult

// EncryptPolicyResult answers PUT /v1/encrypt/policy.
type EncryptPolicyResult = EncryptDocumentResult

// EncryptHost returns this host's public key and endpoints.
func (c *Client) EncryptHost(ctx context.Context) (*EncryptHost, error) {
	var h EncryptHost
	err := c.do(ctx, http.MethodGet, "/"+Version+"/encrypt/host", nil, &h)
	return &h, err
}

// EncryptPeers returns the API-managed peers document and its generation.
func (c *Client) EncryptPeers(ctx context.Context) (*EncryptPeers, error) {
	return c.encryptDocument(ctx, "peers")
}

// SetEncryptPeers replaces the peers document (doc: the peers file's
// JSON) and reloads every encrypt instance with peers=api. ifGeneration,
// when not nil, makes it a compare-and-swap.
func (c *Client) SetEncryptPeers(ctx context.Context, doc []byte, ifGeneration *uint64) (*EncryptPeersResult, error) {
	return c.setEncryptDocument(ctx, "peers", doc, ifGeneration)
}

// EncryptPolicy returns the API-managed policy document and its
// generation.
func (c *Client) EncryptPolicy(ctx context.Context) (*EncryptPolicy, error) {
	return c.encryptDocument(ctx, "policy")
}

// SetEncryptPolicy replaces the policy document (doc: the policy file's
// JSON) and reloads every encrypt instance with policy=api.
// ifGeneration, when not nil, makes it a compare-and-swap.
func (c *Client) SetEncryptPolicy(ctx context.Context, doc []byte, ifGeneration *uint64) (*EncryptPolicyResult, error) {
	return c.setEncryptDocument(ctx, "policy", doc, ifGeneration)
}

func (c *Client) encryptDocument(ctx context.Context, name string) (*EncryptDocument, error) {
	var d EncryptDocument
	err := c.do(ctx, http.MethodGet, "/"+Version+"/encrypt/"+name, nil, &d)
	return &d, err
}

func (c *Client) setEncryptDocument(ctx context.Context, name string, doc []byte, ifGeneration *uint64) (*EncryptDocumentResult, error) {
	p := "/" + Version + "/encrypt/" + name
	if ifGeneration != nil {
		p = withQuery(p, map[string]string{"if_generation": strconv.FormatUint(*ifGeneration, 10)})
	}
	var r EncryptDocumentResult
	err := c.do(ctx, http.MethodPut, p, doc, &r) // as is: error positions are the document's
	return &r, err
}
