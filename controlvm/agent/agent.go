// Package agent is the control VM's host agent (cmd/vfagent): it holds one
// desired-state stream from the manager open for its host, applies what
// the stream says to the host's filterd over the hidden bridge (policy
// documents through PUT /v1/policies, chains through PUT /v1/vnics), and
// reports upward what it enforces (realized state), what runs on the host
// (inventory: VMs, vNICs, addresses) and the datapath counters.
//
// The agent is never in the datapath: chains keep enforcing the last
// policy it applied while it, its VM or the manager is away. On reconnect
// it resumes the stream from the last version it applied.
package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	fapi "github.com/vnicfilter/vnicfilter/filterd/api"
	mapi "github.com/vnicfilter/vnicfilter/manager/api"
)

// Options configure New. Zero values are defaults.
type Options struct {
	// Manager is a client of the manager authenticated with the host's
	// enrolled certificate (required).
	Manager *mapi.Client
	// Filterd is a client of the host's filterd: over the hidden bridge
	// with the host CA's client certificate (fapi.NewTLSClient), or its
	// unix socket (required).
	Filterd *fapi.Client
	// StateDir keeps agent.json: the version applied and what is
	// realized, so a restarted agent resumes its stream (required).
	StateDir string
	// Logger receives the agent's log; "applied" lines carry the version.
	Logger *slog.Logger
	// InventoryInterval: how often filterd's vNICs are read and, when they
	// changed, reported (default 5 s).
	InventoryInterval time.Duration
	// CountersInterval: how often counters are reported (default 30 s;
	// negative: never).
	CountersInterval time.Duration
	// MaxBackoff bounds the wait between reconnects (default 5 s).
	MaxBackoff time.Duration
	// Underlay is the host's underlay address, reported to the manager:
	// the source of its segments' VXLAN tunnels, and which of filterd's
	// endpoints is the encryption tunnel's. Empty: the host takes no part
	// in segments, and its tunnel endpoint is reported only when filterd
	// lists exactly one.
	Underlay netip.Addr
}

// CallTimeout bounds one round of calls to filterd (an event's apply, an
// inventory or counters report).
const CallTimeout = 2 * time.Minute

// PolicyPrefix starts the names of the policy documents the agent stores
// in filterd; documents with other names are an operator's and left alone.
const PolicyPrefix = "mgr."

// Agent is one host's agent.
type Agent struct {
	opts Options
	log  *slog.Logger

	mu sync.Mutex // guards st and saving it
	st persisted
	// inventory last reported (JSON), to report only changes.
	lastInventory []byte
	// tunnelErr: why no tunnel was reported last time (logged on change).
	tunnelErr string
	// chains caches filterd's chains as last listed or set (only the
	// stream loop uses it): a change event then costs filterd no listing.
	chains map[string]fapi.VNIC
}

// persisted is agent.json.
type persisted struct {
	Version int64 `json:"version"`
	// Realized by vNIC.
	Realized map[string]mapi.RealizedVNIC `json:"realized"`
	// Docs: policy document name in filterd -> policy_ref put there.
	Docs map[string]string `json:"docs"`
	// HostDocs: the host-wide documents put into filterd, by name.
	HostDocs map[string]mapi.RealizedDoc `json:"host_docs,omitempty"`
}

