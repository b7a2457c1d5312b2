package manager

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/manager/model"
	"github.com/vnicfilter/vnicfilter/manager/store"
)

// Store key layout. Everything under cfgPrefix is configuration: a change
// there recomputes desired state.
const (
	cfgPrefix         = "cfg/"
	keyGuard          = "cfg/guard" // written by every validated config change
	prefixHosts       = "cfg/hosts/"
	prefixInventory   = "cfg/inventory/"
	prefixTags        = "cfg/tags/"
	prefixGroups      = "cfg/groups/"
	prefixPolicies    = "cfg/policies/"
	prefixAssignments = "cfg/assignments/"
	prefixSegments    = "cfg/segments/"
	prefixEncryptions = "cfg/encryptions/"
	prefixRealized    = "status/realized/"
	prefixCounters    = "status/counters/" // the agents' counters, read from the store when asked
	prefixDesiredVer  = "status/desired/"  // {version, hash} of each host's desired state
	prefixTokens      = "auth/tokens/"
	prefixJoin        = "auth/join/"
)

// desiredVersion is stored per host so that versions survive restarts
// and agree between manager instances: a host whose desired state did not
// change keeps its version.
type desiredVersion struct {
	Version int64  `json:"version"`
	Hash    string `json:"hash"`
}

// view is the manager's in-memory copy of the store, kept current by one
// watch, with the configuration decoded and every host's desired state
// computed at the view's revision.
type view struct {
	st  store.Store
	log *slog.Logger

	mu       sync.RWMutex
	rev      int64
	kvs      map[string]store.KV
	cfg      *model.Config
	guardRev int64
	resolver *model.Resolver
	desired  map[string]api.HostDesired
	hashes   map[string]string
	// changed is closed and replaced after every revision applied.
	changed chan struct{}
	// ready is closed once the first List is applied.
	ready chan struct{}
	// persist carries desired-version writes, in order, to one writer.
	persist chan []store.Op
	err     error
}

func newView(st store.Store, log *slog.Logger) *view {
	return &view{st: st, log: log, kvs: map[string]store.KV{}, cfg: model.New(), desired: map[string]api.HostDesired{},
		hashes: map[string]string{}, changed: make(chan struct{}), ready: make(chan struct{}), persist: make(chan []store.Op, 64)}
}

// run keeps the view current until ctx ends: List, then Watch from the
// List's revision; a compacted or broken watch starts over.
func (v *view) run(ctx context.Context) {
	go v.persistVersions(ctx)
	first := true
	for ctx.Err() == nil {
		kvs, rev, err := v.st.List(ctx, "")
		if err != nil {
			v.log.Error("list store", "err", err)
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		m := make(map[string]store.KV, len(kvs))
		for _, kv := range kvs {
			m[kv.Key] = kv
		}
		v.mu.Lock()
		v.kvs = m
		v.applyLocked(rev, true)
		v.mu.Unlock()
		if first {
			close(v.ready)
			first = false
		}
		for r := range v.st.Watch(ctx, "", rev) {
			if r.Err != nil {
				if !errors.Is(r.Err, store.ErrClosed) {
					v.log.Warn("store watch ended; re-listing", "err", r.Err)
				}
				break
			}
			v.mu.Lock()
			cfgChanged := false
			for _, e := range r.Events {
				if e.Delete {
					delete(v.kvs, e.Key)
				} else {
					v.kvs[e.Key] = store.KV{Key: e.Key, Value: e.Value, ModRev: r.Rev}
				}
				cfgChanged = cfgChanged || strings.HasPrefix(e.Key, cfgPrefix)
			}
			v.applyLocked(r.Rev, cfgChanged)
			v.mu.Unlock()
		}
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(d):
		return true
	}
}

// applyLocked moves the view to rev; when configuration changed it
// decodes it again and recomputes desired state, versioning each host
// whose state changed with rev.
func (v *view) applyLocked(rev int64, cfgChanged bool) {
	v.rev = rev
	if cfgChanged {
		v.cfg = decodeConfig(v.kvs, rev, v.log)
		v.guardRev = v.kvs[keyGuard].ModRev
		v.resolver = v.cfg.Resolve()
		desired := v.cfg.Desired()
		var persist []store.Op
		for h, d := range desired {
			hash := model.StateHash(d)
			var stored desiredVersion
			if kv, ok := v.kvs[prefixDesiredVer+h]; ok {
				_ = json.Unmarshal(kv.Value, &stored)
			}
			switch {
			case stored.Hash == hash:
				d.Version = stored.Version
			case v.hashes[h] == hash:
				d.Version = v.desired[h].Version
			default:
				d.Version = rev
			}
			if stored.Hash != hash || stored.Version != d.Version {
				data, _ := json.Marshal(desiredVersion{Version: d.Version, Hash: hash})
				persist = append(persist, store.Put(prefixDesiredVer+h, data))
			}
			desired[h] = d
			v.hashes[h] = hash
		}
		for h := range v.hashes {
			if _, ok := desired[h]; !ok {
				delete(v.hashes, h)
			}
		}
		v.desired = desired
		if len(persist) > 0 {
			// Written outside the lock, in order; it comes back through
			// the watch. When the writer lags this far behind, the batch
			// is dropped: the next change writes the versions again, and
			// a version that was not stored only costs an agent one full
			// state after a restart.
			select {
			case v.persist <- persist:
			default:
				v.log.Warn("desired versions not persisted: writer behind")
			}
		}
	}
	close(v.changed)
	v.changed = make(chan struct{})
}

// persistVersions writes desired-version batches in the order they were
// computed, so a stored version never goes back.
func (v *view) persistVersions(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ops := <-v.persist:
			if _, err := v.st.Txn(ctx, nil, ops); err != nil && ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
				v.log.Warn("persist desired versions", "err", err)
			}
		}
	}
}

