package filterd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// movers returns the slots of name's chain whose filters carry movable
// state, holding the daemon lock only to look.
func (d *Daemon) movers(name string) (map[int]*instance, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.vnics[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, datapath.ErrNotAttached)
	}
	out := map[int]*instance{}
	for i, in := range n.slots {
		if in == nil {
			continue
		}
		if _, ok := in.fast.(sdk.StateMover); ok {
			out[i] = in
		}
	}
	return out, nil
}

// ExportState writes the bundle of name's movable state: one payload per
// slot whose filter implements sdk.StateMover (an empty bundle if none).
func (d *Daemon) ExportState(ctx context.Context, name string, w io.Writer) error {
	ms, err := d.movers(name)
	if err != nil {
		return err
	}
	start := time.Now()
	var parts []bundlePart
	for slot := range sdk.MaxSlots {
		in, ok := ms[slot]
		if !ok {
			continue
		}
		mv := in.fast.(sdk.StateMover)
		var buf bytes.Buffer
		if err := mv.ExportState(&buf); err != nil {
			return fmt.Errorf("export slot %d (%s) of %s: %w", slot, in.desc.Name, name, err)
		}
		parts = append(parts, bundlePart{bundleEntry: bundleEntry{Slot: slot, Filter: in.desc.Name, Version: in.desc.Version, Format: mv.StateFormat()}, data: buf.Bytes()})
	}
	if err := writeBundle(w, name, time.Now(), parts); err != nil {
		return err
	}
	d.log.Info("exported state", "vnic", name, "slots", len(parts), "took", time.Since(start))
	return nil
}

// ImportState reads a bundle exported for the same chain elsewhere and
// hands each payload to the filter in the same slot. The whole bundle is
// checked first (format, checksums, that every payload's filter sits in
// its slot here and can take it); a bad bundle changes nothing and the
// chain keeps enforcing its policy.
func (d *Daemon) ImportState(ctx context.Context, name string, b []byte) (*api.ImportResult, error) {
	h, parts, err := readBundle(b)
	if err != nil {
		return nil, err
	}
	ms, err := d.movers(name)
	if err != nil {
		return nil, err
	}
	for _, p := range parts {
		in, ok := ms[p.Slot]
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: slot %d holds %s state, but slot %d of %s has no filter that takes state", ErrBadBundle, p.Slot, p.Filter, p.Slot, name)
		case in.desc.Name != p.Filter:
			return nil, fmt.Errorf("%w: slot %d holds %s state, but slot %d of %s is %s", ErrBadBundle, p.Slot, p.Filter, p.Slot, name, in.desc.Name)
		case in.fast.(sdk.StateMover).StateFormat() != p.Format:
			return nil, fmt.Errorf("%w: slot %d: %s state format %d (from version %s), this %s %s reads format %d",
				ErrBadBundle, p.Slot, p.Filter, p.Format, p.Version, in.desc.Name, in.desc.Version, in.fast.(sdk.StateMover).StateFormat())
		}
	}
	start := time.Now()
	out := &api.ImportResult{VNIC: name, From: h.VNIC, ExportedAt: h.ExportedAt, Slots: []api.ImportedSlot{}}
	for _, p := range parts {
		in := ms[p.Slot]
		t0 := time.Now()
		n, err := in.fast.(sdk.StateMover).ImportState(bytes.NewReader(p.data))
		if err != nil {
			return nil, fmt.Errorf("import slot %d (%s) of %s after %d entries: %w", p.Slot, p.Filter, name, n, err)
		}
		out.Slots = append(out.Slots, api.ImportedSlot{Slot: p.Slot, Filter: p.Filter, Entries: n, Bytes: len(p.data), Seconds: time.Since(t0).Seconds()})
	}
	out.Seconds = time.Since(start).Seconds()
	d.log.Info("imported state", "vnic", name, "from", h.VNIC, "slots", len(out.Slots), "took", time.Since(start))
	return out, nil
}

func (d *Daemon) handleExportState(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := d.ExportState(r.Context(), r.PathValue("vnic"), &buf); err != nil {
		replyErr(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

func (d *Daemon) handleImportState(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBundle+1))
	if err != nil {
		replyErr(w, fmt.Errorf("%w: read body: %v", ErrBadRequest, err))
		return
	}
	out, err := d.ImportState(r.Context(), r.PathValue("vnic"), b)
	respond(w, out, err)
}