// New checks opts and loads the agent's saved state.
func New(opts Options) (*Agent, error) {
	if opts.Manager == nil || opts.Filterd == nil || opts.StateDir == "" {
		return nil, errors.New("agent: Manager, Filterd and StateDir are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.InventoryInterval <= 0 {
		opts.InventoryInterval = 5 * time.Second
	}
	if opts.CountersInterval == 0 {
		opts.CountersInterval = 30 * time.Second
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if err := os.MkdirAll(opts.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent state directory: %w", err)
	}
	a := &Agent{opts: opts, log: opts.Logger,
		st: persisted{Version: -1, Realized: map[string]mapi.RealizedVNIC{}, Docs: map[string]string{}, HostDocs: map[string]mapi.RealizedDoc{}}}
	data, err := os.ReadFile(a.statePath())
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("agent state: %w", err)
	default:
		if err := json.Unmarshal(data, &a.st); err != nil {
			return nil, fmt.Errorf("agent state %s: %w (remove it: the agent then fetches the whole desired state)", a.statePath(), err)
		}
		if a.st.Realized == nil {
			a.st.Realized = map[string]mapi.RealizedVNIC{}
		}
		if a.st.Docs == nil {
			a.st.Docs = map[string]string{}
		}
		if a.st.HostDocs == nil {
			a.st.HostDocs = map[string]mapi.RealizedDoc{}
		}
	}
	return a, nil
}

func (a *Agent) statePath() string { return filepath.Join(a.opts.StateDir, "agent.json") }

// Version is the desired version last applied (-1: none).
func (a *Agent) Version() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.Version
}

// Run reports inventory and counters and follows the desired-state
// stream until ctx ends, reconnecting with backoff. It never touches
// filterd on its way out.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.inventoryLoop(ctx) }()
	go func() { defer wg.Done(); a.countersLoop(ctx) }()
	defer wg.Wait()
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		since := a.Version()
		start := time.Now()
		err := a.follow(ctx, since)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond // it worked for a while
		}
		a.log.Warn("desired-state stream ended; reconnecting", "since", a.Version(), "in", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, a.opts.MaxBackoff)
	}
	return nil
}

// follow holds one stream open and applies its events.
func (a *Agent) follow(ctx context.Context, since int64) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := a.opts.Manager.Watch(sctx, "", since)
	if err != nil {
		return fmt.Errorf("open stream: %w", err)
	}
	defer s.Close()
	a.log.Info("desired-state stream open", "since", since)
	// A stream silent for 3 ping periods is dead (the manager pings
	// every 15 s): close it so Next returns.
	alive := make(chan struct{}, 1)
	go func() {
		t := time.NewTimer(50 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-alive:
				t.Reset(50 * time.Second)
			case <-t.C:
				a.log.Warn("desired-state stream silent for 50 s; closing it")
				s.Close()
				return
			}
		}
	}()
	for {
		ev, err := s.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return errors.New("the manager ended the stream")
			}
			return err
		}
		select {
		case alive <- struct{}{}:
		default:
		}
		switch ev.Type {
		case mapi.EventPing:
		case mapi.EventCurrent:
			a.log.Info("desired state current", "version", ev.Version)
			a.report(ctx, ev.Version)
		case mapi.EventState:
			if ev.State == nil {
				return errors.New("state event without a state")
			}
			a.apply(ctx, ev.Version, ev.State.VNICs, nil, ev.State.Documents, &ev.State.HostDocs, true)
		case mapi.EventChanges:
			a.apply(ctx, ev.Version, ev.Upsert, ev.Remove, ev.Documents, ev.HostDocs, false)
		default:
			a.log.Warn("unknown event type ignored", "type", ev.Type)
		}
	}
}

// DocName is the name of the filterd policy document for a set of merged
// manager policies: the same set always merges into the same document, so
// a group change rewrites one document and filterd reloads every chain
// using it, without touching the chains.
func DocName(policies []string) string {
	ps := slices.Clone(policies)
	sort.Strings(ps)
	name := PolicyPrefix + strings.Join(ps, "+")
	if len(name) > 100 {
		sum := sha256.Sum256([]byte(strings.Join(ps, "\x00")))
		name = PolicyPrefix + "set-" + hex.EncodeToString(sum[:8])
	}
	return name
}

