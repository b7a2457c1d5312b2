package filterd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"slices"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// The encryption mesh's host API (docs/encrypt.md, Key distribution and
// Policy through the API): a control plane that reaches the host only
// through filterd collects the host's public key and endpoints and
// delivers the peers and the policy documents, which filterd keeps in its
// state directory for every encrypt instance with peers=api (policy=api)
// and reloads them with (encrypt_docs_linux.go).
//
// This is the one place filterd knows a filter by name: the routes are
// the encrypt filter's and so are the parsers that validate the documents
// before anything changes. A generic seam (a filter registering host-wide
// documents with the SDK) would lift the exception when a second filter
// needs one.

func (d *Daemon) encryptRoutes(mux *http.ServeMux, v string) {
	mux.HandleFunc("GET "+v+"/encrypt/host", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.EncryptHost(r.Context())
		respond(w, out, err)
	})
	// GET and PUT /v1/encrypt/peers and /v1/encrypt/policy.
	for _, doc := range []encryptDoc{d.peersDoc(), d.policyDoc()} {
		mux.HandleFunc("GET "+v+"/encrypt/"+doc.param, func(w http.ResponseWriter, r *http.Request) {
			out, err := d.encryptDocument(doc)
			respond(w, out, err)
		})
		mux.HandleFunc("PUT "+v+"/encrypt/"+doc.param, func(w http.ResponseWriter, r *http.Request) {
			d.handleSetEncryptDocument(w, r, doc)
		})
	}
}

func (d *Daemon) managedPeersFile() string { return encrypt.ManagedPeersFile(d.cfg.StateDir) }

// peersDoc is the peers document (peers=api): checked by the encrypt
// filter's parser, against this host's own key and, while no instance
// with peers=api runs, against the managed policy document.
func (d *Daemon) peersDoc() encryptDoc {
	return encryptDoc{param: "peers", file: d.managedPeersFile(), check: d.checkEncryptPeers}
}

// policyDoc is the policy document (policy=api): checked by the encrypt
// filter's parser and against the peers and host groups a reload would
// use.
func (d *Daemon) policyDoc() encryptDoc {
	return encryptDoc{param: "policy", file: encrypt.ManagedPolicyFile(d.cfg.StateDir), check: d.checkEncryptPolicy}
}

// encryptSlot is one encrypt instance.
type encryptSlot struct {
	vnic string
	slot int
	in   *instance
}

// encryptSlotsLocked lists the encrypt instances, by vNIC and slot.
func (d *Daemon) encryptSlotsLocked() []encryptSlot {
	var out []encryptSlot
	for _, name := range sortedKeys(d.vnics) {
		for i, in := range d.vnics[name].slots {
			if in != nil && in.desc.Name == encrypt.Name && in.fast != nil {
				out = append(out, encryptSlot{name, i, in})
			}
		}
	}
	return out
}

// uses reports whether the instance reads the API-managed document
// selected by param ("peers", "policy") with "api" (encrypt.PeersAPI,
// encrypt.PolicyAPI).
func (s encryptSlot) uses(param string) bool { return s.in.inst.Params.String(param) == "api" }

// hostInfo describes the host's tunnel: the running one an instance with
// peers=api uses (else any running one), or, while none runs, the key pair
// in ManagedDir (created the first time) that an instance with the
// default tunnel and key_dir=ManagedDir will use.
func (d *Daemon) hostInfo() (encrypt.HostInfo, []encrypt.Key, error) {
	d.mu.Lock()
	var tunnels []*encrypt.Tunnel
	var first *encrypt.Tunnel
	for _, s := range d.encryptSlotsLocked() {
		t := encrypt.TunnelOf(s.in.fast)
		if t == nil {
			continue
		}
		tunnels = append(tunnels, t)
		if _, managed := t.PeersFile(); first == nil && managed {
			first = t
		}
	}
	d.mu.Unlock()
	if first == nil && len(tunnels) > 0 {
		first = tunnels[0]
	}
	if first == nil {
		hi, err := encrypt.StoredHost(encrypt.ManagedDir(d.cfg.StateDir), encrypt.DefaultTunnel, d.managedPeersFile(), true)
		if err != nil {
			return hi, nil, fmt.Errorf("encrypt host key: %w", err)
		}
		k, err := encrypt.ParseKey(hi.PublicKey)
		return hi, []encrypt.Key{k}, err
	}
	var keys []encrypt.Key
	for _, t := range tunnels {
		keys = append(keys, t.PublicKey())
	}
	hi, err := first.Host()
	return hi, keys, err
}

