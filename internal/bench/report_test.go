package bench

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	hundred := make([]float64, 100)
	for i := range hundred {
		hundred[i] = float64(100 - i) // unsorted on purpose: 100..1
	}
	for _, tc := range []struct {
		name string
		xs   []float64
		p    float64
		want float64
	}{
		{"p50 of 1..100", hundred, 50, 50},
		{"p99 of 1..100", hundred, 99, 99},
		{"p100 is the max", hundred, 100, 100},
		{"tiny p is the min", hundred, 0.1, 1},
		{"one sample", []float64{7}, 99, 7},
		{"p50 of 4 is the 2nd", []float64{4, 1, 3, 2}, 50, 2},
		{"p99 of 3 is the max", []float64{1, 2, 3}, 99, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentile(tc.xs, tc.p); got != tc.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tc.xs, tc.p, got, tc.want)
			}
		})
	}
	if !math.IsNaN(percentile(nil, 50)) {
		t.Error("percentile of nothing is not NaN")
	}
	if hundred[0] != 100 {
		t.Error("percentile sorted its input in place")
	}
}

func TestMedianRatioRound(t *testing.T) {
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5}, 5},
	} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
	if !math.IsNaN(median(nil)) {
		t.Error("median of nothing is not NaN")
	}
	if got := ratio(9, 10); got != 0.9 {
		t.Errorf("ratio(9, 10) = %v", got)
	}
	for _, b := range []float64{0, -1, math.NaN()} {
		if !math.IsNaN(ratio(1, b)) {
			t.Errorf("ratio(1, %v) is not NaN", b)
		}
	}
	if got := round(12.34567, 3); got != 12.346 {
		t.Errorf("round = %v", got)
	}
}

func TestTargets(t *testing.T) {
	for _, tc := range []struct {
		r    Result
		want string
		pass bool
	}{
		{Result{Case: "fast-1", Metric: MetricTCP1, Ratio: 0.90}, ">=0.9x", true},
		{Result{Case: "fast-1", Metric: MetricUDP64, Ratio: 0.899}, ">=0.9x", false},
		{Result{Case: "fast-4", Metric: MetricTCP1, Ratio: 0.86}, ">=0.85x", true},
		{Result{Case: "slow-punt", Metric: MetricTCP1, Ratio: 0.49}, ">=0.5x", false},
		{Result{Case: "slow-punt", Metric: MetricTCP1, Ratio: math.NaN()}, ">=0.5x", false},
		{Result{Case: "fast-1", Metric: MetricTCP1, Ratio: 1, Error: "boom"}, ">=0.9x", false},
		{Result{Case: attachCase, Metric: metricAttachP99, Value: 49.9}, "<50", true},
		{Result{Case: attachCase, Metric: metricAttachTotl, Value: 5}, "<5", false},
		{Result{Case: "fast-1", Metric: MetricRRP99, Ratio: 3}, "", false},
	} {
		r := tc.r
		judge(&r)
		if r.Target != tc.want {
			t.Errorf("%s/%s: target %q, want %q", r.Case, r.Metric, r.Target, tc.want)
		}
		if tc.want != "" && (r.Pass == nil || *r.Pass != tc.pass) {
			t.Errorf("%s/%s ratio %v value %v: pass %v, want %v", r.Case, r.Metric, r.Ratio, r.Value, r.Pass, tc.pass)
		}
	}
}

