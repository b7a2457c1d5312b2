package agent_test

import (
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/controlvm/agent"
	fapi "github.com/vnicfilter/vnicfilter/filterd/api"
)

func TestDocName(t *testing.T) {
	if a, b := agent.DocName([]string{"web-in", "db-in"}), agent.DocName([]string{"db-in", "web-in"}); a != b || a != "mgr.db-in+web-in" {
		t.Errorf("DocName: %q %q, want mgr.db-in+web-in for both orders", a, b)
	}
	long := make([]string, 20)
	for i := range long {
		long[i] = strings.Repeat("p", 10) + string(rune('a'+i))
	}
	if n := agent.DocName(long); len(n) > 100 || !strings.HasPrefix(n, "mgr.set-") {
		t.Errorf("DocName of many policies: %q", n)
	}
}

func TestVMName(t *testing.T) {
	for _, c := range []struct {
		l    fapi.VNICLabels
		want string
	}{
		{fapi.VNICLabels{VNIC: "vnet3", Owner: "libvirt:web01"}, "web01"},
		{fapi.VNICLabels{VNIC: "vnet4", Owner: "vfagent:db1"}, "db1"},
		{fapi.VNICLabels{VNIC: "vnet5"}, "vnet5"},
		{fapi.VNICLabels{VNIC: "vnet6", Owner: "operator"}, "vnet6"},
	} {
		if got := agent.VMName(c.l); got != c.want {
			t.Errorf("VMName(%+v) = %q, want %q", c.l, got, c.want)
		}
	}
}
