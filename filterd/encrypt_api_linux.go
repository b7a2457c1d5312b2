package filterd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// The encryption mesh's host API (docs/encrypt.md, Key distribution): a
// control plane that reaches the host only through filterd collects the
// host's public key and endpoints and delivers the peers document, which
// filterd keeps in its state directory for every encrypt instance with
// peers=api and reloads them with.
//
// This is the one place filterd knows a filter by name: the routes are
// the encrypt filter's and so is the parser that validates the document
// before anything changes. A generic seam (a filter registering host-wide
// documents with the SDK) would lift the exception when a second filter
// needs one.

// errGenerationMismatch: ?if_generation= is not the current generation.
var errGenerationMismatch = errors.New("generation mismatch")

// encryptMu serializes changes of the managed peers document.
var encryptMu sync.Mutex

// peersMeta is the sidecar of the managed peers document: the peers file
// keeps the peers file's schema, which has no room for it.
type peersMeta struct {
	Generation uint64    `json:"generation"`
	Updated    time.Time `json:"updated"`
}

func (d *Daemon) encryptRoutes(mux *http.ServeMux, v string) {
	mux.HandleFunc("GET "+v+"/encrypt/host", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.EncryptHost(r.Context())
		respond(w, out, err)
	})
	mux.HandleFunc("GET "+v+"/encrypt/peers", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.EncryptPeers()
		respond(w, out, err)
	})
	mux.HandleFunc("PUT "+v+"/encrypt/peers", d.handleSetEncryptPeers)
}

func (d *Daemon) handleSetEncryptPeers(w http.ResponseWriter, r *http.Request) {
	for k, vs := range r.URL.Query() {
		if k != "if_generation" || len(vs) != 1 {
			replyErr(w, fmt.Errorf("%w: query parameter %q: the only one is if_generation, once", ErrBadRequest, k))
			return
		}
	}
	ifGen, err := queryGeneration(r)
	if err != nil {
		replyErr(w, err)
		return
	}
	doc, err := readDocument(r, "peers document", maxBody)
	if err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.SetEncryptPeers(r.Context(), doc, ifGen)
	if errors.Is(err, errGenerationMismatch) {
		reply(w, http.StatusConflict, api.Error{Code: api.CodeGenerationMismatch, Message: err.Error()})
		return
	}
	respond(w, out, err)
}

func (d *Daemon) managedPeersFile() string { return encrypt.ManagedPeersFile(d.cfg.StateDir) }

func (d *Daemon) peersMetaFile() string {
	return filepath.Join(encrypt.ManagedDir(d.cfg.StateDir), "peers.meta.json")
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

func (s encryptSlot) managed() bool { return s.in.inst.Params.String("peers") == encrypt.PeersAPI }

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

func (d *Daemon) readPeersMeta() (peersMeta, error) {
	var m peersMeta
	b, err := os.ReadFile(d.peersMetaFile())
	if errors.Is(err, fs.ErrNotExist) {
		return m, nil
	}
	if err == nil {
		err = json.Unmarshal(b, &m)
	}
	if err != nil {
		return m, fmt.Errorf("encrypt peers generation %s: %w", d.peersMetaFile(), err)
	}
	return m, nil
}

// EncryptPeers answers GET /v1/encrypt/peers.
func (d *Daemon) EncryptPeers() (*api.EncryptPeers, error) {
	encryptMu.Lock()
	defer encryptMu.Unlock()
	m, err := d.readPeersMeta()
	if err != nil {
		return nil, err
	}
	out := &api.EncryptPeers{Generation: m.Generation, Updated: m.Updated, File: d.managedPeersFile(), Document: json.RawMessage("null")}
	b, err := os.ReadFile(out.File)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", out.File, err)
	case !json.Valid(b):
		return nil, fmt.Errorf("%s is not JSON (edited by hand?): PUT a peers document to replace it", out.File)
	default:
		out.Document = b
	}
	return out, nil
}

