package filterd_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestFlowLogNamesVM: flow records of a chain libvirt owns name the VM
// (the domain), not only the vNIC.
func TestFlowLogNamesVM(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	d := newDaemon(t, host)
	dir := t.TempDir()
	policy, logFile := filepath.Join(dir, "p.json"), filepath.Join(dir, "flows.jsonl")
	if err := os.WriteFile(policy, []byte(`{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(context.Background(), b.TapName, api.ChainRequest{Owner: "libvirt:web01",
		Filters: []api.FilterSpec{{Name: "firewall", Params: map[string]string{"policy": policy, "flow_log": logFile}}}}); err != nil {
		t.Fatal(err)
	}
	_ = a.Ping(t, b.IPv4.IP, 1) // denied: a flow record
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		data, _ := os.ReadFile(logFile)
		for _, l := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var e struct{ Event, VNIC, VM string }
			if json.Unmarshal([]byte(l), &e) == nil && e.Event == "deny" {
				if e.VM != "web01" || e.VNIC != b.TapName {
					t.Fatalf("flow record %s: want vm web01 on %s", l, b.TapName)
				}
				return
			}
		}
	}
	t.Fatal("no deny record in the flow log")
}
