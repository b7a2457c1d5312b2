package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
)

// ErrBadManifest: an external filter's manifest or object is unusable (bad
// JSON, unknown field, missing program or map, bad parameter schema).
var ErrBadManifest = errors.New("bad filter manifest")

// ErrExternalSlowPath: the filter's slow path runs in its own process,
// started by filterd from the manifest, not in the calling process.
var ErrExternalSlowPath = errors.New("slow path runs as an external process (started by filterd)")

// ErrVerifierRejected: the kernel's verifier refused a filter's program.
var ErrVerifierRejected = errors.New("rejected by the eBPF verifier")

// ErrFilterInUse: a filter cannot be unloaded while a chain uses it.
var ErrFilterInUse = errors.New("filter in use")

// ParamVarPrefix prefixes the `volatile const` an external fast-path
// filter declares for each of its parameters: parameter min_ttl is set at
// load time in the program's rodata variable param_min_ttl.
const ParamVarPrefix = "param_"

// Manifest describes an external fast-path filter: an eBPF object built
// against sdk/bpf/vnicfilter.h, shipped as <name>.o with <name>.json beside
// it. See docs/sdk.md.
type Manifest struct {
	// Name, Version and Summary as in Descriptor.
	Name    string `json:"name"`
	Version string `json:"version"`
	Summary string `json:"summary,omitempty"`
	// ABI is the slot ABI the object was built for (VF_ABI_VERSION); it
	// must equal ABIVersion.
	ABI int `json:"abi"`
	// Directions: "both" (default), "from-vm" or "to-vm".
	Directions string `json:"directions,omitempty"`
	// FailMode: "closed" (default) or "open".
	FailMode string `json:"failmode,omitempty"`
	// Object is the eBPF object's file name, relative to the manifest;
	// <name>.o when empty.
	Object string `json:"object,omitempty"`
	// Program is the entry program (the VF_FILTER name) in the object.
	Program string `json:"program"`
	// Params is the parameter schema. Only int and bool parameters are
	// accepted: each sets the object's `volatile const` param_<name>.
	Params []ParamSpec `json:"params,omitempty"`
	// SlowPath, when set, gives the filter a slow path that runs as its
	// own process (package sdk/slowproc). Without Object and Program the
	// filter is slow-path only: filterd's punt-all program sits in the
	// slot and every frame goes to the process.
	SlowPath *ManifestSlowPath `json:"slowpath,omitempty"`
	// Counters names per-CPU array maps of the object exposed as counters:
	// values of struct vf_counter (<map>_packets_total, <map>_bytes_total)
	// or __u64 (<map>_total), one series per key.
	Counters []string `json:"counters,omitempty"`
}

// ManifestSlowPath is how filterd starts an external slow-path process.
type ManifestSlowPath struct {
	// Command is the program and its arguments. A relative program is
	// found beside the manifest (and the process runs there); filters
	// loaded through the API must name an absolute path.
	Command []string `json:"command"`
}

// SlowOnly reports whether the filter has a slow path and no eBPF object.
func (m *Manifest) SlowOnly() bool {
	return m.SlowPath != nil && m.Program == "" && m.Object == ""
}

