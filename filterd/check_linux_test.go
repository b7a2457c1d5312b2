package filterd

import (
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// This kernel has everything; the probe must say so, and a missing
// required feature must be named.
func TestCheck(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.TCX)
	r := Check(datapath.ModeAuto)
	if len(r.Features) < 8 || r.Kernel == "" {
		t.Fatalf("report too thin: %+v", r)
	}
	for _, f := range r.Features {
		if !f.OK {
			t.Errorf("%s: %s", f.Name, f.Detail)
		}
	}
	if m := Missing(r); len(m) != 0 {
		t.Errorf("missing on a complete kernel: %v", m)
	}
	r.Features = append(r.Features, api.Feature{Name: "geneve", Required: true}, api.Feature{Name: "optional", Required: false})
	if m := Missing(r); len(m) != 1 || !strings.Contains(m[0], "geneve") {
		t.Errorf("Missing = %v, want [geneve]", m)
	}
}