// apply makes filterd enforce upserts (and, with full, forgets realized
// entries of vNICs not in upserts) and the host documents (nil: unchanged),
// then reports realized state.
func (a *Agent) apply(ctx context.Context, version int64, upserts []mapi.DesiredVNIC, removed []string, docs map[string]json.RawMessage, hostDocs *mapi.HostDocs, full bool) {
	start := time.Now()
	fd := a.opts.Filterd
	// A filterd that does not answer (its hidden address unreachable)
	// must not hold the stream forever: the event is reported as failed
	// where it failed, and the next one tries again.
	ctx, cancel := context.WithTimeout(ctx, CallTimeout)
	defer cancel()
	// filterd's chains: listed for a full state or a vNIC not seen yet,
	// else as this agent left them.
	list := full || a.chains == nil
	for _, v := range upserts {
		if _, ok := a.chains[v.VNIC]; !ok {
			list = true
		}
	}
	if list {
		vs, err := fd.VNICs(ctx)
		if err != nil {
			a.log.Error("list filterd's chains", "err", err)
		} else {
			a.chains = make(map[string]fapi.VNIC, len(vs))
			for _, v := range vs {
				a.chains[v.Name] = v
			}
		}
	}
	current := a.chains
	if current == nil {
		current = map[string]fapi.VNIC{}
	}
	listed := time.Since(start)
	a.mu.Lock()
	putDocs := maps.Clone(a.st.Docs)
	a.mu.Unlock()

	results := map[string]mapi.RealizedVNIC{}
	docErr := map[string]string{}  // document name -> error putting it
	docPath := map[string]string{} // document name -> path in filterd
	var stored map[string]string   // filterd's documents, listed once when needed
	changed := 0
	// Documents first: a chain may only name a stored document.
	for _, v := range upserts {
		if v.Error != "" {
			continue
		}
		for _, f := range v.Chain {
			if f.PolicyRef == "" {
				continue
			}
			name := DocName(v.Policies)
			if _, done := docPath[name]; done || docErr[name] != "" {
				continue
			}
			doc, ok := docs[f.PolicyRef]
			if !ok && putDocs[name] != f.PolicyRef {
				docErr[name] = fmt.Sprintf("document %s missing from the stream", f.PolicyRef)
				continue
			}
			if putDocs[name] == f.PolicyRef && !full {
				if stored == nil {
					stored = a.storedDocs(ctx)
				}
				docPath[name] = stored[name]
				continue
			}
			if !ok { // full state that left out a document it already sent: cannot happen
				docErr[name] = fmt.Sprintf("document %s missing from the stream", f.PolicyRef)
				continue
			}
			ch, err := fd.PutPolicy(ctx, name, doc)
			if err != nil {
				docErr[name] = err.Error()
				a.log.Error("store policy document", "policy", name, "ref", f.PolicyRef, "err", err)
				continue
			}
			if !ch.Unchanged {
				changed++
			}
			putDocs[name] = f.PolicyRef
			docPath[name] = ch.Policy.Path
		}
	}
	docsDone := time.Since(start)
	// Host documents before the chains: a vNIC joining a segment needs
	// its host in the segment's table, a protected vNIC its peers. One
	// that fails (a segment left while its vNIC still runs encap: filterd
	// refuses a table without it) is tried again after the chains.
	var hostResults map[string]mapi.RealizedDoc
	var retry []string
	var encryptRefused string
	if hostDocs != nil {
		hostResults, retry = a.applyHostDocs(ctx, hostDocs, full, nil)
		changed += len(hostResults) - len(retry)
	}
	for _, name := range []string{mapi.DocEncryptPeers, mapi.DocEncryptPolicy} {
		if r, ok := hostResults[name]; ok && r.Error != "" {
			encryptRefused = name + ": " + r.Error
		}
	}
	for _, v := range upserts {
		r := mapi.RealizedVNIC{VNIC: v.VNIC, Hash: v.Hash}
		if v.Error != "" {
			// The manager could not merge the policies: keep what runs.
			a.mu.Lock()
			r.Hash = a.st.Realized[v.VNIC].Hash
			a.mu.Unlock()
			r.Error = v.Error
			results[v.VNIC] = r
			continue
		}
		want := fapi.ChainRequest{Filters: []fapi.FilterSpec{}}
		var fail string
		for _, f := range v.Chain {
			spec := fapi.FilterSpec{Name: f.Filter, FailMode: f.FailMode, Params: maps.Clone(f.Params)}
			if f.PolicyRef != "" {
				name := DocName(v.Policies)
				if e := docErr[name]; e != "" {
					fail = e
					break
				}
				if spec.Params == nil {
					spec.Params = map[string]string{}
				}
				spec.Params["policy"] = docPath[name]
			}
			want.Filters = append(want.Filters, spec)
		}
		if fail == "" && encryptRefused != "" && slices.ContainsFunc(want.Filters, func(f fapi.FilterSpec) bool { return f.Name == "encrypt" }) {
			if cur, ok := current[v.VNIC]; !ok || !sameChain(cur, want.Filters) {
				// An encrypt slot attached now would run without the
				// documents that say what to protect: keep what runs.
				fail = "encryption documents not in filterd (" + encryptRefused + "): chain not changed"
			}
		}
		if fail == "" {
			cur, exists := current[v.VNIC]
			if !exists || !sameChain(cur, want.Filters) {
				want.Replace = exists
				want.Owner = cur.Owner
				if !exists {
					want.Owner = "vfagent:" + v.VM
				}
				if nv, err := fd.SetChain(ctx, v.VNIC, want); err != nil {
					fail = err.Error()
					a.chains = nil // list again next time
				} else {
					changed++
					if a.chains != nil {
						a.chains[v.VNIC] = *nv
					}
				}
			}
		}
		if fail != "" {
			a.log.Error("apply chain", "vnic", v.VNIC, "vm", v.VM, "err", fail)
			a.mu.Lock()
			r.Hash = a.st.Realized[v.VNIC].Hash
			a.mu.Unlock()
			r.Error = fail
		}
		results[v.VNIC] = r
	}

	if len(retry) > 0 {
		again, _ := a.applyHostDocs(ctx, hostDocs, full, retry)
		maps.Copy(hostResults, again)
	}

	a.mu.Lock()
	if hostDocs != nil {
		// Documents the manager no longer sends are no longer its: filterd
		// keeps them, the realized state stops listing them.
		a.st.HostDocs = hostResults
	}
	if full {
		a.st.Realized = map[string]mapi.RealizedVNIC{}
	}
	for _, n := range removed {
		delete(a.st.Realized, n)
	}
	maps.Copy(a.st.Realized, results)
	a.st.Docs = putDocs
	a.st.Version = version
	if err := a.saveLocked(); err != nil {
		a.log.Error("save agent state", "err", err)
	}
	inUse := map[string]bool{}
	if full {
		for _, v := range upserts {
			inUse[DocName(v.Policies)] = true
		}
	}
	a.mu.Unlock()
	a.log.Info("applied", "version", version, "vnics", len(upserts), "removed", len(removed), "changed", changed, "took", time.Since(start).Round(time.Microsecond).String(),
		"listed", listed.Round(time.Microsecond).String(), "documents", (docsDone - listed).Round(time.Microsecond).String())
	a.report(ctx, version)
	if full {
		a.collectDocs(ctx, inUse)
	}
}