// ParseManifest decodes and validates a manifest. Unknown fields are
// refused so a typo never silently drops a setting.
func ParseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadManifest, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadManifest)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest on its own (not against its object).
func (m *Manifest) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: filter %q: %s", ErrBadManifest, m.Name, fmt.Sprintf(format, a...))
	}
	if !nameRE.MatchString(m.Name) {
		return bad("name: want lower case letters, digits and dashes, at most 31")
	}
	if m.ABI != ABIVersion {
		return fmt.Errorf("filter %q: %w: built for ABI %d, filterd speaks %d", m.Name, ErrABIMismatch, m.ABI, ABIVersion)
	}
	if m.Version == "" {
		return bad("version is missing")
	}
	if m.SlowPath != nil {
		if len(m.SlowPath.Command) == 0 || m.SlowPath.Command[0] == "" {
			return bad("slowpath.command is empty: name the filter process's program")
		}
	}
	if m.Program == "" && !m.SlowOnly() {
		return bad("program (the entry program's name in the object) is missing")
	}
	if strings.ContainsAny(m.Object, "/\\") {
		return bad("object %q: want a file name beside the manifest", m.Object)
	}
	if _, err := ParseDirections(m.Directions); err != nil {
		return bad("%v", err)
	}
	if m.FailMode != "" {
		if _, err := ParseFailMode(m.FailMode); err != nil {
			return bad("%v", err)
		}
	}
	for _, p := range m.Params {
		if !m.SlowOnly() && p.Type != Int && p.Type != Bool {
			return bad("parameter %q: type %s not supported for fast-path filters (int and bool only)", p.Name, p.Type)
		}
	}
	seen := map[string]bool{}
	for _, c := range m.Counters {
		if c == "" || seen[c] {
			return bad("counter map name %q empty or repeated", c)
		}
		seen[c] = true
	}
	if m.SlowOnly() && len(m.Counters) > 0 {
		return bad("counters name maps of an eBPF object, and this slow-path-only filter has none (report counters from the process: sdk.SlowCounters)")
	}
	d := &Descriptor{Name: m.Name, Params: m.Params, FastPath: func(*FastPathContext) (FastPath, error) { return nil, nil }}
	if err := d.Validate(); err != nil {
		return bad("%v", err)
	}
	return nil
}

// CheckObject checks that spec holds what the manifest names: the program
// (a tc classifier), the counter maps and a param_<name> variable of a
// fitting size for every parameter.
func (m *Manifest) CheckObject(spec *ebpf.CollectionSpec) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: filter %q: %s", ErrBadManifest, m.Name, fmt.Sprintf(format, a...))
	}
	p, ok := spec.Programs[m.Program]
	if !ok {
		return bad("object has no program %q (has: %s)", m.Program, strings.Join(keys(spec.Programs), ", "))
	}
	if p.Type != ebpf.SchedCLS {
		return bad("program %q is %s, want a tc classifier (VF_FILTER)", m.Program, p.Type)
	}
	for _, c := range m.Counters {
		ms, ok := spec.Maps[c]
		if !ok {
			return bad("object has no counter map %q", c)
		}
		if ms.Type != ebpf.PerCPUArray || (ms.ValueSize != 16 && ms.ValueSize != 8) {
			return bad("counter map %q: want a PERCPU_ARRAY of struct vf_counter or __u64", c)
		}
	}
	for _, name := range []string{MapChain, MapSlots, MapStats} {
		if ms, ok := spec.Maps[name]; ok && ms.Pinning != ebpf.PinNone {
			return bad("map %s must not be pinned", name)
		}
	}
	for _, ps := range m.Params {
		v, ok := spec.Variables[ParamVarPrefix+ps.Name]
		if !ok {
			return bad("parameter %q: object has no `volatile const` %s%s", ps.Name, ParamVarPrefix, ps.Name)
		}
		if !v.Constant() {
			return bad("parameter %q: %s%s must be `volatile const`", ps.Name, ParamVarPrefix, ps.Name)
		}
		if s := v.Size(); s != 1 && s != 2 && s != 4 && s != 8 {
			return bad("parameter %q: %s%s is %d bytes, want 1, 2, 4 or 8", ps.Name, ParamVarPrefix, ps.Name, s)
		}
	}
	return nil
}

