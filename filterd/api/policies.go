package api

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// Policy documents (GET/PUT/DELETE /v1/policies/{name}) are filter
// configuration files filterd keeps for a remote agent, which cannot write
// files on the host: PUT stores the document under filterd's state
// directory after the policy parser accepted it, and filters whose
// "policy" parameter names that file reload it. Path is what a chain's
// FilterSpec passes as the "policy" parameter.
//
//	GET    /v1/policies          []PolicyInfo
//	GET    /v1/policies/{name}   the document itself (application/json)
//	PUT    /v1/policies/{name}   the document -> PolicyChange (400 invalid_param with the parser's line:col: field: error; nothing stored)
//	DELETE /v1/policies/{name}   204; 409 filter_in_use while a chain's filter names it
//	GET    /v1/labels            []VNICLabels: every vNIC filterd knows (chain or labels), for inventories

// PolicyInfo describes one stored policy document.
type PolicyInfo struct {
	Name string `json:"name"`
	// Path of the file: the value of the filter's "policy" parameter.
	Path string `json:"path"`
	// SHA256 of the document, hex.
	SHA256    string    `json:"sha256"`
	Size      int       `json:"size"`
	UpdatedAt time.Time `json:"updated_at"`
	// UsedBy lists "vnic slot N" of the filters whose policy it is.
	UsedBy []string `json:"used_by"`
}

// PolicyChange answers PUT /v1/policies/{name}.
type PolicyChange struct {
	Policy PolicyInfo `json:"policy"`
	// Unchanged: the stored document was the same; nothing reloaded.
	Unchanged bool `json:"unchanged,omitempty"`
	// Reloaded are the filter instances that took the new document.
	Reloaded []Reloaded `json:"reloaded"`
}

// VNICLabels is one vNIC filterd knows: it has a chain, labels, or both.
type VNICLabels struct {
	VNIC string `json:"vnic"`
	// Owner of its chain ("libvirt:web01"); empty without one.
	Owner     string   `json:"owner,omitempty"`
	Chain     bool     `json:"chain"`
	Tags      []string `json:"tags"`
	Addresses []string `json:"addresses"`
	// MAC is the guest MAC of the vNIC's interface, lower case; empty
	// when nobody recorded it.
	MAC string `json:"mac,omitempty"`
}

func policyPath(name string) string { return "/" + Version + "/policies/" + url.PathEscape(name) }

// Policies lists the stored policy documents.
func (c *Client) Policies(ctx context.Context) ([]PolicyInfo, error) {
	var r []PolicyInfo
	err := c.do(ctx, http.MethodGet, "/"+Version+"/policies", nil, &r)
	return r, err
}

// Policy returns a stored policy document as it was put.
func (c *Client) Policy(ctx context.Context, name string) ([]byte, error) {
	var b []byte
	err := c.do(ctx, http.MethodGet, policyPath(name), nil, &b)
	return b, err
}

// PutPolicy stores a policy document (JSON) and reloads the filters using
// it. A document the parser refuses is an invalid_param error and changes
// nothing.
func (c *Client) PutPolicy(ctx context.Context, name string, doc []byte) (*PolicyChange, error) {
	var r PolicyChange
	err := c.do(ctx, http.MethodPut, policyPath(name), doc, &r)
	return &r, err
}

// DeletePolicy removes a policy document no chain uses.
func (c *Client) DeletePolicy(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, policyPath(name), nil, nil)
}

// Labels lists every vNIC filterd knows with its labels.
func (c *Client) Labels(ctx context.Context) ([]VNICLabels, error) {
	var r []VNICLabels
	err := c.do(ctx, http.MethodGet, "/"+Version+"/labels", nil, &r)
	return r, err
}