// TestSummarizePairsBaselines checks that each case is compared with the
// baselines measured right before and after it, not with the run's median.
func TestSummarizePairsBaselines(t *testing.T) {
	c := newCollected()
	// Two reps of: baseline, fast-1, baseline, fast-4, baseline — and the
	// machine slows down during each rep.
	c.base = [][]sample{
		{{MetricTCP1: 10, MetricUDP64: 100, metricUDP64Snt: 120}, {MetricTCP1: 8}, {MetricTCP1: 6}},
		{{MetricTCP1: 12}, {MetricTCP1: 10}, {MetricTCP1: 8}},
	}
	c.cases["fast-1"] = []sample{{MetricTCP1: 8.1}, {MetricTCP1: 9.9}}
	c.cases["fast-4"] = []sample{{MetricTCP1: 6}, nil}
	c.failed[[2]string{"fast-4", MetricUDP64}] = "udp: nothing received"
	c.skipped["slow-punt"] = `filterd has no "punt" filter (unknown_filter)`

	figs := []string{MetricTCP1, MetricUDP64}
	rs := summarize(c, figs, []measuredCase{{"fast-1", figs}, {"fast-4", figs}, {"slow-punt", figs}})
	got := map[[2]string]Result{}
	for _, r := range rs {
		got[[2]string{r.Case, r.Metric}] = r
	}
	if len(rs) != 8 {
		t.Fatalf("got %d results, want 8: %+v", len(rs), rs)
	}
	b := got[[2]string{baselineCase, MetricTCP1}]
	if b.Value != 9 || b.Ratio != 1 || len(b.Samples) != 6 { // median of 10 8 6 12 10 8
		t.Errorf("baseline tcp_1 = %+v", b)
	}
	if u := got[[2]string{baselineCase, MetricUDP64}]; u.Value != 100 || u.SentPPS != 120 {
		t.Errorf("baseline udp = %+v", u)
	}
	f1 := got[[2]string{"fast-1", MetricTCP1}]
	// rep 1: 8.1 vs (10+8)/2=9; rep 2: 9.9 vs (12+10)/2=11.
	if f1.Value != 9 || f1.Baseline != 10 || math.Abs(f1.Ratio-0.9) > 1e-9 {
		t.Errorf("fast-1 tcp_1 = %+v, want value 9 baseline 10 ratio 0.9", f1)
	}
	if f1.Target == "" || !*f1.Pass {
		t.Errorf("fast-1 tcp_1 not judged a pass: %+v", f1)
	}
	f4 := got[[2]string{"fast-4", MetricTCP1}]
	if f4.Value != 6 || f4.Baseline != 7 { // rep 2 not measured
		t.Errorf("fast-4 tcp_1 = %+v, want value 6 baseline 7", f4)
	}
	if e := got[[2]string{"fast-4", MetricUDP64}]; e.Error != "udp: nothing received" || e.Pass == nil || *e.Pass {
		t.Errorf("fast-4 udp = %+v, want the failure, judged FAIL", e)
	}
	if s := got[[2]string{"slow-punt", MetricTCP1}]; s.Skipped == "" || s.Pass != nil {
		t.Errorf("slow-punt = %+v, want skipped and not judged", s)
	}
}

func TestJSONLines(t *testing.T) {
	pass := true
	rs := []Result{
		{Case: "fast-1", Metric: MetricTCP1, Value: 11.23456, Unit: "Gb/s", Baseline: 12.5, Ratio: 0.8987654, HasBaseline: true, Samples: []float64{11.23456}, Target: ">=0.9x", Pass: new(bool)},
		{Case: "fast-1", Metric: MetricUDP64, Value: 300000.4, Unit: "pps", Baseline: 310000, Ratio: 0.9677, HasBaseline: true, SentPPS: 400000.2, Target: ">=0.9x", Pass: &pass},
		{Case: "fast-1", Metric: MetricRRP50, Value: 30, Unit: "us", Baseline: 0, Ratio: math.NaN(), HasBaseline: true},
		{Case: "slow-punt", Metric: MetricTCP1, Unit: "Gb/s", HasBaseline: true, Skipped: "no punt"},
		{Case: "fast-4", Metric: MetricTCP1, Unit: "Gb/s", HasBaseline: true, Error: "iperf3: boom"},
		{Case: attachCase, Metric: metricAttachP99, Value: 12.345, Unit: "ms", Target: "<50", Pass: &pass},
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, rs); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`{"case":"fast-1","metric":"tcp_1","value":11.235,"unit":"Gb/s","baseline":12.5,"ratio":0.899,"samples":[11.235],"target":">=0.9x","pass":false}`,
		`{"case":"fast-1","metric":"udp64_pps","value":300000,"unit":"pps","baseline":310000,"ratio":0.968,"sent_pps":400000,"target":">=0.9x","pass":true}`,
		`{"case":"fast-1","metric":"rr_latency_p50_us","value":30,"unit":"us","baseline":0,"ratio":null}`,
		`{"case":"slow-punt","metric":"tcp_1","unit":"Gb/s","skipped":"no punt"}`,
		`{"case":"fast-4","metric":"tcp_1","unit":"Gb/s","error":"iperf3: boom"}`,
		`{"case":"attach","metric":"attach_p99_ms","value":12.3,"unit":"ms","target":"<50","pass":true}`,
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), len(want), buf.String())
	}
	for i, l := range lines {
		if l != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i, l, want[i])
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("line %d is not JSON: %v", i, err)
		}
	}
}

