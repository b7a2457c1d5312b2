package filterd_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestGrafanaDashboard checks deploy/grafana/vnicfilter-dashboard.json
// against a real filterd: every metric a panel queries is exported, with
// every label the panel filters or groups on. A renamed metric or label
// fails here, not on an operator's empty panel.
func TestGrafanaDashboard(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	raw, err := os.ReadFile("../deploy/grafana/vnicfilter-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}

	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	ctx := context.Background()
	policy := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(policy, []byte(`{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}, "rules": [{"name": "ping-in", "direction": "to-vm", "proto": "icmp", "action": "allow"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, a.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "count"}, {Name: "firewall", Params: map[string]string{"policy": policy}}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, b.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "punt"}}}); err != nil {
		t.Fatal(err)
	}
	if err := b.Ping(t, a.IPv4.IP, 3); err != nil {
		t.Fatal(err)
	}
	exposition, err := d.client.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string][]string{} // metric name -> sample lines
	for _, l := range strings.Split(exposition, "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		name := l[:strings.IndexAny(l, "{ ")]
		lines[name] = append(lines[name], l)
	}
	selector := regexp.MustCompile(`(vnicfilter_[a-z0-9_]+)(\{[^}]*\})?`)
	labelKey := regexp.MustCompile(`([a-z_]+)\s*(=~|!=|!~|=)`)
	byClause := regexp.MustCompile(`by \(([^)]*)\)`)
	checked := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, m := range selector.FindAllStringSubmatch(tg.Expr, -1) {
				name := m[1]
				samples := lines[name]
				if len(samples) == 0 {
					t.Errorf("panel %q queries %s, which filterd does not export", p.Title, name)
					continue
				}
				checked++
				keys := labelKey.FindAllStringSubmatch(m[2], -1)
				for _, by := range byClause.FindAllStringSubmatch(tg.Expr, -1) {
					for _, k := range strings.Split(by[1], ",") {
						keys = append(keys, []string{"", strings.TrimSpace(k)})
					}
				}
				for _, k := range keys {
					if k[1] == "instance" || k[1] == "" {
						continue // added by Prometheus
					}
					found := false
					for _, s := range samples {
						if strings.Contains(s, k[1]+`="`) {
							found = true
							break
						}
					}
					if !found {
						t.Errorf("panel %q uses label %q of %s, which has none (%s)", p.Title, k[1], name, samples[0])
					}
				}
			}
		}
	}
	if checked < 10 {
		t.Errorf("only %d metric references checked: is the dashboard intact?", checked)
	}
}
