package sdk

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// FastPath is one loaded instance of a filter's eBPF program.
type FastPath interface {
	// Program is the entry program filterd places in the chain slot.
	Program() *ebpf.Program
	// Counters reads the instance's own counters (nil if it has none).
	Counters() ([]Counter, error)
	io.Closer
}

// Counter is one value a filter reports; filterd shows it in `vfctl show`
// and exports it on /metrics as vnicfilter_filter_<Name>.
type Counter struct {
	// Name in Prometheus style: lower case, underscores, with a unit
	// suffix (packets_total, bytes_total).
	Name string `json:"name"`
	// Help is a one-line description.
	Help string `json:"help,omitempty"`
	// Labels distinguish series of the same name (e.g. direction).
	Labels map[string]string `json:"labels,omitempty"`
	// Value is the current value.
	Value float64 `json:"value"`
	// Gauge is true for values that go down as well as up.
	Gauge bool `json:"gauge,omitempty"`
}

// FastPathContext is what filterd hands a filter's FastPath function.
type FastPathContext struct {
	// Instance describes the vNIC, slot and parameters.
	Instance Instance
	// Adopt is true when filterd restarted and re-opens an instance that
	// is already running: Load then reuses the pinned maps (state and
	// counters survive) and the program stays as it is in the chain.
	Adopt bool
	// Logger is scoped to the instance.
	Logger *slog.Logger
	// Groups resolves the host's address groups (nil: the host keeps
	// none). A filter that uses it implements GroupUser and Reloader.
	Groups Groups
	// StateDir is filterd's state directory (--state-dir), where it keeps
	// the host-wide documents its API manages for filters — the encrypt
	// filter's peers and policy (PUT /v1/encrypt/peers, /v1/encrypt/policy)
	// in StateDir/encrypt. Empty outside filterd.
	StateDir string

	// Set by filterd.
	vnicMaps map[string]*ebpf.Map
	pinDir   string
	// reused: the instance's maps Load re-opened from their pins.
	reused map[string]bool
}

// NewFastPathContext is used by filterd to prepare a load: vnicMaps holds
// the vNIC's vf_chain, vf_slots and vf_stats maps; pinDir is where the
// instance's own maps are pinned (created if missing).
func NewFastPathContext(inst Instance, adopt bool, log *slog.Logger, vnicMaps map[string]*ebpf.Map, pinDir string) *FastPathContext {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &FastPathContext{Instance: inst, Adopt: adopt, Logger: log, vnicMaps: vnicMaps, pinDir: pinDir}
}

// PinDir is the bpffs directory holding the instance's own maps.
func (c *FastPathContext) PinDir() string { return c.pinDir }

// Reused reports whether Load re-opened the instance's map name from its
// pin (it holds what an earlier instance left there) rather than creating
// it empty. A filter that keeps tables in two halves uses it to know when
// both are empty without walking them.
func (c *FastPathContext) Reused(name string) bool { return c.reused[name] }

// Load loads spec for this instance and assigns its objects to "to" (a
// bpf2go *Objects struct, or any struct with `ebpf:"name"` tags, as for
// ebpf.Collection.Assign). The SDK maps are replaced by the vNIC's; every
// other map is the instance's own: re-opened from its pin when one exists
// (so state survives filterd restarts), otherwise created and pinned.
func (c *FastPathContext) Load(spec *ebpf.CollectionSpec, to any) error {
	spec = spec.Copy()
	if v, ok := spec.Variables[VarIfindex]; ok {
		if err := v.Set(uint32(c.Instance.VNIC.Ifindex)); err != nil {
			return fmt.Errorf("set %s: %w", VarIfindex, err)
		}
	}
	if v, ok := spec.Variables[VarDirs]; ok {
		dirs := c.Instance.Directions
		if dirs == 0 {
			dirs = DirBoth
		}
		if err := v.Set(uint32(dirs)); err != nil {
			return fmt.Errorf("set %s: %w", VarDirs, err)
		}
	}
	repl := map[string]*ebpf.Map{}
	var own []string
	for name, ms := range spec.Maps {
		if m, ok := c.vnicMaps[name]; ok {
			repl[name] = m
			continue
		}
		if isSectionMap(name) {
			continue
		}
		if c.pinDir != "" {
			pinned, err := ebpf.LoadPinnedMap(filepath.Join(c.pinDir, name), nil)
			switch {
			case err == nil:
				if err := ms.Compatible(pinned); err != nil {
					pinned.Close()
					return fmt.Errorf("pinned map %s of %s does not fit this filter version (detach and attach again to reset its state): %w", name, c.pinDir, err)
				}
				repl[name] = pinned
				defer pinned.Close()
				if c.reused == nil {
					c.reused = map[string]bool{}
				}
				c.reused[name] = true
				continue
			case !errors.Is(err, os.ErrNotExist):
				return fmt.Errorf("open pinned map %s: %w", name, err)
			}
		}
		own = append(own, name)
	}
	for _, name := range []string{MapChain, MapSlots, MapStats} {
		if _, ok := spec.Maps[name]; ok {
			if _, ok := repl[name]; !ok {
				return fmt.Errorf("sdk map %s not provided by filterd", name)
			}
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: repl})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load program: %w (verifier log: %+v)", err, ve)
		}
		return fmt.Errorf("load program: %w", err)
	}
	defer coll.Close()
	if c.pinDir != "" && len(own) > 0 {
		if err := os.MkdirAll(c.pinDir, 0o700); err != nil {
			return fmt.Errorf("create pin directory: %w", err)
		}
		for _, name := range own {
			if err := coll.Maps[name].Pin(filepath.Join(c.pinDir, name)); err != nil {
				return fmt.Errorf("pin map %s: %w", name, err)
			}
		}
	}
	if err := coll.Assign(to); err != nil {
		return fmt.Errorf("assign objects: %w", err)
	}
	return nil
}

// isSectionMap reports the maps the loader makes from ELF data sections
// (.rodata, .data, .bss): they are per-load and never pinned.
func isSectionMap(name string) bool {
	return len(name) > 0 && name[0] == '.'
}

// SumPerCPU adds up a per-CPU array's counters at key: packets, bytes.
func SumPerCPU(m *ebpf.Map, key uint32) (packets, bytes uint64, err error) {
	var vals []struct{ Packets, Bytes uint64 }
	if err := m.Lookup(key, &vals); err != nil {
		return 0, 0, err
	}
	for _, v := range vals {
		packets += v.Packets
		bytes += v.Bytes
	}
	return packets, bytes, nil
}