// hostDocOrder is the order host documents are put into filterd: the
// peers before the policy that may name them, the overlay's table last.
var hostDocOrder = []string{mapi.DocEncryptPeers, mapi.DocEncryptPolicy, mapi.DocEncap}

// applyHostDocs puts the host documents whose hash differs from what was
// realized (all of them with full; only those named in only when given)
// into filterd. It returns the realized entry of every document set and
// the names of those filterd refused.
func (a *Agent) applyHostDocs(ctx context.Context, docs *mapi.HostDocs, full bool, only []string) (map[string]mapi.RealizedDoc, []string) {
	a.mu.Lock()
	prev := maps.Clone(a.st.HostDocs)
	a.mu.Unlock()
	out := map[string]mapi.RealizedDoc{}
	var failed []string
	set := docs.Docs()
	for _, name := range hostDocOrder {
		d := set[name]
		if d == nil || (only != nil && !slices.Contains(only, name)) {
			continue
		}
		r := mapi.RealizedDoc{Name: name, Hash: d.Hash}
		switch {
		case d.Error != "":
			// The manager could not build it: filterd keeps what it has.
			r.Hash, r.Error = prev[name].Hash, d.Error
		case !full && prev[name].Hash == d.Hash && prev[name].Error == "":
		default:
			var err error
			switch name {
			case mapi.DocEncap:
				_, err = a.opts.Filterd.SetEncapFDB(ctx, d.Document, 0)
			case mapi.DocEncryptPeers:
				_, err = a.opts.Filterd.SetEncryptPeers(ctx, d.Document, nil)
			case mapi.DocEncryptPolicy:
				_, err = a.opts.Filterd.SetEncryptPolicy(ctx, d.Document, nil)
			}
			if err != nil {
				a.log.Error("put host document", "document", name, "hash", d.Hash, "err", err)
				r.Hash, r.Error = prev[name].Hash, err.Error()
				failed = append(failed, name)
			} else {
				a.log.Info("host document put", "document", name, "hash", d.Hash, "bytes", len(d.Document))
			}
		}
		out[name] = r
	}
	return out, failed
}

