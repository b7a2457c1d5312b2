package dlb

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

type testGroups map[string][]netip.Prefix

func (g testGroups) Members(name string) ([]netip.Prefix, error) {
	m, ok := g[name]
	if !ok {
		return nil, sdk.ErrUnknownGroup
	}
	return m, nil
}

func TestPoolGroup(t *testing.T) {
	file := `{"services": [{"name": "web", "vip": "10.200.0.10", "port": 80, "protocol": "tcp",
		"pool_group": "tag:web", "pool_port": 8080, "pool_weight": 2,
		"backends": [{"addr": "10.99.0.9", "port": 8080, "weight": 5}]}]}`
	g := testGroups{"tag:web": {netip.MustParsePrefix("10.99.0.2/32"), netip.MustParsePrefix("10.99.0.9/32"), netip.MustParsePrefix("10.98.0.0/16"), netip.MustParsePrefix("fd00::1/128")}}
	cfg, used, err := ParseConfigGroups([]byte(file), g)
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Services[0]
	if len(used) != 1 || used[0] != "tag:web" || len(s.Backends) != 2 {
		t.Fatalf("used %v, backends %+v: want the listed 10.99.0.9 (weight 5) and 10.99.0.2 from the group (weight 2); ranges and IPv6 left out", used, s.Backends)
	}
	if b := s.Backends[1]; b.Addr.String() != "10.99.0.2" || b.Port != 8080 || b.Weight != 2 || s.Backends[0].Weight != 5 {
		t.Errorf("backends %+v", s.Backends)
	}
	// An empty group compiles: the service has no backend for now.
	cfg, _, err = ParseConfigGroups([]byte(strings.Replace(file, `"backends": [{"addr": "10.99.0.9", "port": 8080, "weight": 5}]`, `"backends": []`, 1)), testGroups{"tag:web": nil})
	if err != nil {
		t.Fatalf("empty pool group: %v", err)
	}
	if _, err := Compile(cfg, 0, DefaultTableEntries); err != nil {
		t.Errorf("compile a service whose pool group is empty: %v", err)
	}
	// Unknown group, no group table: refused with the field.
	for _, tc := range []struct {
		g    sdk.Groups
		want string
	}{{testGroups{}, "pool_group"}, {nil, "no host group table"}} {
		_, _, err := ParseConfigGroups([]byte(file), tc.g)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("groups %v: %v, want a ConfigError naming %q", tc.g, err, tc.want)
		}
	}
}
