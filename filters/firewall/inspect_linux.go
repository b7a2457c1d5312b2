package firewall

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

var _ sdk.Inspector = (*fastPath)(nil)

// Inspect describes the instance's live state: view=conns (default; the
// connection table), view=top (by=bytes|packets|rules), view=policy
// (source=true adds the policy file as loaded). limit bounds conns and
// top. It reads maps only; the datapath never waits for it.
func (f *fastPath) Inspect(ctx context.Context, query map[string]string) (any, error) {
	view := query["view"]
	if view == "" {
		view = ViewConns
	}
	allowed := map[string][]string{ViewConns: {"limit"}, ViewTop: {"limit", "by"}, ViewPolicy: {"source"}}
	keys, ok := allowed[view]
	if !ok {
		return nil, fmt.Errorf("%w: view %q: want conns, top or policy", sdk.ErrInvalidParam, view)
	}
	for k := range query {
		if k != "view" && !slices.Contains(keys, k) {
			return nil, fmt.Errorf("%w: query parameter %q: view=%s takes %v", sdk.ErrInvalidParam, k, view, keys)
		}
	}
	switch view {
	case ViewPolicy:
		return f.policyView(query["source"])
	case ViewTop:
		limit, err := inspectLimit(query, DefaultTopLimit)
		if err != nil {
			return nil, err
		}
		by := query["by"]
		if by == "" {
			by = "bytes"
		}
		switch by {
		case "rules":
			return f.topRules(limit)
		case "bytes", "packets":
			conns, _, err := f.conns(ctx)
			if err != nil {
				return nil, err
			}
			slices.SortStableFunc(conns, func(a, b Conn) int {
				if by == "packets" {
					return cmp.Compare(b.Packets, a.Packets)
				}
				return cmp.Compare(b.Bytes, a.Bytes)
			})
			n := len(conns)
			return &TopView{View: ViewTop, By: by, Flows: n, Conns: conns[:min(limit, n)]}, nil
		}
		return nil, fmt.Errorf("%w: by=%q: want bytes, packets or rules", sdk.ErrInvalidParam, by)
	}
	limit, err := inspectLimit(query, DefaultConnsLimit)
	if err != nil {
		return nil, err
	}
	conns, expired, err := f.conns(ctx)
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(conns, func(a, b Conn) int { return cmp.Compare(a.IdleSeconds, b.IdleSeconds) })
	v := &ConnsView{View: ViewConns, Flows: len(conns), Expired: expired, Capacity: int(f.objs.FwConntrack.MaxEntries())}
	v.Truncated = len(conns) > limit
	v.Conns = conns[:min(limit, len(conns))]
	return v, nil
}

func inspectLimit(query map[string]string, def int) (int, error) {
	s, ok := query["limit"]
	if !ok {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxInspectLimit {
		return 0, fmt.Errorf("%w: limit=%q: want 1..%d", sdk.ErrInvalidParam, s, MaxInspectLimit)
	}
	return n, nil
}

// conns reads the live flows of the connection table (batched reads; a
// flow may change while it is read) and counts the expired entries.
func (f *fastPath) conns(ctx context.Context) ([]Conn, int, error) {
	now := sdk.KtimeNow()
	keys := make([]firewallFwCtKey, gcChunk)
	vals := make([]firewallFwCtVal, gcChunk)
	var out []Conn
	expired := 0
	var cursor ebpf.MapBatchCursor
	for {
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
		n, err := f.objs.FwConntrack.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			if vals[i].Expires <= now {
				expired++
				continue
			}
			out = append(out, f.conn(&keys[i], &vals[i], now))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, 0, fmt.Errorf("read fw_conntrack: %w", err)
		}
	}
	return out, expired, nil
}

func (f *fastPath) conn(k *firewallFwCtKey, v *firewallFwCtVal, now uint64) Conn {
	seconds := func(a, b uint64) float64 {
		if a < b {
			return 0
		}
		return float64(a-b) / 1e9
	}
	last := ctLastSeen(v.Expires, v.State)
	c := Conn{
		Proto: protoName(int(k.Proto)), Family: int(k.Family),
		VM: addrOf(k.Family, k.Local[:]).String(), VMPort: k.LocalPort,
		Remote: addrOf(k.Family, k.Remote[:]).String(), RemotePort: k.RemotePort,
		Dir: sdk.Direction(v.OrigDir & 1).String(), State: ctStateName(v.State),
		AgeSeconds: seconds(now, v.Created), IdleSeconds: seconds(now, last), ExpiresInSeconds: seconds(v.Expires, now),
		Packets: v.Packets, Bytes: v.Bytes,
	}
	if v.Rule > 0 {
		r := int(v.Rule) - 1
		c.RuleIndex, c.Rule = &r, f.ruleName(r)
	}
	return c
}

// topRules lists the rules with hits, most first.
func (f *fastPath) topRules(limit int) (*TopView, error) {
	f.mu.Lock()
	p := f.policy
	f.mu.Unlock()
	v := &TopView{View: ViewTop, By: "rules", Rules: []RuleHits{}}
	if p == nil {
		return v, nil
	}
	hits, err := f.ruleHits(len(p.Rules))
	if err != nil {
		return nil, err
	}
	for i, h := range hits {
		if h > 0 {
			v.Rules = append(v.Rules, RuleHits{Index: i, Name: p.Rules[i].Name, Action: p.Rules[i].Action.String(), Hits: h})
		}
	}
	slices.SortStableFunc(v.Rules, func(a, b RuleHits) int { return cmp.Compare(b.Hits, a.Hits) })
	v.Rules = v.Rules[:min(limit, len(v.Rules))]
	return v, nil
}

func (f *fastPath) policyView(source string) (*PolicyView, error) {
	withSource := false
	switch source {
	case "", "false", "0":
	case "true", "1":
		withSource = true
	default:
		return nil, fmt.Errorf("%w: source=%q: want true or false", sdk.ErrInvalidParam, source)
	}
	var epoch uint32
	if err := f.objs.FwConfig.Lookup(uint32(0), &epoch); err != nil {
		return nil, fmt.Errorf("read fw_config: %w", err)
	}
	f.mu.Lock()
	p, at := f.policy, f.loadedAt
	f.mu.Unlock()
	v := &PolicyView{View: ViewPolicy, Generation: epoch, LoadedAt: at.UTC()}
	if p == nil {
		return v, nil
	}
	v.File, v.Rules = p.File, len(p.Rules)
	if p.Source != nil {
		sum := sha256.Sum256(p.Source)
		v.SHA256 = hex.EncodeToString(sum[:])
	}
	v.Defaults = map[string]string{sdk.FromVM.String(): p.Defaults[sdk.FromVM].String(), sdk.ToVM.String(): p.Defaults[sdk.ToVM].String()}
	v.NonIP = p.NonIP.String()
	if withSource {
		v.Source = string(p.Source)
	}
	return v, nil
}
