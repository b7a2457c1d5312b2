package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
)

// TestRunEncapSmoke runs the encap suite's two-host topologies for one
// short repetition of udp64_pps: routed and bridge-vxlan always, encap
// too when VFBENCH_FILTERD names a filterd binary. Every case carries
// traffic, the comparison line is there, and nothing is left behind.
func TestRunEncapSmoke(t *testing.T) {
	needRoot(t)
	if testing.Short() {
		t.Skip("-short: the smoke test runs real traffic")
	}
	bin := os.Getenv("VFBENCH_FILTERD")
	cases := []string{"bridge-vxlan"}
	if bin != "" {
		cases = []string{"encap", "bridge-vxlan"}
	}
	state := func() []string {
		out := benchState(t)
		m, _ := filepath.Glob(nsutil.Dir + "/vful-*")
		out = append(out, m...)
		slices.Sort(out)
		return out
	}
	before := state()
	var out, log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := Run(ctx, Options{Filterd: bin, Cases: cases, Metrics: []string{MetricUDP64},
		Duration: time.Second, Reps: 1, JSON: true, Out: &out, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	got := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r struct {
			Case, Metric, Vs string
			Value            float64
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		k := r.Case + "/" + r.Metric
		if r.Vs != "" {
			k = r.Case + " vs " + r.Vs + "/" + r.Metric
		}
		got[k] = r.Value
	}
	want := []string{"routed/udp64_pps", "bridge-vxlan/udp64_pps"}
	if bin != "" {
		want = append(want, "encap/udp64_pps", "encap vs bridge-vxlan/udp64_pps")
	}
	for _, k := range want {
		if !(got[k] > 0) {
			t.Errorf("%s = %v, want traffic", k, got[k])
		}
	}
	if len(got) != len(want) {
		t.Errorf("figures %v, want %v", got, want)
	}
	t.Logf("%s", out.String())
	if after := state(); !slices.Equal(before, after) {
		t.Errorf("left behind: before %v, after %v", before, after)
	}
}