func TestTable(t *testing.T) {
	pass, fail := true, false
	rs := []Result{
		{Case: baselineCase, Metric: MetricUDP64, Value: 1234567, Unit: "pps", Baseline: 1234567, Ratio: 1, HasBaseline: true},
		{Case: "fast-1", Metric: MetricUDP64, Value: 1000000, Unit: "pps", Baseline: 1234567, Ratio: 0.81, HasBaseline: true, Target: ">=0.9x", Pass: &fail},
		{Case: "fast-4", Metric: MetricTCP1, Value: 9.5, Unit: "Gb/s", Baseline: 10, Ratio: 0.95, HasBaseline: true, Target: ">=0.85x", Pass: &pass},
		{Case: "slow-punt", Metric: MetricTCP1, Unit: "Gb/s", HasBaseline: true, Skipped: "no punt filter"},
	}
	var buf bytes.Buffer
	if err := writeTable(&buf, "title", rs); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"title", "RATIO", "1,234,567 pps", "0.810x", ">=0.9x FAIL", "9.500 Gb/s", "0.950x", ">=0.85x PASS", "skipped: no punt filter", "acceptance: 1 passed, 1 failed"} {
		if !strings.Contains(out, s) {
			t.Errorf("table lacks %q:\n%s", s, out)
		}
	}
}

func TestSummarizeAttach(t *testing.T) {
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(i+1) * time.Millisecond
	}
	rs := summarizeAttach(lat, 4*time.Second, time.Second)
	want := map[string]float64{metricAttachTotl: 4, metricAttachP50: 50, metricAttachP99: 99, metricAttachMax: 100, metricDetachTotl: 1}
	for _, r := range rs {
		if r.Value != want[r.Metric] {
			t.Errorf("%s = %v, want %v", r.Metric, r.Value, want[r.Metric])
		}
		if r.HasBaseline {
			t.Errorf("%s has a baseline", r.Metric)
		}
		switch r.Metric {
		case metricAttachTotl:
			if r.Pass == nil || !*r.Pass {
				t.Errorf("total 4 s judged %v", r.Pass)
			}
		case metricAttachP99:
			if r.Pass == nil || *r.Pass {
				t.Errorf("p99 99 ms judged %v", r.Pass)
			}
		}
	}
}

func TestSelect(t *testing.T) {
	cs, err := selectedCases([]string{"slow-punt", "fast-1"}, []string{SuiteFW})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range cs {
		names = append(names, c.name)
	}
	if got := strings.Join(names, ","); got != "baseline,fast-1,slow-punt" {
		t.Errorf("cases = %s, want baseline first, then in measurement order", got)
	}
	if _, err := selectedCases([]string{"fast-9"}, nil); err == nil || !strings.Contains(err.Error(), "fast-1") {
		t.Errorf("unknown case: err = %v, want one naming the valid cases", err)
	}
	if _, err := selectedCases(nil, []string{"fws"}); err == nil || !strings.Contains(err.Error(), "dlb") {
		t.Errorf("unknown suite: err = %v, want one naming the valid suites", err)
	}
	for _, tc := range []struct {
		suites []string
		want   string
	}{
		{nil, "baseline,empty-chain,fast-1,fast-4,slow-punt,slow-ext"},
		{[]string{SuiteMirror}, "baseline,mirror,mirror-span"},
		{[]string{SuiteFW}, "baseline,fw-1,fw-1k,fw-10k,fw-100k,nft-linear-1,nft-linear-1k,nft-linear-10k,nft-linear-100k,nft-ct-10k,nft-sets-1,nft-sets-1k,nft-sets-10k,nft-sets-100k,fw-swap-10k"},
		{[]string{SuiteDLB, SuiteCore}, "baseline,empty-chain,fast-1,fast-4,slow-punt,slow-ext,dlb-vip,nft-dnat"},
	} {
		cs, err := selectedCases(nil, tc.suites)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, c := range cs {
			names = append(names, c.name)
		}
		if got := strings.Join(names, ","); got != tc.want {
			t.Errorf("suites %v: cases %s, want %s", tc.suites, got, tc.want)
		}
	}
	if cs, _ := selectedCases(nil, []string{SuiteAll}); len(cs) != len(cases) {
		t.Errorf("suite all gave %d cases, want %d", len(cs), len(cases))
	}
	if got := reported([]string{MetricTCP1, MetricRR}); strings.Join(got, ",") != "tcp_1,rr_latency_p50_us,rr_latency_p99_us" {
		t.Errorf("reported = %v", got)
	}
	// The empty chain must reach the daemon as [], not null.
	b, _ := json.Marshal(cases[1].chain)
	if cases[1].name != "empty-chain" || string(b) != "[]" {
		t.Errorf("empty-chain marshals as %s", b)
	}
}

