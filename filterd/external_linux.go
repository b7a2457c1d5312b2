package filterd

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// maxFilterBody bounds POST /v1/filters (an object plus its manifest).
const maxFilterBody = 32 << 20

// externalFilter remembers what a run-time filter was loaded from.
type externalFilter struct {
	manifest *sdk.Manifest
	// persisted is true when the filter came through the API and was
	// saved under StateDir/filters.d (so it is loaded again at start).
	persisted bool
	// sup runs the filter's slow-path process (nil: no slow path).
	sup *slowpath.Supervisor
}

// apiFiltersDir is where filters loaded through the API are saved.
func (d *Daemon) apiFiltersDir() string { return filepath.Join(d.cfg.StateDir, "filters.d") }

// loadExternalFilters registers every manifest in the filters directory and
// in the API's saved filters. A broken filter is logged and skipped; the
// others still load.
func (d *Daemon) loadExternalFilters() {
	for _, dir := range []string{d.cfg.FiltersDir, d.apiFiltersDir()} {
		if dir == "" {
			continue
		}
		names, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			d.log.Error("list external filters", "dir", dir, "err", err)
			continue
		}
		sort.Strings(names)
		for _, path := range names {
			fi, err := d.loadManifestFile(path, dir == d.apiFiltersDir())
			if err != nil {
				d.log.Error("load external filter", "manifest", path, "err", err)
				continue
			}
			d.log.Info("loaded external filter", "filter", fi.Name, "version", fi.Version, "manifest", path)
		}
	}
}

