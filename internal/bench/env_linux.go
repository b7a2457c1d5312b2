package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// runEnv is what the cases of one run share: the topology, the daemon, and
// a private directory for the policy and services files they load.
type runEnv struct {
	o    Options
	topo *topology
	d    *daemon
	dir  string
	// policies caches generated policies by rule count and seed.
	policies map[[2]int][]genRule
	// loaded is how long the last setup took to put its policy in place
	// (MetricLoad).
	loaded time.Duration
}

func newRunEnv(o Options, t *topology, d *daemon) (*runEnv, error) {
	dir, err := os.MkdirTemp("", "vfbench-files-")
	if err != nil {
		return nil, fmt.Errorf("create directory for policy files: %w", err)
	}
	return &runEnv{o: o, topo: t, d: d, dir: dir, policies: map[[2]int][]genRule{}}, nil
}

func (e *runEnv) close() error {
	if err := os.RemoveAll(e.dir); err != nil {
		return fmt.Errorf("remove %s: %w", e.dir, err)
	}
	return nil
}

// policy returns the n-rule policy of the given seed, generated once per run.
func (e *runEnv) policy(n, seed int) []genRule {
	k := [2]int{n, seed}
	if p, ok := e.policies[k]; ok {
		return p
	}
	p := genPolicy(n, policyTail, uint64(seed), netip.MustParseAddr(vmAIPv4.IP.String()), netip.MustParseAddr(vmAIPv6.IP.String()), benchFlows, allowRule)
	e.policies[k] = p
	return p
}

// writePolicy writes the n-rule policy of seed to path (atomically: a
// reload never reads half a file).
func (e *runEnv) writePolicy(path string, n, seed int) error {
	b, err := fwPolicyJSON(e.policy(n, seed), fmt.Sprintf("vfbench: %d generated rules, seed %d", n, seed))
	if err != nil {
		return err
	}
	return writeAtomic(path, b)
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// setup puts case bc in place and returns how to undo it.
func (e *runEnv) setup(ctx context.Context, bc benchCase) (undo func() error, err error) {
	chain := bc.chain
	switch {
	case bc.span:
		chain = []api.FilterSpec{{Name: "mirror", Params: map[string]string{"sink": "vnic://" + e.topo.mon.tap}}}
	case bc.fwRules > 0:
		path := filepath.Join(e.dir, bc.name+".json")
		if err := e.writePolicy(path, bc.fwRules, bc.fwRules); err != nil {
			return nil, fmt.Errorf("write policy: %w", err)
		}
		chain = []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": path}}}
	case bc.dlb:
		path := filepath.Join(e.dir, "services.json")
		b, err := dlbServices()
		if err != nil {
			return nil, err
		}
		if err := writeAtomic(path, b); err != nil {
			return nil, fmt.Errorf("write services: %w", err)
		}
		chain = []api.FilterSpec{{Name: "dlb", Params: map[string]string{"services": path}}}
	case bc.nft != "":
		return e.setupNft(ctx, bc)
	}
	if chain == nil {
		return nil, nil
	}
	t0 := time.Now()
	if err := e.d.setChain(ctx, e.topo.a.tap, chain); err != nil {
		return nil, err
	}
	e.loaded = time.Since(t0)
	return func() error { return e.d.setChain(context.Background(), e.topo.a.tap, nil) }, nil
}

// Backends of the VIP: VM B's three addresses (topology_linux.go).
var vipBackends = []string{"10.77.0.2", "10.77.0.3", "10.77.0.4"}

// dlbServices is the dlb services file of the dlb suite: the VIP on each
// port the metrics use, three equal backends in VM B.
func dlbServices() ([]byte, error) {
	type backend struct {
		Addr string `json:"addr"`
	}
	type service struct {
		Name     string    `json:"name"`
		VIP      string    `json:"vip"`
		Port     int       `json:"port"`
		Protocol string    `json:"protocol"`
		Backends []backend `json:"backends"`
	}
	var bs []backend
	for _, a := range vipBackends {
		bs = append(bs, backend{a})
	}
	var ss []service
	for _, p := range []struct {
		port  int
		proto string
	}{{iperfPort, "tcp"}, {udpPort, "udp"}, {connPort, "tcp"}, {rrPort, "tcp"}} {
		ss = append(ss, service{Name: p.proto + "-" + strconv.Itoa(p.port), VIP: vipIPv4.String(), Port: p.port, Protocol: p.proto, Backends: bs})
	}
	return json.MarshalIndent(map[string]any{"services": ss}, "", " ")
}