// SetEncryptPeers validates doc with the encrypt filter's parser (and
// against this host's own key), writes it as the managed peers file and
// reloads every encrypt instance with peers=api. A document the parser
// refuses changes nothing; one an instance refuses at reload (e.g. the
// policy names a peer it removes) is rolled back: the previous file is
// put back and the instances reloaded with it. ifGeneration, when not
// nil, must be the current generation.
func (d *Daemon) SetEncryptPeers(ctx context.Context, doc []byte, ifGeneration *uint64) (*api.EncryptPeersResult, error) {
	encryptMu.Lock()
	defer encryptMu.Unlock()
	m, err := d.readPeersMeta()
	if err != nil {
		return nil, err
	}
	if ifGeneration != nil && *ifGeneration != m.Generation {
		return nil, fmt.Errorf("%w: the peers document is at generation %d, not %d (read it again and retry)", errGenerationMismatch, m.Generation, *ifGeneration)
	}
	_, own, err := d.hostInfo()
	if err != nil {
		return nil, err
	}
	if len(own) == 0 {
		own = []encrypt.Key{{}}
	}
	for _, k := range own {
		if _, err := encrypt.CheckPeers(doc, k); err != nil {
			return nil, fmt.Errorf("%w: peers document: %w", sdk.ErrInvalidParam, err)
		}
	}
	file := d.managedPeersFile()
	old, err := os.ReadFile(file)
	existed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	if err := writeFileAtomic(file, doc); err != nil {
		return nil, fmt.Errorf("write %s: %w", file, err)
	}
	restore := func() error {
		if existed {
			return writeFileAtomic(file, old)
		}
		return os.Remove(file)
	}

	d.mu.Lock()
	defer d.mu.Unlock()
	out := &api.EncryptPeersResult{File: file, Reloaded: []api.Reloaded{}}
	var managed []encryptSlot
	for _, s := range d.encryptSlotsLocked() {
		if s.managed() {
			managed = append(managed, s)
		} else {
			out.Unmanaged = append(out.Unmanaged, api.Reloaded{VNIC: s.vnic, Slot: s.slot, Filter: encrypt.Name, Error: "reads peers=" + s.in.inst.Params.String("peers")})
		}
	}
	reload := func(s encryptSlot) (api.Reloaded, error) {
		r := api.Reloaded{VNIC: s.vnic, Slot: s.slot, Filter: encrypt.Name}
		start := time.Now()
		rl, ok := s.in.fast.(sdk.Reloader)
		if !ok {
			return r, fmt.Errorf("%w: encrypt instance cannot reload", sdk.ErrNotSupported)
		}
		err := rl.Reload(s.in.inst.Params)
		r.Seconds = time.Since(start).Seconds()
		if err != nil {
			r.Error = err.Error()
		}
		return r, err
	}
	for _, s := range managed {
		r, err := reload(s)
		if err == nil {
			out.Reloaded = append(out.Reloaded, r)
			continue
		}
		// Roll back: the previous document, and every instance reloaded
		// with it (those already switched, and the one that refused in
		// case it took part of the change).
		d.log.Error("encrypt peers document refused at reload; rolling back", "vnic", s.vnic, "slot", s.slot, "err", err)
		back := []error{restore()}
		for _, s2 := range managed {
			if _, err := reload(s2); err != nil {
				back = append(back, fmt.Errorf("%s slot %d: %w", s2.vnic, s2.slot, err))
			}
			if s2 == s {
				break
			}
		}
		if berr := errors.Join(back...); berr != nil {
			return nil, fmt.Errorf("encrypt on %s slot %d refused the peers document: %w; rolling back to the previous one failed: %v", s.vnic, s.slot, err, berr)
		}
		return nil, fmt.Errorf("encrypt on %s slot %d refused the peers document (the previous one is back in force): %w", s.vnic, s.slot, err)
	}
	m.Generation++
	m.Updated = time.Now().UTC()
	mb, _ := json.Marshal(m)
	if err := writeFileAtomic(d.peersMetaFile(), mb); err != nil {
		return nil, fmt.Errorf("write %s: %w", d.peersMetaFile(), err)
	}
	out.Generation = m.Generation
	d.log.Info("encrypt peers document replaced", "generation", m.Generation, "reloaded", len(out.Reloaded), "unmanaged", len(out.Unmanaged))
	return out, nil
}
