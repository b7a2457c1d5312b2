package bench

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestRunEncapSmoke runs the encap suite's two-host topologies for one
// short repetition of udp64_pps: routed and bridge-vxlan always, encap
// too when VFBENCH_FILTERD names a filterd binary. Every case carries
// traffic, the comparison line is there, and nothing is left behind.
func TestRunEncapSmoke(t *testing.T) {
	testkit.Need(t, testkit.Root)
	if testing.Short() {
		t.Skip("-short: the smoke test runs real traffic")
	}
	bin := os.Getenv("VFBENCH_FILTERD")
	cases := []string{"bridge-vxlan"}
	if bin != "" {
		cases = []string{"encap", "bridge-vxlan"}
	}
	got, runLog := runFigures(t, 3*time.Minute, Options{Filterd: bin, Cases: cases, Metrics: []string{MetricUDP64}, Duration: time.Second, Reps: 1})
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
	t.Logf("%v", got)
	// What this run made, as its log names it (other runs may share the
	// machine): the hosts' and VMs' namespaces carry each pair's suffix,
	// and the underlays and filterd's directories are named.
	var mine []string
	for _, f := range strings.Fields(runLog) {
		f = strings.TrimSuffix(f, ",")
		switch {
		case strings.HasPrefix(f, "vfb-host-"):
			if i := strings.LastIndexByte(f, '-'); i > 0 {
				mine = append(mine, f[i:]) // -<suffix>: hosts and VMs of the pair
			}
		case strings.HasPrefix(f, "vful-"), strings.HasPrefix(f, "/sys/fs/bpf/vfbench-"), strings.HasPrefix(f, os.TempDir()+"/vfbench-"):
			mine = append(mine, f)
		}
	}
	if len(mine) == 0 {
		t.Fatalf("the log names nothing the run made:\n%s", runLog)
	}
	var left []string
	for _, g := range []string{nsutil.Dir + "/*", "/sys/fs/bpf/vfbench-*", os.TempDir() + "/vfbench-*"} {
		m, _ := filepath.Glob(g)
		for _, p := range m {
			if slices.ContainsFunc(mine, func(x string) bool { return strings.HasSuffix(p, x) || strings.Contains(p, x+"/") || p == x }) {
				left = append(left, p)
			}
		}
	}
	if len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}
}
