package filterd

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/internal/fsutil"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Policy documents: filter configuration files a remote agent (the control
// VM's, over the hidden bridge) cannot write on the host itself. filterd
// stores them under STATE-DIR/policies/NAME.json after the policy parser
// (Config.PolicyCheck: the firewall's, wired by cmd/filterd) accepted
// them, and reloads every filter whose "policy" parameter names the file,
// through the same sdk.Reloader path as `vfctl fw load`.

// policyNameRE: file-name safe, no leading dot, '+' for merged policy sets.
var policyNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)

// maxPolicy bounds a policy document (a merged policy with large address
// groups is far bigger than an API request).
const maxPolicy = 16 << 20

func (d *Daemon) policyDir() string { return filepath.Join(d.cfg.StateDir, "policies") }

// PolicyPath is the file a stored policy document lives in: the value a
// chain passes as the filter's "policy" parameter.
func (d *Daemon) PolicyPath(name string) string {
	return filepath.Join(d.policyDir(), name+".json")
}

func checkPolicyName(name string) error {
	if !policyNameRE.MatchString(name) {
		return fmt.Errorf("%w: policy name %q: want 1 to 128 letters, digits, '.', '_', '+', '-', not starting with '.', '_', '+' or '-'", ErrBadRequest, name)
	}
	return nil
}