// ObjectFile is the object's file name beside the manifest.
func (m *Manifest) ObjectFile() string {
	if m.Object != "" {
		return m.Object
	}
	return m.Name + ".o"
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// Descriptor builds the filter's descriptor: its FastPath sets the
// parameters and loads spec through FastPathContext.Load, so the SDK maps
// are the vNIC's and the filter's own maps are pinned per instance exactly
// as for built-in filters.
//
// A filter with a slow path (m.SlowPath) gets a SlowPath function that
// only reports ErrExternalSlowPath: filterd runs such slow paths in the
// filter's own process. For a slow-path-only filter spec is nil and the
// descriptor has no FastPath.
func (m *Manifest) Descriptor(spec *ebpf.CollectionSpec) (*Descriptor, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	dirs, _ := ParseDirections(m.Directions)
	var fm FailMode
	if m.FailMode != "" {
		fm, _ = ParseFailMode(m.FailMode)
	}
	d := &Descriptor{
		Name: m.Name, Version: m.Version, Summary: m.Summary, ABI: m.ABI,
		Directions: dirs, FailMode: fm, Params: m.Params,
	}
	if m.SlowPath != nil {
		name := m.Name
		d.SlowPath = func(*SlowPathContext) (SlowPath, error) {
			return nil, fmt.Errorf("filter %s: %w", name, ErrExternalSlowPath)
		}
	}
	if m.SlowOnly() {
		return d, nil
	}
	if spec == nil {
		return nil, fmt.Errorf("%w: filter %q: no eBPF object", ErrBadManifest, m.Name)
	}
	if err := m.CheckObject(spec); err != nil {
		return nil, err
	}
	spec = spec.Copy()
	man := *m
	d.FastPath = func(ctx *FastPathContext) (FastPath, error) { return man.load(ctx, spec) }
	return d, nil
}

// objectsType is a struct type with one `ebpf:"name"` field per object
// FastPathContext.Load must hand back: the program, then the counter maps.
func (m *Manifest) objectsType() reflect.Type {
	fields := []reflect.StructField{{Name: "P", Type: reflect.TypeFor[*ebpf.Program](), Tag: reflect.StructTag(`ebpf:"` + m.Program + `"`)}}
	for i, c := range m.Counters {
		fields = append(fields, reflect.StructField{Name: fmt.Sprintf("M%d", i), Type: reflect.TypeFor[*ebpf.Map](), Tag: reflect.StructTag(`ebpf:"` + c + `"`)})
	}
	return reflect.StructOf(fields)
}

func (m *Manifest) load(ctx *FastPathContext, spec *ebpf.CollectionSpec) (FastPath, error) {
	spec = spec.Copy()
	for _, ps := range m.Params {
		v := spec.Variables[ParamVarPrefix+ps.Name]
		n := ctx.Instance.Params.Int(ps.Name)
		if ps.Type == Bool && ctx.Instance.Params.Bool(ps.Name) {
			n = 1
		}
		var val any
		switch v.Size() {
		case 1:
			val = uint8(n)
		case 2:
			val = uint16(n)
		case 4:
			val = uint32(n)
		default:
			val = uint64(n)
		}
		if err := v.Set(val); err != nil {
			return nil, fmt.Errorf("%s: set parameter %s: %w", m.Name, ps.Name, err)
		}
	}
	objs := reflect.New(m.objectsType())
	if err := ctx.Load(spec, objs.Interface()); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	fp := &manifestFastPath{m: m, prog: objs.Elem().Field(0).Interface().(*ebpf.Program)}
	for i := range m.Counters {
		fp.maps = append(fp.maps, objs.Elem().Field(i+1).Interface().(*ebpf.Map))
	}
	return fp, nil
}

type manifestFastPath struct {
	m    *Manifest
	prog *ebpf.Program
	maps []*ebpf.Map
}

func (f *manifestFastPath) Program() *ebpf.Program { return f.prog }

func (f *manifestFastPath) Counters() ([]Counter, error) {
	var out []Counter
	for i, mp := range f.maps {
		name := f.m.Counters[i]
		n := mp.MaxEntries()
		for k := uint32(0); k < n; k++ {
			var labels map[string]string
			if n > 1 {
				labels = map[string]string{"key": strconv.Itoa(int(k))}
			}
			if mp.ValueSize() == 8 {
				var vals []uint64
				if err := mp.Lookup(k, &vals); err != nil {
					return nil, fmt.Errorf("read %s: %w", name, err)
				}
				var sum uint64
				for _, v := range vals {
					sum += v
				}
				out = append(out, Counter{Name: name + "_total", Labels: labels, Value: float64(sum)})
				continue
			}
			p, b, err := SumPerCPU(mp, k)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", name, err)
			}
			out = append(out,
				Counter{Name: name + "_packets_total", Labels: labels, Value: float64(p)},
				Counter{Name: name + "_bytes_total", Labels: labels, Value: float64(b)})
		}
	}
	return out, nil
}

func (f *manifestFastPath) Close() error {
	err := f.prog.Close()
	for _, mp := range f.maps {
		err = errors.Join(err, mp.Close())
	}
	return err
}

