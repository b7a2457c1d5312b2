package spoofguard

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

type fastPath struct {
	objs spoofguardObjects
}

var _ sdk.FastPath = (*fastPath)(nil)

// The spec is parsed once; each load works on a copy.
var spoofguardSpec = sync.OnceValues(loadSpoofguard)

type lpm4Key struct {
	Prefixlen uint32
	Addr      [4]byte
}

type lpm6Key struct {
	Prefixlen uint32
	Addr      [16]byte
}

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	cfg, err := ParseConfig(ctx.Instance.Params)
	if err != nil {
		return nil, fmt.Errorf("spoofguard: %w", err)
	}
	base, err := spoofguardSpec()
	if err != nil {
		return nil, err
	}
	spec := base.Copy()
	b2u := func(b bool) uint32 {
		if b {
			return 1
		}
		return 0
	}
	for name, val := range map[string]any{
		"sg_mac":         cfg.MAC,
		"sg_vlan_allow":  b2u(cfg.AllowVLAN),
		"sg_other_allow": b2u(cfg.AllowOther),
	} {
		v, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("spoofguard: variable %s missing from the program", name)
		}
		if err := v.Set(val); err != nil {
			return nil, fmt.Errorf("spoofguard: set %s: %w", name, err)
		}
	}
	fp := &fastPath{}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		return nil, fmt.Errorf("spoofguard: %w", err)
	}
	if err := fp.fill(cfg); err != nil {
		fp.Close()
		return nil, fmt.Errorf("spoofguard: %w", err)
	}
	return fp, nil
}

// fill makes the tries hold exactly cfg's prefixes. New entries go in
// before stale ones leave, so on adoption (the live program keeps using the
// pinned tries) an address that stays allowed is never refused.
func (f *fastPath) fill(cfg *Config) error {
	want4 := map[lpm4Key]bool{}
	for _, p := range cfg.IPv4 {
		want4[lpm4Key{uint32(p.Bits()), p.Addr().As4()}] = true
	}
	v6 := append([]netip.Prefix{}, cfg.IPv6...)
	if cfg.AllowLinkLocal {
		v6 = append(v6, LinkLocal)
	}
	want6 := map[lpm6Key]bool{}
	for _, p := range v6 {
		want6[lpm6Key{uint32(p.Bits()), p.Addr().As16()}] = true
	}
	if err := syncTrie(f.objs.SgIpv4, want4); err != nil {
		return fmt.Errorf("fill sg_ipv4: %w", err)
	}
	if err := syncTrie(f.objs.SgIpv6, want6); err != nil {
		return fmt.Errorf("fill sg_ipv6: %w", err)
	}
	return nil
}

func syncTrie[K comparable](m *ebpf.Map, want map[K]bool) error {
	one := uint8(1)
	for k := range want {
		if err := m.Put(k, one); err != nil {
			return fmt.Errorf("put %v: %w", k, err)
		}
	}
	var stale []K
	var k K
	var v uint8
	it := m.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, k := range stale {
		if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete %v: %w", k, err)
		}
	}
	return nil
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfSpoofguard }

// Counters: dropped frames and bytes by reason.
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	var out []sdk.Counter
	for r := Reason(0); r < NumReasons; r++ {
		p, b, err := sdk.SumPerCPU(f.objs.SgDrops, uint32(r))
		if err != nil {
			return nil, fmt.Errorf("read sg_drops: %w", err)
		}
		labels := map[string]string{"reason": r.String()}
		out = append(out,
			sdk.Counter{Name: "dropped_packets_total", Help: "Frames the spoof guard dropped, by reason.", Labels: labels, Value: float64(p)},
			sdk.Counter{Name: "dropped_bytes_total", Help: "Bytes the spoof guard dropped, by reason.", Labels: labels, Value: float64(b)})
	}
	return out, nil
}

func (f *fastPath) Close() error { return f.objs.Close() }