// registerPolicies adds the policy-document and label-inventory endpoints.
func (d *Daemon) registerPolicies(mux *http.ServeMux, v string) {
	mux.HandleFunc("GET "+v+"/policies", func(w http.ResponseWriter, r *http.Request) {
		out, err := d.Policies()
		respond(w, out, err)
	})
	mux.HandleFunc("GET "+v+"/policies/{name}", func(w http.ResponseWriter, r *http.Request) {
		doc, err := d.Policy(r.PathValue("name"))
		if err != nil {
			replyErr(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
	mux.HandleFunc("PUT "+v+"/policies/{name}", func(w http.ResponseWriter, r *http.Request) {
		doc, err := readDocument(r, "policy document", maxPolicy)
		if err != nil {
			replyErr(w, err)
			return
		}
		out, err := d.PutPolicy(r.PathValue("name"), doc)
		respond(w, out, err)
	})
	mux.HandleFunc("DELETE "+v+"/policies/{name}", func(w http.ResponseWriter, r *http.Request) {
		respond(w, nil, d.DeletePolicy(r.PathValue("name")))
	})
	mux.HandleFunc("GET "+v+"/labels", func(w http.ResponseWriter, r *http.Request) {
		reply(w, http.StatusOK, d.Labels())
	})
}

// Policy returns a stored document.
func (d *Daemon) Policy(name string) ([]byte, error) {
	if err := checkPolicyName(name); err != nil {
		return nil, err
	}
	doc, err := os.ReadFile(d.PolicyPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("policy %s: %w", name, ErrNoSuchPolicy)
	}
	return doc, err
}

// Policies lists the stored documents.
func (d *Daemon) Policies() ([]api.PolicyInfo, error) {
	ents, err := os.ReadDir(d.policyDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	out := []api.PolicyInfo{}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || checkPolicyName(name) != nil {
			continue // temporary files
		}
		if info, err := d.policyInfoLocked(name); err == nil {
			out = append(out, info)
		}
	}
	return out, nil
}

func (d *Daemon) policyInfoLocked(name string) (api.PolicyInfo, error) {
	path := d.PolicyPath(name)
	doc, err := os.ReadFile(path)
	if err != nil {
		return api.PolicyInfo{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return api.PolicyInfo{}, err
	}
	sum := sha256.Sum256(doc)
	return api.PolicyInfo{Name: name, Path: path, SHA256: hex.EncodeToString(sum[:]), Size: len(doc),
		UpdatedAt: st.ModTime().UTC(), UsedBy: d.policyUsersLocked(path)}, nil
}

// policyUsersLocked lists "vnic slot N" of every filter (loaded or
// recorded) whose "policy" parameter is path.
func (d *Daemon) policyUsersLocked(path string) []string {
	out := []string{}
	for _, name := range sortedKeys(d.vnics) {
		for i, in := range d.vnics[name].slots {
			if in != nil && in.inst.Params.Map()["policy"] == path {
				out = append(out, fmt.Sprintf("%s slot %d", name, i))
			}
		}
	}
	for _, name := range sortedKeys(d.recorded) {
		for i, f := range d.recorded[name].filters {
			if f.Params["policy"] == path {
				out = append(out, fmt.Sprintf("%s slot %d", name, i))
			}
		}
	}
	return out
}

// checkPolicy runs the policy parser over doc, resolving host groups the
// document does not define through filterd's group table.
func (d *Daemon) checkPolicy(name string, doc []byte) error {
	if d.cfg.PolicyCheck == nil {
		return fmt.Errorf("%w: this filterd has no policy parser (Config.PolicyCheck)", sdk.ErrNotSupported)
	}
	if err := d.cfg.PolicyCheck(doc, "policy "+name, d.groups); err != nil {
		return fmt.Errorf("%w: %w", sdk.ErrInvalidParam, err)
	}
	return nil
}

// PutPolicy validates doc, stores it atomically (temporary file, fsync,
// rename; 0600) and reloads every filter whose policy it is. A document
// the parser refuses changes nothing. If a filter cannot take a document
// the parser accepted (e.g. it compiles too large), the previous document
// is put back, the filters that took the new one reload the old one, and
// the error names the filter.
func (d *Daemon) PutPolicy(name string, doc []byte) (*api.PolicyChange, error) {
	if err := checkPolicyName(name); err != nil {
		return nil, err
	}
	if err := d.checkPolicy(name, doc); err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	path := d.PolicyPath(name)
	prev, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	existed := err == nil
	if existed && bytes.Equal(prev, doc) {
		info, err := d.policyInfoLocked(name)
		return &api.PolicyChange{Policy: info, Unchanged: true, Reloaded: []api.Reloaded{}}, err
	}
	if err := writeFileAtomic(path, doc); err != nil {
		return nil, fmt.Errorf("policy %s: %w", name, err)
	}
	reloaded, failed := d.reloadPolicyUsersLocked(path)
	if failed != nil {
		// Put the previous document back, and the filters that took the
		// new one reload it: nothing runs what was refused.
		if existed {
			err = writeFileAtomic(path, prev)
		} else {
			err = os.Remove(path)
		}
		if err != nil {
			d.log.Error("put back the previous policy document", "policy", name, "err", err)
		}
		if existed {
			d.reloadPolicyUsersLocked(path)
		}
		return nil, fmt.Errorf("%w: policy %s: %s slot %d (%s) refused it: %s; the previous document stays", sdk.ErrInvalidParam, name, failed.VNIC, failed.Slot, failed.Filter, failed.Error)
	}
	info, err := d.policyInfoLocked(name)
	if err != nil {
		return nil, err
	}
	d.log.Info("policy document stored", "policy", name, "bytes", len(doc), "reloaded", len(reloaded))
	return &api.PolicyChange{Policy: info, Reloaded: reloaded}, nil
}

// reloadPolicyUsersLocked reloads every filter whose policy is path; it
// stops at the first that fails and returns it.
func (d *Daemon) reloadPolicyUsersLocked(path string) ([]api.Reloaded, *api.Reloaded) {
	out := []api.Reloaded{}
	for _, name := range sortedKeys(d.vnics) {
		for i, in := range d.vnics[name].slots {
			if in == nil || in.inst.Params.Map()["policy"] != path {
				continue
			}
			r := api.Reloaded{VNIC: name, Slot: i, Filter: in.desc.Name}
			rl, ok := in.fast.(sdk.Reloader)
			if !ok {
				r.Error = "the filter cannot reload its configuration"
				return out, &r
			}
			start := time.Now()
			if err := rl.Reload(in.inst.Params); err != nil {
				r.Error = err.Error()
				return out, &r
			}
			r.Seconds = time.Since(start).Seconds()
			out = append(out, r)
		}
	}
	for _, name := range sortedKeys(d.recorded) {
		n := d.recorded[name]
		for i, f := range n.filters {
			if f.Params["policy"] == path {
				n.reloads++
				out = append(out, api.Reloaded{VNIC: name, Slot: i, Filter: f.Name})
			}
		}
	}
	return out, nil
}

// DeletePolicy removes a document no filter uses.
func (d *Daemon) DeletePolicy(name string) error {
	if err := checkPolicyName(name); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	path := d.PolicyPath(name)
	if users := d.policyUsersLocked(path); len(users) > 0 {
		return fmt.Errorf("%w: policy %s is used by %s (change their chains first)", sdk.ErrFilterInUse, name, strings.Join(users, ", "))
	}
	if err := os.Remove(path); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("policy %s: %w", name, ErrNoSuchPolicy)
	} else if err != nil {
		return err
	}
	d.log.Info("policy document deleted", "policy", name)
	return nil
}

// Labels lists every vNIC with a chain or labels.
func (d *Daemon) Labels() []api.VNICLabels {
	d.mu.Lock()
	defer d.mu.Unlock()
	byName := map[string]*api.VNICLabels{}
	get := func(n string) *api.VNICLabels {
		if l := byName[n]; l != nil {
			return l
		}
		l := &api.VNICLabels{VNIC: n, Tags: []string{}, Addresses: []string{}}
		byName[n] = l
		return l
	}
	for n, v := range d.vnics {
		if !v.capture {
			l := get(n)
			l.Chain, l.Owner = true, v.owner
		}
	}
	for n, v := range d.recorded {
		l := get(n)
		l.Chain, l.Owner = true, v.owner
	}
	d.groups.mu.RLock()
	for n, lb := range d.groups.vnics {
		l := get(n)
		l.MAC = lb.MAC
		l.Tags = append(l.Tags, lb.Tags...)
		for _, a := range lb.Addresses {
			s := a.String()
			if a.IsSingleIP() {
				s = a.Addr().String()
			}
			l.Addresses = append(l.Addresses, s)
		}
	}
	d.groups.mu.RUnlock()
	out := make([]api.VNICLabels, 0, len(byName))
	for _, n := range sortedKeys(byName) {
		out = append(out, *byName[n])
	}
	return out
}

// writeFileAtomic replaces path with data (0600) in a directory it
// creates 0700 if missing.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(path, data, 0o600)
}
