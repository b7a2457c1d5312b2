package filterd

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// stateVersion is the version of state.json's format.
const stateVersion = 1

// state is filterd's desired state, saved after every change and
// reconciled with the pinned datapath at start.
type state struct {
	Version int                  `json:"version"`
	VNICs   map[string]stateVNIC `json:"vnics"`
	// Groups are the pushed host groups; Labels the vNICs' tags and
	// addresses (attached or not).
	Groups map[string][]netip.Prefix `json:"groups,omitempty"`
	Labels map[string]labels         `json:"labels,omitempty"`
}

type stateVNIC struct {
	Ifindex int         `json:"ifindex"`
	Owner   string      `json:"owner,omitempty"`
	Slots   []stateSlot `json:"slots"`
	// Capture: the chain exists only for a capture (vfctl capture); a
	// restart removes it.
	Capture bool `json:"capture,omitempty"`
}

type stateSlot struct {
	Slot   int            `json:"slot"`
	Filter api.FilterSpec `json:"filter"`
	// Capture: a capture's temporary mirror; a restart clears it (its
	// client is gone).
	Capture bool `json:"capture,omitempty"`
}

func (d *Daemon) statePath() string { return filepath.Join(d.cfg.StateDir, "state.json") }

func loadState(path string) (*state, error) {
	st := &state{Version: stateVersion, VNICs: map[string]stateVNIC{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("parse state %s: %w (move it aside to start empty; the pinned datapath is kept)", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("state %s: version %d, this filterd reads %d", path, st.Version, stateVersion)
	}
	if st.VNICs == nil {
		st.VNICs = map[string]stateVNIC{}
	}
	return st, nil
}

// saveLocked writes the state atomically (temp file, fsync, rename).
func (d *Daemon) saveLocked() error {
	st := state{Version: stateVersion, VNICs: map[string]stateVNIC{}}
	d.groups.mu.RLock()
	st.Groups, st.Labels = maps.Clone(d.groups.pushed), maps.Clone(d.groups.vnics)
	d.groups.mu.RUnlock()
	for name, n := range d.vnics {
		sv := stateVNIC{Ifindex: n.dp.Ifindex, Owner: n.owner, Slots: []stateSlot{}, Capture: n.capture}
		for i, in := range n.slots {
			if in != nil {
				sv.Slots = append(sv.Slots, stateSlot{Slot: i, Filter: in.spec, Capture: in.capture})
			}
		}
		st.VNICs[name] = sv
	}
	for name, n := range d.recorded {
		sv := stateVNIC{Owner: n.owner, Slots: []stateSlot{}}
		for i, f := range n.filters {
			sv.Slots = append(sv.Slots, stateSlot{Slot: i, Filter: f})
		}
		st.VNICs[name] = sv
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := d.statePath()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".state-*.json")
	if err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save state: %w", err)
	}
	return nil
}
