package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// benchState lists what a run may leave behind: namespaces, pinned bpffs
// roots, filterd temporary directories.
func benchState(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, g := range []string{nsutil.Dir + "/vfb-*", "/sys/fs/bpf/vfbench-*", os.TempDir() + "/vfbench-*"} {
		m, _ := filepath.Glob(g)
		out = append(out, m...)
	}
	slices.Sort(out)
	return out
}

// TestRunBaselineSmoke runs the whole harness on the baseline alone for one
// short repetition: topology, iperf3, the UDP blaster, the ping-pong, the
// JSON output and the clean-up.
func TestRunBaselineSmoke(t *testing.T) {
	testkit.Need(t, testkit.Root)
	if testing.Short() {
		t.Skip("-short: the smoke test runs real traffic for ~10 s")
	}
	testkit.Need(t, testkit.Iperf3)
	before := benchState(t)
	var out, log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := Run(ctx, Options{Cases: []string{baselineCase}, Duration: time.Second, Reps: 1, RoundTrips: 2000, JSON: true, Out: &out, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r struct {
			Case, Metric, Unit string
			Value, Baseline    float64
			Ratio              float64
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if r.Case != baselineCase || !(r.Value > 0) || r.Baseline != r.Value || r.Ratio != 1 || r.Unit == "" {
			t.Errorf("implausible line %s", line)
		}
		got = append(got, r.Metric)
	}
	if want := reported(coreMetrics); !slices.Equal(got, want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
	t.Logf("baseline:\n%s", out.String())
	if after := benchState(t); !slices.Equal(before, after) {
		t.Errorf("left behind: before %v, after %v", before, after)
	}
}

// TestRunFilteredSmoke also runs fast-1 and the attach benchmark when
// VFBENCH_FILTERD names a filterd binary (`make build` writes bin/filterd).
func TestRunFilteredSmoke(t *testing.T) {
	testkit.Need(t, testkit.Root)
	bin := os.Getenv("VFBENCH_FILTERD")
	if bin == "" || testing.Short() {
		t.Skip("set VFBENCH_FILTERD=/path/to/filterd to run the filtered cases")
	}
	before := benchState(t)
	var out, log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err := Run(ctx, Options{Filterd: bin, Cases: []string{"fast-1", "fw-1", "dlb-vip", "fw-swap-10k"}, Metrics: []string{MetricUDP64, MetricRR, MetricSwap},
		Duration: time.Second, Reps: 1, RoundTrips: 2000, Out: &out, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	for _, want := range []string{"fast-1", "fw-1", "dlb-vip", "swap_lost_packets"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %s", want)
		}
	}
	if strings.Contains(log.String(), "WARNING") || strings.Contains(out.String(), "skipped") {
		t.Errorf("output:\n%s\nlog:\n%s", out.String(), log.String())
	}
	out.Reset()
	if err := RunAttach(ctx, AttachOptions{Filterd: bin, N: 5, JSON: true, Out: &out, Log: &log}); err != nil {
		t.Fatalf("RunAttach: %v\nlog:\n%s", err, log.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 5 {
		t.Errorf("attach printed %d lines:\n%s", n, out.String())
	}
	if after := benchState(t); !slices.Equal(before, after) {
		t.Errorf("left behind: before %v, after %v", before, after)
	}
}

// TestRunNftSmoke runs the nftables cases (no filterd needed) for one
// short repetition: the linear chain, the sets and the numgen DNAT carry
// traffic,
// and the tables, the bridge address and everything else are gone after.
func TestRunNftSmoke(t *testing.T) {
	testkit.Need(t, testkit.Root)
	if testing.Short() {
		t.Skip("-short: the smoke test runs real traffic for ~10 s")
	}
	testkit.Need(t, testkit.Nft)
	before := benchState(t)
	got, _ := runFigures(t, 2*time.Minute, Options{Cases: []string{"nft-linear-10k", "nft-sets-1k", "nft-dnat"}, Metrics: []string{MetricUDP64, MetricConnRate},
		Duration: time.Second, Reps: 1})
	for _, k := range []string{"baseline/udp64_pps", "baseline/conn_rate", "nft-linear-10k/udp64_pps", "nft-sets-1k/udp64_pps", "nft-dnat/udp64_pps", "nft-dnat/conn_rate"} {
		if !(got[k] > 0) {
			t.Errorf("%s = %v, want traffic through the path", k, got[k])
		}
	}
	// Every packet walks ~10,000 rules: far slower than the baseline.
	if got["nft-linear-10k/udp64_pps"] > got["baseline/udp64_pps"]/2 {
		t.Errorf("nft-linear-10k %v pps vs baseline %v: the chain does not seem to be in the path", got["nft-linear-10k/udp64_pps"], got["baseline/udp64_pps"])
	}
	t.Logf("%v", got)
	if after := benchState(t); !slices.Equal(before, after) {
		t.Errorf("left behind: before %v, after %v", before, after)
	}
}

// TestRunCryptSmoke runs the crypt suite for one short repetition: two
// simulated hosts, the protected and the clear pair, both metrics with a
// baseline, and nothing of the lab left after.
func TestRunCryptSmoke(t *testing.T) {
	testkit.Need(t, testkit.Root)
	if testing.Short() {
		t.Skip("-short: the smoke test runs real traffic for ~10 s")
	}
	testkit.Need(t, testkit.Iperf3)
	var out, log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// 2 s: on the loaded 2-core test machine a 1 s UDP window sometimes
	// saw the blaster not get to send at all (as TestRunBaselineSmoke's).
	err := Run(ctx, Options{Suites: []string{SuiteCrypt}, Duration: 2 * time.Second, Reps: 1, JSON: true, Out: &out, Log: &log})
	if err != nil {
		t.Fatalf("Run: %v\nlog:\n%s", err, log.String())
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var r struct {
			Case, Metric, Unit, Note string
			Value, Baseline, Ratio   float64
		}
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		// value and baseline are rounded for print, the ratio is not.
		if r.Case != "crypt" || !(r.Value > 0) || !(r.Baseline > 0) || math.Abs(r.Ratio-r.Value/r.Baseline) > 0.05*r.Ratio+0.001 || !strings.Contains(r.Note, "in clear") || r.Metric == MetricTCP1 && !strings.Contains(r.Note, "wireguard-go") {
			t.Errorf("implausible line %s", line)
		}
		got = append(got, r.Metric)
	}
	if want := []string{MetricTCP1, MetricUDP64}; !slices.Equal(got, want) {
		t.Errorf("metrics %v, want %v", got, want)
	}
	t.Logf("crypt:\n%s\nlog:\n%s", out.String(), log.String())
	_, lab, ok := strings.Cut(log.String(), "; lab: ")
	if !ok {
		t.Fatalf("the log names no lab:\n%s", log.String())
	}
	lab, _, _ = strings.Cut(lab, "\n")
	for _, p := range strings.Fields(lab) {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("left behind: %s", p)
		}
	}
}

// runFigures runs vfbench with o (JSON output) within timeout and returns
// its figures by "case/metric", comparisons by "case vs other/metric", and
// its log.
func runFigures(t *testing.T, timeout time.Duration, o Options) (map[string]float64, string) {
	t.Helper()
	var out, log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	o.JSON, o.Out, o.Log = true, &out, &log
	if err := Run(ctx, o); err != nil {
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
	return got, log.String()
}