// EncryptHost answers GET /v1/encrypt/host.
func (d *Daemon) EncryptHost(ctx context.Context) (*api.EncryptHost, error) {
	hi, _, err := d.hostInfo()
	if err != nil {
		return nil, err
	}
	out := &api.EncryptHost{Tunnel: hi.Tunnel, Running: hi.Running, PublicKey: hi.PublicKey, KeyDir: hi.KeyDir, KeyCreated: hi.KeyCreated,
		ListenPort: hi.ListenPort, Endpoints: []api.EncryptAddress{}, Prefixes: hi.Prefixes, PeersFile: hi.PeersFile}
	for _, e := range hi.Endpoints {
		out.Endpoints = append(out.Endpoints, api.EncryptAddress{Interface: e.Interface, Endpoint: e.Endpoint})
	}
	return out, nil
}

// checkEncryptPeers checks a peers document as a PUT must before writing
// it: the encrypt filter's parser, this host's own key (every running
// tunnel's, or the stored one), and — while no instance reads either
// managed document, so no reload will — the managed policy document's
// peer:<name> against it. A running instance checks its policy at the
// reload, and a refusal there is rolled back; one with policy=api and a
// peers file never reads this document.
func (d *Daemon) checkEncryptPeers(doc []byte) error {
	_, own, err := d.hostInfo()
	if err != nil {
		return err
	}
	if len(own) == 0 {
		own = []encrypt.Key{{}}
	}
	var peers *encrypt.Peers
	for _, k := range own {
		if peers, err = encrypt.CheckPeers(doc, k); err != nil {
			return fmt.Errorf("%w: peers document: %w", sdk.ErrInvalidParam, err)
		}
	}
	if d.encryptUsers("peers") || d.encryptUsers("policy") {
		return nil
	}
	pf := encrypt.ManagedPolicyFile(d.cfg.StateDir)
	pol, err := encrypt.LoadPolicy(pf)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("managed policy document: %w", err)
	}
	if err := pol.Check(pf, peers); err != nil {
		return fmt.Errorf("%w: peers document: the policy document names a peer it lacks (PUT a policy without it first): %w", sdk.ErrInvalidParam, err)
	}
	return nil
}

// checkEncryptPolicy checks a policy document as a PUT must before
// writing it: the encrypt filter's parser, then what a reload checks —
// every peer:<name> against the live peers of each tunnel an instance
// with policy=api runs (while none runs, the managed peers document),
// every group: through filterd's group table.
func (d *Daemon) checkEncryptPolicy(doc []byte) error {
	d.mu.Lock()
	var tunnels []*encrypt.Tunnel
	for _, s := range d.encryptSlotsLocked() {
		if t := encrypt.TunnelOf(s.in.fast); t != nil && s.uses("policy") && !slices.Contains(tunnels, t) {
			tunnels = append(tunnels, t)
		}
	}
	d.mu.Unlock()
	var err error
	if len(tunnels) == 0 {
		var peers *encrypt.Peers
		if peers, err = encrypt.LoadManagedPeers(d.cfg.StateDir); err != nil {
			return fmt.Errorf("managed peers document: %w", err)
		}
		_, err = encrypt.CheckPolicy(doc, peers, d.groups)
	}
	for _, t := range tunnels {
		if _, err = t.CheckPolicy(doc); err != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%w: policy document: %w", sdk.ErrInvalidParam, err)
	}
	return nil
}

// encryptUsers reports whether an encrypt instance reads the managed
// document selected by param.
func (d *Daemon) encryptUsers(param string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range d.encryptSlotsLocked() {
		if s.uses(param) {
			return true
		}
	}
	return false
}