func TestParseIperf(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     float64
		err      string
	}{
		{"ok", `{"start":{},"end":{"sum_sent":{"bits_per_second":2e10,"retransmits":3},"sum_received":{"bits_per_second":1.25e10}}}`, 12.5, ""},
		{"error", `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, 0, "Connection refused"},
		{"empty end", `{"end":{}}`, 0, "no end.sum_received"},
		{"not JSON", `iperf3: error`, 0, "parse iperf3 JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseIperf([]byte(tc.in))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got.gbps != tc.want || got.retransmits != 3 {
				t.Fatalf("= %+v, %v; want %v Gb/s, 3 retransmits", got, err, tc.want)
			}
		})
	}
}

func TestInterfaceNames(t *testing.T) {
	// Interface names must fit IFNAMSIZ-1 = 15 bytes.
	sfx := randomHex(3)
	for _, n := range []string{"vnetA-" + sfx, "vfbr-" + sfx, "vfa" + sfx + "-9999", "vfp" + sfx + "-9999"} {
		if len(n) > 15 {
			t.Errorf("interface name %q is %d bytes, over 15", n, len(n))
		}
	}
}

// TestSummarizeSuites covers what the fw and dlb suites add: cases with
// their own metrics, baselines measuring only their neighbours' metrics,
// unpaired figures aggregated without a baseline, comparisons between
// cases, and the "50,000/s or the generator's limit" target.
func TestSummarizeSuites(t *testing.T) {
	c := newCollected()
	// One rep: baseline, fw-10k, baseline, nft-linear-10k, baseline,
	// fw-swap-10k, baseline.
	c.base = [][]sample{{
		{MetricUDP64: 100, MetricConnRate: 20000},
		{MetricUDP64: 100, MetricConnRate: 20000},
		{MetricUDP64: 100},
		{},
	}, {
		{MetricUDP64: 120, MetricConnRate: 60000},
		{MetricUDP64: 120, MetricConnRate: 60000},
		{MetricUDP64: 120},
		{},
	}}
	c.cases["fw-10k"] = []sample{{MetricUDP64: 95, MetricConnRate: 18500}, {MetricUDP64: 110, MetricConnRate: 58000}}
	c.cases["nft-linear-10k"] = []sample{{MetricUDP64: 3}, {MetricUDP64: 3.5}}
	c.cases["fw-swap-10k"] = []sample{
		{MetricSwapP50: 60, MetricSwapMax: 90, MetricSwapD: 55, MetricSwapLost: 0},
		{MetricSwapP50: 70, MetricSwapMax: 120, MetricSwapD: 65, MetricSwapLost: 2},
	}
	rs := summarize(c, []string{MetricUDP64, MetricConnRate}, []measuredCase{
		{"fw-10k", []string{MetricUDP64, MetricConnRate}},
		{"nft-linear-10k", []string{MetricUDP64}},
		{"fw-swap-10k", reported([]string{MetricSwap})},
	})
	got := map[string]Result{}
	for _, r := range rs {
		k := r.Case + "/" + r.Metric
		if r.Vs != "" {
			k = r.Case + " vs " + r.Vs + "/" + r.Metric
		}
		got[k] = r
	}
	if r := got["fw-10k/conn_rate"]; r.Value != 38250 || r.Baseline != 40000 || r.Target != ">=0.9x" || !*r.Pass || !strings.Contains(r.Note, "generator-bound") {
		t.Errorf("fw-10k conn_rate: %+v, want judged against the generator's limit (baseline 40,000 < 50,000)", r)
	}
	if r := got["fw-swap-10k/swap_max_ms"]; r.Value != 120 || r.HasBaseline || r.Target != "<100" || *r.Pass {
		t.Errorf("swap_max_ms: %+v, want the worst of the reps, no baseline, FAIL", r)
	}
	if r := got["fw-swap-10k/swap_lost_packets"]; r.Value != 2 || r.Target != "<=0" || *r.Pass {
		t.Errorf("swap_lost_packets: %+v, want the sum over reps, FAIL", r)
	}
	if r := got["fw-swap-10k/swap_p50_ms"]; r.Value != 65 || r.Target != "" {
		t.Errorf("swap_p50_ms: %+v, want the median, no target", r)
	}
	r, ok := got["fw-10k vs nft-linear-10k/udp64_pps"]
	if !ok || r.Value != 102.5 || r.Baseline != 3.25 || r.Target != ">=30x" || !*r.Pass {
		t.Errorf("comparison: %+v (present %v), want fw-10k 102.5 vs nft 3.25, >=30x PASS", r, ok)
	}
	if _, ok := got["fw-100k vs fw-1/udp64_pps"]; ok {
		t.Error("a comparison of cases that were not measured was reported")
	}
	var buf bytes.Buffer
	if err := writeJSON(&buf, []Result{r}); err != nil {
		t.Fatal(err)
	}
	if want := `"ratio":31.538,"vs":"nft-linear-10k"`; !strings.Contains(buf.String(), want) {
		t.Errorf("JSON %s lacks %s", buf.String(), want)
	}
	// The floor met: judged on the value.
	hi := Result{Case: "fw-10k", Metric: MetricConnRate, Value: 52000, Baseline: 60000, Ratio: 52000.0 / 60000, HasBaseline: true}
	judge(&hi)
	if hi.Target != ">=50000" || !*hi.Pass {
		t.Errorf("fw-10k at 52,000/s with the generator at 60,000/s: %+v", hi)
	}
}

func TestCaseMetrics(t *testing.T) {
	byName := map[string]benchCase{}
	for _, c := range cases {
		byName[c.name] = c
	}
	fw, nft, swap, fast := byName["fw-10k"], byName["nft-linear-10k"], byName["fw-swap-10k"], byName["fast-1"]
	for _, tc := range []struct {
		name       string
		prev, next *benchCase
		sel        []string
		want       string
	}{
		{"alone", nil, nil, nil, "tcp_1,tcp_2,udp64_pps,rr_latency"},
		{"alone, chosen", nil, nil, []string{MetricConnRate, MetricSwap}, "conn_rate"},
		{"before fw", nil, &fw, nil, "tcp_1,udp64_pps,conn_rate"},
		{"between fw and nft", &fw, &nft, nil, "tcp_1,udp64_pps,conn_rate"},
		{"between nft and swap", &nft, &swap, nil, "udp64_pps"},
		{"after swap", &swap, nil, nil, ""},
		{"core, narrowed", &fast, nil, []string{MetricUDP64, MetricConnRate}, "udp64_pps"},
	} {
		if got := strings.Join(baselineMetrics(tc.prev, tc.next, tc.sel), ","); got != tc.want {
			t.Errorf("%s: baseline measures %q, want %q", tc.name, got, tc.want)
		}
	}
	if got := caseMetrics(nft, []string{MetricTCP1}); len(got) != 0 {
		t.Errorf("nft-linear-10k with --metrics tcp_1 measures %v, want nothing (left out)", got)
	}
}
