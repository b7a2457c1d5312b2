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
//	GET /v1/encrypt/peers                    EncryptPeers: the API-managed peers document
//	PUT /v1/encrypt/peers[?if_generation=N]  peers document -> EncryptPeersResult
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

// EncryptPeers answers GET /v1/encrypt/peers.
type EncryptPeers struct {
	// Generation counts the accepted PUTs (0: none yet); a PUT with
	// ?if_generation=N succeeds only while it is N.
	Generation uint64 `json:"generation"`
	// File is the peers file instances with peers=api read.
	File string `json:"file"`
	// Updated is when the document was last accepted (zero: never).
	Updated time.Time `json:"updated,omitzero"`
	// Document is the peers document as accepted (the peers file's
	// schema); null until the first PUT.
	Document json.RawMessage `json:"document"`
}

// EncryptPeersResult answers PUT /v1/encrypt/peers.
type EncryptPeersResult struct {
	Generation uint64 `json:"generation"`
	File       string `json:"file"`
	// Reloaded lists the encrypt instances with peers=api, reloaded with
	// the new document (one reload updates the whole host's tunnel; each
	// instance's routes follow).
	Reloaded []Reloaded `json:"reloaded"`
	// Unmanaged lists encrypt instances reading another peers file
	// (peers=FILE): the document does not reach them.
	Unmanaged []Reloaded `json:"unmanaged,omitempty"`
}

// EncryptHost returns this host's public key and endpoints.
func (c *Client) EncryptHost(ctx context.Context) (*EncryptHost, error) {
	var h EncryptHost
	err := c.do(ctx, http.MethodGet, "/"+Version+"/encrypt/host", nil, &h)
	return &h, err
}

// EncryptPeers returns the API-managed peers document and its generation.
func (c *Client) EncryptPeers(ctx context.Context) (*EncryptPeers, error) {
	var p EncryptPeers
	err := c.do(ctx, http.MethodGet, "/"+Version+"/encrypt/peers", nil, &p)
	return &p, err
}

// SetEncryptPeers replaces the peers document (doc: the peers file's
// JSON) and reloads every encrypt instance with peers=api. ifGeneration,
// when not nil, makes it a compare-and-swap.
func (c *Client) SetEncryptPeers(ctx context.Context, doc []byte, ifGeneration *uint64) (*EncryptPeersResult, error) {
	p := "/" + Version + "/encrypt/peers"
	if ifGeneration != nil {
		p = withQuery(p, map[string]string{"if_generation": strconv.FormatUint(*ifGeneration, 10)})
	}
	var r EncryptPeersResult
	err := c.do(ctx, http.MethodPut, p, doc, &r) // as is: error positions are the document's
	return &r, err
}
