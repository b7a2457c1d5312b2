package manager

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/model"
)

// desired answers GET …/desired for host: the desired state as one JSON
// object, or with ?watch=true a stream of api.WatchEvent lines
// (application/x-ndjson) that stays open:
//
//   - first "state" (the full desired state), or "current" when the
//     client's ?since= version is the host's current version;
//   - then "changes" whenever the host's desired state changes: the
//     vNICs added or changed and the names of those removed, relative to
//     the previous event;
//   - "ping" lines every PingInterval keep proxies and the client's
//     liveness check happy.
//
// A client that reconnects with the last version it saw catches up with
// one event; versions are store revisions and survive manager restarts.
func (s *Server) desired(w http.ResponseWriter, r *http.Request, host string) error {
	snap := s.view.snapshot()
	if _, ok := snap.cfg.Hosts[host]; !ok {
		return notFound("no host %q", host)
	}
	cur := snap.desired[host]
	q := r.URL.Query()
	if q.Get("watch") != "true" {
		return writeJSON(w, http.StatusOK, cur)
	}
	var since int64 = -1
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return badRequest("since=%q: want a version number", v)
		}
		since = n
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		return badRequest("streaming not supported on this connection")
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		s.mu.Lock()
		s.streams[host]++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.streams[host]--
			s.mu.Unlock()
		}()
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	send := func(ev api.WatchEvent) bool {
		if err := enc.Encode(ev); err != nil {
			return false
		}
		flusher.Flush()
		return true
	}
	first := api.WatchEvent{Type: api.EventState, Version: cur.Version, State: &cur}
	if since == cur.Version {
		first = api.WatchEvent{Type: api.EventCurrent, Version: cur.Version}
	}
	if !send(first) {
		return nil
	}
	ping := time.NewTicker(s.ping)
	defer ping.Stop()
	changed := snap.changed
	for {
		select {
		case <-r.Context().Done():
			return nil
		case <-ping.C:
			if !send(api.WatchEvent{Type: api.EventPing, Version: cur.Version}) {
				return nil
			}
		case <-changed:
			snap = s.view.snapshot()
			changed = snap.changed
			if _, ok := snap.cfg.Hosts[host]; !ok {
				return nil // host removed: its agent may no longer listen
			}
			next := snap.desired[host]
			if next.Version == cur.Version {
				continue
			}
			ev := diff(cur, next)
			cur = next
			if !send(ev) {
				return nil
			}
		}
	}
}

// diff is the "changes" event taking prev to next.
func diff(prev, next api.HostDesired) api.WatchEvent {
	ev := api.WatchEvent{Type: api.EventChanges, Version: next.Version}
	old := map[string]string{}
	for _, v := range prev.VNICs {
		old[v.VNIC] = vnicKey(v)
	}
	for _, v := range next.VNICs {
		if o, ok := old[v.VNIC]; !ok || o != vnicKey(v) {
			ev.Upsert = append(ev.Upsert, v)
			for _, f := range v.Chain {
				if _, sent := prev.Documents[f.PolicyRef]; f.PolicyRef != "" && !sent {
					if ev.Documents == nil {
						ev.Documents = map[string]json.RawMessage{}
					}
					ev.Documents[f.PolicyRef] = next.Documents[f.PolicyRef]
				}
			}
		}
		delete(old, v.VNIC)
	}
	for _, v := range prev.VNICs {
		if _, gone := old[v.VNIC]; gone {
			ev.Remove = append(ev.Remove, v.VNIC)
		}
	}
	if model.HostDocsKey(prev.HostDocs) != model.HostDocsKey(next.HostDocs) {
		docs := next.HostDocs
		ev.HostDocs = &docs
	}
	return ev
}

// vnicKey identifies a desired vNIC entry; its chain counts by its hash.
func vnicKey(v api.DesiredVNIC) string {
	return fmt.Sprintf("%s\x00%s\x00%q\x00%s\x00%s", v.VM, v.MAC, v.Policies, v.Hash, v.Error)
}