// decodeConfig builds the Config from the stored keys. A value that does
// not decode (written by a newer manager?) is logged and skipped.
func decodeConfig(kvs map[string]store.KV, rev int64, log *slog.Logger) *model.Config {
	c := model.New()
	c.Rev = rev
	for k, kv := range kvs {
		var err error
		switch {
		case strings.HasPrefix(k, prefixHosts):
			var h api.Host
			if err = json.Unmarshal(kv.Value, &h); err == nil {
				c.Hosts[h.Name] = h
			}
		case strings.HasPrefix(k, prefixInventory):
			var inv api.Inventory
			if err = json.Unmarshal(kv.Value, &inv); err == nil {
				c.Inventory[strings.TrimPrefix(k, prefixInventory)] = inv
			}
		case strings.HasPrefix(k, prefixTags):
			var t api.Tags
			if err = json.Unmarshal(kv.Value, &t); err == nil {
				c.Tags[strings.TrimPrefix(k, prefixTags)] = t
			}
		case strings.HasPrefix(k, prefixGroups):
			err = decodeNamed(c.Groups, kv, func(o *api.Group) (string, *int64) { return o.Name, &o.Revision })
		case strings.HasPrefix(k, prefixPolicies):
			err = decodeNamed(c.Policies, kv, func(o *api.Policy) (string, *int64) { return o.Name, &o.Revision })
		case strings.HasPrefix(k, prefixAssignments):
			err = decodeNamed(c.Assignments, kv, func(o *api.Assignment) (string, *int64) { return o.Name, &o.Revision })
		case strings.HasPrefix(k, prefixSegments):
			err = decodeNamed(c.Segments, kv, func(o *api.Segment) (string, *int64) { return o.Name, &o.Revision })
		case strings.HasPrefix(k, prefixEncryptions):
			err = decodeNamed(c.Encryptions, kv, func(o *api.Encryption) (string, *int64) { return o.Name, &o.Revision })
		}
		if err != nil {
			log.Warn("undecodable store value skipped", "key", k, "err", err)
		}
	}
	return c
}

// decodeNamed decodes an object stored by name into m, stamped with the
// store revision of its last change.
func decodeNamed[V any](m map[string]V, kv store.KV, fields func(*V) (name string, rev *int64)) error {
	var v V
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		return err
	}
	name, rev := fields(&v)
	*rev = kv.ModRev
	m[name] = v
	return nil
}

// snapshot is a consistent read of the view.
type snapshot struct {
	rev      int64
	guardRev int64
	cfg      *model.Config
	resolver *model.Resolver
	desired  map[string]api.HostDesired
	changed  <-chan struct{}
}

func (v *view) snapshot() snapshot {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return snapshot{rev: v.rev, guardRev: v.guardRev, cfg: v.cfg, resolver: v.resolver, desired: v.desired, changed: v.changed}
}

// get returns a stored value as the view has it.
func (v *view) get(key string) (store.KV, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	kv, ok := v.kvs[key]
	return kv, ok
}

// list returns the stored values under prefix.
func (v *view) list(prefix string) []store.KV {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []store.KV
	for _, k := range sortedKeys(v.kvs) {
		if strings.HasPrefix(k, prefix) {
			out = append(out, v.kvs[k])
		}
	}
	return out
}

func sortedKeys(m map[string]store.KV) []string {
	return slices.Sorted(maps.Keys(m))
}

// waitRev blocks until the view has applied rev (read-your-writes).
func (v *view) waitRev(ctx context.Context, rev int64) error {
	for {
		v.mu.RLock()
		cur, changed := v.rev, v.changed
		v.mu.RUnlock()
		if cur >= rev {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
