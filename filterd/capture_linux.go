package filterd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// captureFilter is the filter a capture attaches (filters/mirror): its
// pcapng sink writes to the API stream.
const captureFilter = "mirror"

// captureParams maps the capture request's query to mirror parameters.
var captureParams = []string{"match", "proto", "port", "cidr", "snaplen", "sample", "rate"}

// streamWriter hands what the mirror writes to the HTTP response. Bytes
// written before start (the pcapng header, during the attach) are held,
// so a failed attach still answers with a clean error.
type streamWriter struct {
	mu      sync.Mutex
	w       http.ResponseWriter
	started bool
	closed  bool
	held    bytes.Buffer
}

func (s *streamWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return 0, errors.New("capture client gone")
	case !s.started:
		return s.held.Write(b)
	}
	n, err := s.w.Write(b)
	if err == nil {
		http.NewResponseController(s.w).Flush()
	}
	return n, err
}

func (s *streamWriter) start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.started = true
	_, _ = s.w.Write(s.held.Bytes())
	http.NewResponseController(s.w).Flush()
}

// Close ends the stream: later writes fail (the mirror counts them).
func (s *streamWriter) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

// handleCapture serves GET /v1/vnics/{vnic}/capture: a temporary mirror in
// the last slot of the vNIC's chain (a chain of its own if it has none)
// streams pcapng to the client until it goes away (or ?duration= ends).
func (d *Daemon) handleCapture(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("vnic")
	q := r.URL.Query()
	spec := api.FilterSpec{Name: captureFilter, Params: map[string]string{}, Directions: q.Get("direction")}
	for k, v := range q {
		switch {
		case k == "direction" || k == "duration":
		case len(v) == 1 && slices.Contains(captureParams, k):
			spec.Params[k] = v[0]
		default:
			replyErr(w, fmt.Errorf("%w: capture: unknown or repeated query parameter %q (known: direction, duration, %v)", ErrBadRequest, k, captureParams))
			return
		}
	}
	var until <-chan time.Time
	if s := q.Get("duration"); s != "" {
		dur, err := time.ParseDuration(s)
		if err != nil || dur <= 0 {
			replyErr(w, fmt.Errorf("%w: capture: duration %q: want a positive duration like 10s", ErrBadRequest, s))
			return
		}
		until = time.After(dur)
	}
	sw := &streamWriter{w: w}
	sink, unregister := sdk.RegisterStream(sw)
	defer unregister()
	spec.Params["sink"] = sink
	slot, created, err := d.attachCapture(r.Context(), name, spec)
	if err != nil {
		replyErr(w, err)
		return
	}
	defer func() {
		// Removing the mirror flushes what it holds into the stream;
		// only then is the stream closed.
		if err := d.endCapture(name, slot, created); err != nil {
			d.log.Error("end capture", "vnic", name, "slot", slot, "err", err)
		}
		sw.Close()
	}()
	w.Header().Set("Content-Type", "application/x-pcapng")
	w.Header().Set("X-Vnicfilter-Slot", strconv.Itoa(slot))
	w.WriteHeader(http.StatusOK)
	sw.start()
	d.log.Info("capture started", "vnic", name, "slot", slot, "params", spec.Params)
	select {
	case <-r.Context().Done():
	case <-until:
	case <-d.ctx.Done():
	}
	d.log.Info("capture ended", "vnic", name, "slot", slot)
}

// attachCapture puts the capture's mirror after the last filter of name's
// chain (so it sees what the chain lets through: what the VM receives,
// what leaves it), creating a chain if there is none.
func (d *Daemon) attachCapture(ctx context.Context, name string, spec api.FilterSpec) (slot int, created bool, err error) {
	if _, _, _, err := resolve(spec); err != nil {
		return 0, false, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.vnics[name]
	if !ok {
		n, err = d.setChainLocked(ctx, name, api.ChainRequest{Filters: []api.FilterSpec{spec}, Owner: "capture"})
		if err != nil {
			return 0, false, err
		}
		n.capture, n.slots[0].capture = true, true
		return 0, true, d.saveLocked()
	}
	slot = 0
	for i, in := range n.slots {
		if in != nil {
			slot = i + 1
		}
	}
	if slot >= sdk.MaxSlots {
		return 0, false, fmt.Errorf("%w: the chain of %s is full: no slot left for a capture", ErrSlotTaken, name)
	}
	in, err := d.newInstance(ctx, n.dp, slot, spec, false, n.owner)
	if err != nil {
		return 0, false, err
	}
	in.capture = true
	n.slots[slot] = in
	return slot, false, d.saveLocked()
}

// endCapture removes the capture's mirror (or its whole chain).
func (d *Daemon) endCapture(name string, slot int, created bool) error {
	d.mu.Lock()
	n, ok := d.vnics[name]
	if !ok || n.slots[slot] == nil || !n.slots[slot].capture {
		d.mu.Unlock()
		return nil // detached meanwhile
	}
	d.mu.Unlock()
	if created && n.capture {
		return d.Detach(context.Background(), name)
	}
	err := d.DetachSlot(context.Background(), name, slot)
	if errors.Is(err, datapath.ErrNotAttached) {
		return nil
	}
	return err
}
