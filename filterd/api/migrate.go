package api

import (
	"context"
	"net/http"
)

// The migration endpoints (docs/migration.md), on the unix socket:
//
//	POST /v1/vnics/{vnic}/state/pull  PullRequest -> PullResult: fetch the state of the same VM's
//	                                  vNIC from the peer filterd that holds it (mutual TLS) and import it here
//	POST /v1/migrate/handoff          HandoffRequest -> HandoffResult: push the final state of an
//	                                  owner's vNICs to the peers that pulled them, as the VM leaves
//
// and, between filterds over mutual TLS (filterd --migrate-listen), only:
//
//	GET  /v1/migrate/state?owner=O&mac=M[&follow=URL&vnic=V]  the state bundle of O's vNIC
//	                                  (the one of MAC M if O has several); with follow, the final
//	                                  state is pushed to URL's vNIC V at handoff
//	PUT  /v1/migrate/state?owner=O&vnic=V  bundle -> ImportResult: V must be attached here, owned by O

// PullRequest asks filterd to fetch the state of a VM arriving on the
// vNIC in the path from the peer that runs it now.
type PullRequest struct {
	// Owner is the chains' owner on both hosts ("libvirt:<domain>").
	Owner string `json:"owner"`
	// MAC is the guest's MAC address on this interface; it picks the
	// source vNIC when the owner has several.
	MAC string `json:"mac,omitempty"`
	// Peers are the filterds to ask (https://HOST:PORT); empty: the peers
	// filterd was started with (--migrate-peers).
	Peers []string `json:"peers,omitempty"`
	// NoFollow: do not ask the source to push its final state at handoff.
	NoFollow bool `json:"no_follow,omitempty"`
}

// PullResult answers a pull.
type PullResult struct {
	// Peer is the filterd that held the VM's vNIC, Source that vNIC.
	Peer   string `json:"peer"`
	Source string `json:"source"`
	// Bytes of the bundle; Seconds for the fetch, the import included.
	Bytes   int           `json:"bytes"`
	Seconds float64       `json:"seconds"`
	Import  *ImportResult `json:"import"`
}

// HandoffRequest asks filterd to push the final state of owner's vNICs to
// the peers that pulled them (the source's `stopped` hook; filterd's
// libvirt watcher does it when the domain pauses for migration).
type HandoffRequest struct {
	Owner string `json:"owner"`
}

// HandoffResult lists the pushes made.
type HandoffResult struct {
	Pushed []Handoff `json:"pushed"`
}

// Handoff is one vNIC's final push.
type Handoff struct {
	VNIC    string  `json:"vnic"`
	Peer    string  `json:"peer"`
	To      string  `json:"to"`
	Bytes   int     `json:"bytes"`
	Entries int     `json:"entries"`
	Seconds float64 `json:"seconds"`
	// Error, when the push failed (the peer is gone, the migration was
	// cancelled there): the source's chain is detached all the same.
	Error string `json:"error,omitempty"`
}

// PullState fetches the state of owner's vNIC from a peer filterd and
// imports it into vnic's chain here.
func (c *Client) PullState(ctx context.Context, vnic string, req PullRequest) (*PullResult, error) {
	var r PullResult
	err := c.do(ctx, http.MethodPost, vnicPath(vnic)+"/state/pull", req, &r)
	return &r, err
}

// Handoff pushes the final state of owner's vNICs to the peers that
// pulled them.
func (c *Client) Handoff(ctx context.Context, req HandoffRequest) (*HandoffResult, error) {
	var r HandoffResult
	err := c.do(ctx, http.MethodPost, "/"+Version+"/migrate/handoff", req, &r)
	return &r, err
}