// storedDocs lists the documents filterd holds: name -> path (empty when
// filterd does not answer; the chains naming them then fail and are
// retried with the next state).
func (a *Agent) storedDocs(ctx context.Context) map[string]string {
	out := map[string]string{}
	infos, err := a.opts.Filterd.Policies(ctx)
	if err == nil {
		for _, p := range infos {
			out[p.Name] = p.Path
		}
	}
	return out
}

// collectDocs deletes the agent's documents no desired chain uses; one a
// chain still names stays (filterd refuses) and goes next time.
func (a *Agent) collectDocs(ctx context.Context, inUse map[string]bool) {
	infos, err := a.opts.Filterd.Policies(ctx)
	if err != nil {
		return
	}
	for _, p := range infos {
		if !strings.HasPrefix(p.Name, PolicyPrefix) || inUse[p.Name] || len(p.UsedBy) > 0 {
			continue
		}
		if err := a.opts.Filterd.DeletePolicy(ctx, p.Name); err == nil {
			a.mu.Lock()
			delete(a.st.Docs, p.Name)
			a.mu.Unlock()
		}
	}
}

// sameChain reports whether cur runs want: the same filters in order,
// failure modes, and every parameter want sets (filterd fills defaults).
func sameChain(cur fapi.VNIC, want []fapi.FilterSpec) bool {
	if len(cur.Slots) != len(want) {
		return false
	}
	for i, s := range cur.Slots {
		w := want[i]
		if s.Slot != i || s.Filter != w.Name || (w.FailMode != "" && s.FailMode != w.FailMode) {
			return false
		}
		for k, v := range w.Params {
			if s.Params[k] != v {
				return false
			}
		}
	}
	return true
}

// report sends realized state for version.
func (a *Agent) report(ctx context.Context, version int64) {
	a.mu.Lock()
	rz := mapi.Realized{Version: version, VNICs: make([]mapi.RealizedVNIC, 0, len(a.st.Realized))}
	for _, n := range slices.Sorted(maps.Keys(a.st.Realized)) {
		rz.VNICs = append(rz.VNICs, a.st.Realized[n])
	}
	for _, n := range slices.Sorted(maps.Keys(a.st.HostDocs)) {
		rz.Docs = append(rz.Docs, a.st.HostDocs[n])
	}
	a.mu.Unlock()
	if err := a.opts.Manager.PutRealized(ctx, rz); err != nil {
		a.log.Warn("report realized state", "version", version, "err", err)
	}
}

func (a *Agent) saveLocked() error {
	data, err := json.Marshal(a.st)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(a.opts.StateDir, ".agent-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), a.statePath())
}