// VerifierSummary shortens a verifier rejection to its first and last
// lines (the cause is usually at the end); other errors pass unchanged.
func VerifierSummary(err error) error {
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) {
		return err
	}
	lines := ve.Log
	if len(lines) > 6 {
		lines = append(append(append([]string{}, lines[:2]...), "..."), lines[len(lines)-4:]...)
	}
	return fmt.Errorf("%w: %v: %s", ErrVerifierRejected, ve.Cause, strings.Join(lines, " | "))
}

var external = map[string]bool{}

// RegisterExternal registers a filter loaded at run time (from a manifest).
// Unlike Register it returns an error instead of panicking.
func RegisterExternal(d *Descriptor) error {
	if err := d.Validate(); err != nil {
		return err
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.m == nil {
		registry.m = map[string]*Descriptor{}
	}
	if _, dup := registry.m[d.Name]; dup {
		what := "a built-in filter"
		if external[d.Name] {
			what = "an external filter (unload it first)"
		}
		return fmt.Errorf("%w: filter %q already registered as %s", ErrBadManifest, d.Name, what)
	}
	registry.m[d.Name] = d
	external[d.Name] = true
	return nil
}

// Unregister removes an external filter. Built-in filters cannot be
// unregistered.
func Unregister(name string) error {
	registry.Lock()
	defer registry.Unlock()
	if _, ok := registry.m[name]; !ok {
		return fmt.Errorf("%w %q", ErrUnknownFilter, name)
	}
	if !external[name] {
		return fmt.Errorf("%w: %q is built in and cannot be unloaded", ErrInvalidParam, name)
	}
	delete(registry.m, name)
	delete(external, name)
	return nil
}

// IsExternal reports whether name was registered with RegisterExternal.
func IsExternal(name string) bool {
	registry.RLock()
	defer registry.RUnlock()
	return external[name]
}

// ScratchVNICMaps creates a throw-away set of the per-vNIC maps filterd
// provides (vf_chain, vf_slots, vf_stats), for verifying a filter before any
// vNIC uses it and for tests. Close them when done.
func ScratchVNICMaps() (map[string]*ebpf.Map, error) {
	specs := map[string]*ebpf.MapSpec{
		MapChain: {Name: MapChain, Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: NumDirections * MaxSlots},
		MapSlots: {Name: MapSlots, Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: NumDirections * MaxSlots},
		MapStats: {Name: MapStats, Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 16, MaxEntries: NumStatKeys},
	}
	out := map[string]*ebpf.Map{}
	for name, s := range specs {
		m, err := ebpf.NewMap(s)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, fmt.Errorf("create scratch %s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

// ExampleParams returns parameter values that satisfy specs: defaults, and
// for required parameters without one their minimum (or 0 / false).
func ExampleParams(specs []ParamSpec) (Params, error) {
	raw := map[string]string{}
	for _, s := range specs {
		if !s.Required || s.Default != "" {
			continue
		}
		switch {
		case s.Type == Bool:
			raw[s.Name] = "false"
		case s.Min != nil:
			raw[s.Name] = strconv.Itoa(int(*s.Min))
		case s.Max != nil && *s.Max < 0:
			raw[s.Name] = strconv.Itoa(int(*s.Max))
		default:
			raw[s.Name] = "0"
		}
	}
	return ValidateParams(specs, raw)
}

// Verify loads the filter once against scratch vNIC maps, with example
// parameters and nothing pinned, so a verifier rejection is found when the
// filter is registered rather than when a vNIC first uses it. The error
// carries the first and last lines of the verifier's log.
func Verify(d *Descriptor) error {
	if d.FastPath == nil {
		return nil
	}
	maps, err := ScratchVNICMaps()
	if err != nil {
		return err
	}
	defer func() {
		for _, m := range maps {
			m.Close()
		}
	}()
	params, err := ExampleParams(d.Params)
	if err != nil {
		return fmt.Errorf("filter %s: %w", d.Name, err)
	}
	inst := Instance{VNIC: VNIC{Name: "scratch", Ifindex: 1}, Directions: d.Dirs(), FailMode: d.FailMode, Params: params}
	fp, err := d.FastPath(NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		return fmt.Errorf("filter %s: %w", d.Name, VerifierSummary(err))
	}
	return fp.Close()
}