func (d *Daemon) loadManifestFile(path string, persisted bool) (*api.FilterInfo, error) {
	mb, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	m, err := sdk.ParseManifest(mb)
	if err != nil {
		return nil, err
	}
	var ob []byte
	if !m.SlowOnly() {
		if ob, err = os.ReadFile(filepath.Join(filepath.Dir(path), m.ObjectFile())); err != nil {
			return nil, fmt.Errorf("%w: filter %q: object: %v", sdk.ErrBadManifest, m.Name, err)
		}
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.registerLocked(m, ob, filepath.Dir(path), persisted)
}

// registerLocked checks the object against the manifest, has the verifier
// judge it once against scratch vNIC maps and registers the filter. On any
// error nothing is registered.
//
// A filter with a slow path has its process started (and its hello
// checked) here, so a broken program is refused at load, not at attach;
// dir is where a relative slowpath.command is found ("" allows absolute
// commands only).
func (d *Daemon) registerLocked(m *sdk.Manifest, object []byte, dir string, persisted bool) (_ *api.FilterInfo, err error) {
	var spec *ebpf.CollectionSpec
	if !m.SlowOnly() {
		if spec, err = ebpf.LoadCollectionSpecFromReader(bytes.NewReader(object)); err != nil {
			return nil, fmt.Errorf("%w: filter %q: object is not a usable eBPF ELF: %v", sdk.ErrBadManifest, m.Name, err)
		}
	}
	desc, err := m.Descriptor(spec)
	if err != nil {
		return nil, err
	}
	if _, err := sdk.Lookup(m.Name); err == nil {
		// Checked before loading, for a clear answer; RegisterExternal
		// checks again.
		return nil, sdk.RegisterExternal(desc)
	}
	if err := sdk.Verify(desc); err != nil {
		return nil, err
	}
	var sup *slowpath.Supervisor
	if m.SlowPath != nil {
		argv := append([]string(nil), m.SlowPath.Command...)
		if !filepath.IsAbs(argv[0]) {
			if dir == "" {
				return nil, fmt.Errorf("%w: filter %q: slowpath.command %q: a filter loaded through the API must name its program by absolute path", sdk.ErrBadManifest, m.Name, argv[0])
			}
			argv[0] = filepath.Join(dir, argv[0])
		}
		if sup, err = slowpath.NewSupervisor(m.Name, argv, dir, slowpath.SupervisorOptions{Logger: d.log}); err != nil {
			return nil, fmt.Errorf("%w: %v", sdk.ErrBadManifest, err)
		}
	}
	if err := sdk.RegisterExternal(desc); err != nil {
		if sup != nil {
			sup.Stop()
		}
		return nil, err
	}
	if d.external == nil {
		d.external = map[string]*externalFilter{}
	}
	d.external[m.Name] = &externalFilter{manifest: m, persisted: persisted, sup: sup}
	fi := filterInfo(desc)
	return &fi, nil
}

// LoadFilter registers an external fast-path filter given through the API
// and saves it so that it is loaded again when filterd restarts.
func (d *Daemon) LoadFilter(req api.LoadFilterRequest) (*api.FilterInfo, error) {
	if len(req.Manifest) == 0 {
		return nil, fmt.Errorf("%w: manifest is required", ErrBadRequest)
	}
	m, err := sdk.ParseManifest(req.Manifest)
	if err != nil {
		return nil, err
	}
	if len(req.Object) == 0 && !m.SlowOnly() {
		return nil, fmt.Errorf("%w: filter %q: the object is required (only a slow-path-only filter comes without one)", ErrBadRequest, m.Name)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	fi, err := d.registerLocked(m, req.Object, "", true)
	if err != nil {
		return nil, err
	}
	if err := d.saveFilter(m, req.Manifest, req.Object); err != nil {
		_ = sdk.Unregister(m.Name)
		if ef := d.external[m.Name]; ef != nil && ef.sup != nil {
			ef.sup.Stop()
		}
		delete(d.external, m.Name)
		return nil, fmt.Errorf("save filter %s: %w", m.Name, err)
	}
	d.log.Info("loaded external filter", "filter", m.Name, "version", m.Version, "source", "api")
	return fi, nil
}

// saveFilter writes NAME.json and NAME.o under the API's filters directory
// (the manifest's "object" field is dropped so two filters never share an
// object file name).
func (d *Daemon) saveFilter(m *sdk.Manifest, manifest, object []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(manifest, &fields); err != nil {
		return err
	}
	delete(fields, "object")
	mb, err := json.MarshalIndent(fields, "", "  ")
	if err != nil {
		return err
	}
	dir := d.apiFiltersDir()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if len(object) > 0 {
		if err := os.WriteFile(filepath.Join(dir, m.Name+".o"), object, 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, m.Name+".json"), mb, 0o600)
}

// UnloadFilter unregisters an external filter. It is refused while any
// chain uses the filter.
func (d *Daemon) UnloadFilter(name string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !sdk.IsExternal(name) {
		return sdk.Unregister(name) // refuses built-ins, names unknown ones
	}
	var users []string
	for _, vn := range sortedKeys(d.vnics) {
		for slot, in := range d.vnics[vn].slots {
			if in != nil && in.desc.Name == name {
				users = append(users, fmt.Sprintf("%s slot %d", vn, slot))
			}
		}
	}
	if len(users) > 0 {
		return fmt.Errorf("%w: %s is used by %s (detach it first)", sdk.ErrFilterInUse, name, strings.Join(users, ", "))
	}
	if err := sdk.Unregister(name); err != nil {
		return err
	}
	ef := d.external[name]
	delete(d.external, name)
	if ef != nil && ef.sup != nil {
		ef.sup.Stop()
	}
	if ef != nil && ef.persisted {
		dir := d.apiFiltersDir()
		_ = os.Remove(filepath.Join(dir, name+".json"))
		_ = os.Remove(filepath.Join(dir, name+".o"))
	}
	if ef != nil && !ef.persisted {
		d.log.Warn("unloaded a filter from the filters directory; it loads again at the next start unless removed from there", "filter", name)
	}
	d.log.Info("unloaded external filter", "filter", name)
	return nil
}

func filterInfo(f *sdk.Descriptor) api.FilterInfo {
	return api.FilterInfo{
		Name: f.Name, Version: f.Version, Summary: f.Summary, Directions: f.Dirs().String(),
		FailMode: f.FailMode.String(), FastPath: f.FastPath != nil, SlowPath: f.SlowPath != nil, Params: f.Params,
		External: sdk.IsExternal(f.Name),
	}
}

func (d *Daemon) handleLoadFilter(w http.ResponseWriter, r *http.Request) {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxFilterBody))
	dec.DisallowUnknownFields()
	var req api.LoadFilterRequest
	if err := dec.Decode(&req); err != nil {
		replyErr(w, fmt.Errorf("%w: request body: %v", ErrBadRequest, err))
		return
	}
	fi, err := d.LoadFilter(req)
	respond(w, fi, err)
}

func (d *Daemon) handleUnloadFilter(w http.ResponseWriter, r *http.Request) {
	respond(w, nil, d.UnloadFilter(r.PathValue("name")))
}

// externalErrorCode maps the external-filter errors to status and code.
func externalErrorCode(err error) (int, string, bool) {
	switch {
	case errors.Is(err, sdk.ErrABIMismatch):
		return http.StatusBadRequest, api.CodeABIMismatch, true
	case errors.Is(err, sdk.ErrVerifierRejected):
		return http.StatusBadRequest, api.CodeVerifierRejected, true
	case errors.Is(err, sdk.ErrBadManifest):
		return http.StatusBadRequest, api.CodeBadManifest, true
	case errors.Is(err, sdk.ErrFilterInUse):
		return http.StatusConflict, api.CodeFilterInUse, true
	}
	return 0, "", false
}
