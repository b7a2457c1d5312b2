package filterd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
	parts, err := d.exportParts(ctx, name, 0)
	if err != nil {
		return err
	}
	return writeBundle(w, name, time.Now(), parts)
}

// exportBundle returns a bundle as its prefix and payloads, to be written
// without copying them together.
func (d *Daemon) exportBundle(ctx context.Context, name string, since time.Duration) (pre []byte, parts []bundlePart, size int, err error) {
	if parts, err = d.exportParts(ctx, name, since); err != nil {
		return nil, nil, 0, err
	}
	if pre, err = bundlePrefix(name, time.Now(), parts); err != nil {
		return nil, nil, 0, err
	}
	size = len(pre)
	for _, p := range parts {
		size += len(p.data)
	}
	return pre, parts, size, nil
}

// exportParts has every slot whose filter carries movable state export it:
// everything, or with since > 0 what was touched within since where the
// filter can tell (sdk.StateDeltaExporter).
func (d *Daemon) exportParts(ctx context.Context, name string, since time.Duration) ([]bundlePart, error) {
	ms, err := d.movers(name)
	if err != nil {
		return nil, err
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
		export := mv.ExportState
		if dx, ok := mv.(sdk.StateDeltaExporter); ok && since > 0 {
			export = func(w io.Writer) error { return dx.ExportStateSince(w, since) }
		}
		if err := export(&buf); err != nil {
			return nil, fmt.Errorf("export slot %d (%s) of %s: %w", slot, in.desc.Name, name, err)
		}
		parts = append(parts, bundlePart{bundleEntry: bundleEntry{Slot: slot, Filter: in.desc.Name, Version: in.desc.Version, Format: mv.StateFormat()}, data: buf.Bytes()})
	}
	d.log.Info("exported state", "vnic", name, "slots", len(parts), "took", time.Since(start))
	return parts, nil
}

// writeExport answers with name's bundle, its length known up front so
// that the reader allocates once.
func (d *Daemon) writeExport(w http.ResponseWriter, r *http.Request, name string, header map[string]string) {
	pre, parts, size, err := d.exportBundle(r.Context(), name, 0)
	if err != nil {
		replyErr(w, err)
		return
	}
	for k, v := range header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(size))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(pre); err != nil {
		return
	}
	for _, p := range parts {
		if _, err := w.Write(p.data); err != nil {
			return
		}
	}
}

// readBundleBody reads a request's bundle, in one allocation when its
// length is known.
func readBundleBody(r *http.Request) ([]byte, error) {
	if n := r.ContentLength; n > 0 && n <= maxBundle {
		b := make([]byte, n)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			return nil, fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
		}
		return b, nil
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read body: %v", ErrBadRequest, err)
	}
	return b, nil
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
	d.writeExport(w, r, r.PathValue("vnic"), nil)
}

func (d *Daemon) handleImportState(w http.ResponseWriter, r *http.Request) {
	b, err := readBundleBody(r)
	if err != nil {
		replyErr(w, err)
		return
	}
	out, err := d.ImportState(r.Context(), r.PathValue("vnic"), b)
	respond(w, out, err)
}
