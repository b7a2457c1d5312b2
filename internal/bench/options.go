package bench

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// Options configure Run. The zero value measures every case and metric with
// the defaults below.
type Options struct {
	// Filterd is the filterd binary; empty: ./bin/filterd, then $PATH.
	// Not needed when only the baseline is measured.
	Filterd string
	// Duration of each throughput measurement; default 5s. iperf3 takes
	// whole seconds, so TCP measurements round it up.
	Duration time.Duration
	// Reps is how many times each case (and the baseline beside it) is
	// measured; the reported value is the median. Default 3.
	Reps int
	// Cases to measure besides the baseline, by name (CaseNames); nil:
	// the cases of Suites.
	Cases []string
	// Suites whose cases are measured when Cases is nil (SuiteNames);
	// nil: core.
	Suites []string
	// Metrics to measure, by name (MetricNames); nil: each case's own
	// (coreMetrics for the core suite).
	Metrics []string
	// RoundTrips timed by the request/response metric; default 20000.
	RoundTrips int
	// JSON prints one JSON object per line and measurement instead of a table.
	JSON bool
	// Out receives the results; Log receives progress and notes. Nil
	// discards them.
	Out, Log io.Writer
}

// AttachOptions configure RunAttach.
type AttachOptions struct {
	// Filterd is the filterd binary; empty: ./bin/filterd, then $PATH.
	Filterd string
	// N is how many vNICs get a chain; default 200.
	N int
	// JSON prints one JSON object per line instead of a table.
	JSON bool
	// Out receives the results; Log receives progress and notes.
	Out, Log io.Writer
}

// Defaults.
const (
	DefaultDuration   = 5 * time.Second
	DefaultReps       = 3
	DefaultRoundTrips = 20000
	DefaultAttachN    = 200
	// maxAttachN keeps veth names within IFNAMSIZ and the run in minutes.
	maxAttachN = 9999
)

func (o Options) withDefaults() Options {
	if o.Duration <= 0 {
		o.Duration = DefaultDuration
	}
	if o.Reps <= 0 {
		o.Reps = DefaultReps
	}
	if o.RoundTrips <= 0 {
		o.RoundTrips = DefaultRoundTrips
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

func (o AttachOptions) withDefaults() AttachOptions {
	if o.N <= 0 {
		o.N = DefaultAttachN
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	return o
}

// benchCase is one datapath configuration of the filtered path.
type benchCase struct {
	name string
	// suite groups cases for --suite: core (the default run), fw, dlb.
	suite string
	// chain is what PUT /v1/vnics/vnetA sets; nil: no chain at all.
	chain []api.FilterSpec
	// fwRules > 0: the chain is one firewall with a generated policy of
	// this many rules (policy.go), written for the run.
	fwRules int
	// nft names an nftables rule set installed in the host namespace for
	// the case and removed after it (nft_linux.go); nftRules is the size
	// of the generated policy the fw-suite sets render (0: 10,000).
	nft      string
	nftRules int
	// dlb: the chain is one dlb filter with the VIP's services file.
	dlb bool
	// span: the chain is one mirror cloning to the monitoring VM's vNIC.
	span bool
	// vip: the traffic goes to the VIP (10.77.0.100), not to VM B.
	vip bool
	// swap: the case measures the policy swap under a live stream instead
	// of the paired metrics.
	swap bool
	// own: the case builds its own topology and measures its own baseline
	// beside it (crypt_linux.go), outside the shared baseline sequence.
	own bool
	// overlay: a two-host case of the encap suite (encap_linux.go), by
	// its setup: "encap" or "bridge-vxlan"; its baseline is "routed".
	overlay string
	// metrics the case measures when --metrics does not choose; nil:
	// coreMetrics.
	metrics []string
	doc     string
}

// hasChain reports whether the case puts a chain on the vNIC.
func (c benchCase) hasChain() bool { return c.chain != nil || c.fwRules > 0 || c.dlb || c.span }

// baselineCase has no datapath on the vNIC at all.
const baselineCase = "baseline"

// puntFilter is the slow-path pass-through filter of the slow-punt case.
const puntFilter = "punt"

// ExtPuntFilter is the external slow-path filter of the slow-ext case:
// vfbench loads it into its filterd with itself as the process
// (ServeExtPunt), which passes every frame.
const ExtPuntFilter = "vfbench-extpunt"

// Suites.
const (
	SuiteCore = "core"
	SuiteFW   = "fw"
	SuiteDLB  = "dlb"
	// SuiteMirror: the mirror filter at full speed (issue 7).
	SuiteMirror = "mirror"
	// SuiteCrypt: the encrypt filter across two simulated hosts (issue 10).
	SuiteCrypt = "crypt"
	// SuiteEncap: the overlay filter across two hosts (issue 9).
	SuiteEncap = "encap"
	SuiteAll   = "all"
)

// SuiteNames lists what --suite accepts.
func SuiteNames() []string {
	return []string{SuiteCore, SuiteFW, SuiteDLB, SuiteMirror, SuiteCrypt, SuiteEncap, SuiteAll}
}

func count() api.FilterSpec { return api.FilterSpec{Name: "count"} }

// Nftables rule sets of the fw and dlb suites.
const (
	nftLinearSet = "linear" // the fw policy, one rule per line, every packet walks it
	nftCTSet     = "ct"     // the same after "ct state established,related accept"
	nftSetsSet   = "sets"   // conntrack first, then the policy as concatenated interval verdict maps
	nftDNATSet   = "numgen" // DNAT of the VIP to the backends, round robin by numgen
)

// fwMetrics: what the firewall suite measures on each rule count;
// nftMetrics, on the nftables rule sets that only draw the pps curve.
var (
	fwMetrics  = []string{MetricUDP64, MetricTCP1, MetricConnRate, MetricLoad, MetricMem}
	nftMetrics = []string{MetricUDP64, MetricLoad}
)

// encapMetrics: what the encap suite measures (issue 9: TCP Gb/s, 64-byte pps).
var encapMetrics = []string{MetricTCP1, MetricUDP64}

// cases in measurement order.
var cases = []benchCase{
	{name: baselineCase, doc: "no datapath on the vNIC (every suite)"},
	{name: "empty-chain", suite: SuiteCore, chain: []api.FilterSpec{}, doc: "a chain with zero filters: the dispatcher's own cost"},
	{name: "fast-1", suite: SuiteCore, chain: []api.FilterSpec{count()}, doc: "one eBPF fast-path filter (count)"},
	{name: "fast-4", suite: SuiteCore, chain: []api.FilterSpec{count(), count(), count(), count()}, doc: "four eBPF fast-path filters (count x4)"},
	{name: "slow-punt", suite: SuiteCore, chain: []api.FilterSpec{{Name: puntFilter}}, doc: "every frame through the Go slow path (punt) and back"},
	{name: "slow-ext", suite: SuiteCore, chain: []api.FilterSpec{{Name: ExtPuntFilter}}, doc: "every frame through an external slow-path process (sdk/slowproc: vfbench itself, started by filterd) and back"},
	{name: "mirror", suite: SuiteMirror, chain: []api.FilterSpec{{Name: "mirror", Params: map[string]string{"sink": "/dev/null"}}}, doc: "mirror to pcapng (discarded): frames copied through the ring buffer to Go, default rate limit 10,000/s"},
	{name: "mirror-span", suite: SuiteMirror, span: true, doc: "mirror to a monitoring VM's vNIC (SPAN: clones in the kernel), default rate limit 10,000/s"},
	{name: "crypt", suite: SuiteCrypt, own: true, metrics: []string{MetricTCP1, MetricUDP64}, doc: "encrypt: VMs on two simulated hosts through wireguard-go; baseline = the same hosts in clear (crypt_linux.go)"},

	{name: "fw-1", suite: SuiteFW, fwRules: 1, metrics: fwMetrics, doc: "firewall, 1-rule policy (the allowing rule)"},
	{name: "fw-1k", suite: SuiteFW, fwRules: 1000, metrics: fwMetrics, doc: "firewall, 1,000 random rules, the allowing rule near the end"},
	{name: "fw-10k", suite: SuiteFW, fwRules: 10000, metrics: fwMetrics, doc: "firewall, 10,000 random rules, the allowing rule near the end"},
	{name: "fw-100k", suite: SuiteFW, fwRules: 100000, metrics: fwMetrics, doc: "firewall, 100,000 random rules, the allowing rule near the end"},
	{name: "nft-linear-1", suite: SuiteFW, nft: nftLinearSet, nftRules: 1, metrics: nftMetrics, doc: "no chain; fw-1's rule as an nftables inet forward chain"},
	{name: "nft-linear-1k", suite: SuiteFW, nft: nftLinearSet, nftRules: 1000, metrics: nftMetrics, doc: "no chain; fw-1k's rules, one nftables rule per line, no conntrack"},
	{name: "nft-linear-10k", suite: SuiteFW, nft: nftLinearSet, metrics: nftMetrics, doc: "no chain; fw-10k's rules as an nftables inet forward chain, one rule per line, no conntrack"},
	{name: "nft-linear-100k", suite: SuiteFW, nft: nftLinearSet, nftRules: 100000, metrics: nftMetrics, doc: "no chain; fw-100k's rules, one nftables rule per line, no conntrack"},
	{name: "nft-ct-10k", suite: SuiteFW, nft: nftCTSet, metrics: []string{MetricUDP64, MetricTCP1, MetricConnRate}, doc: "the same chain after \"ct state established,related accept\""},
	{name: "nft-sets-1", suite: SuiteFW, nft: nftSetsSet, nftRules: 1, metrics: nftMetrics, doc: "no chain; fw-1's rule the careful nftables way (nft-sets-10k)"},
	{name: "nft-sets-1k", suite: SuiteFW, nft: nftSetsSet, nftRules: 1000, metrics: nftMetrics, doc: "no chain; fw-1k's rules the careful nftables way (nft-sets-10k)"},
	{name: "nft-sets-10k", suite: SuiteFW, nft: nftSetsSet, nftRules: 10000, metrics: []string{MetricUDP64, MetricTCP1, MetricConnRate, MetricLoad}, doc: "no chain; fw-10k's rules as a careful nftables user writes them: ct state established,related accept, then concatenated interval verdict maps"},
	{name: "nft-sets-100k", suite: SuiteFW, nft: nftSetsSet, nftRules: 100000, metrics: nftMetrics, doc: "no chain; fw-100k's rules the careful nftables way (nft-sets-10k)"},
	{name: "fw-swap-10k", suite: SuiteFW, fwRules: 10000, swap: true, metrics: []string{MetricSwap}, doc: "firewall: reload a 10,000-rule policy 5 times under a paced UDP stream"},

	{name: "dlb-vip", suite: SuiteDLB, dlb: true, vip: true, metrics: []string{MetricTCP1, MetricUDP64, MetricConnRate}, doc: "dlb on the vNIC, traffic to the VIP (3 backends in VM B); baseline = straight to B"},
	{name: "encap", suite: SuiteEncap, overlay: "encap", metrics: encapMetrics, doc: "two hosts: the encap filter on both taps (VXLAN-GBP, table pushed through filterd's API); baseline = plain routing over the same underlay"},
	{name: "bridge-vxlan", suite: SuiteEncap, overlay: "bridge-vxlan", metrics: encapMetrics, doc: "two hosts: a learning VXLAN device on each host's bridge (the do-it-yourself overlay); baseline = plain routing"},
	{name: "nft-dnat", suite: SuiteDLB, nft: nftDNATSet, vip: true, metrics: []string{MetricTCP1, MetricUDP64, MetricConnRate}, doc: "no chain; nftables numgen DNAT of the VIP in the host namespace (br_netfilter)"},
}

// CaseNames lists the cases in measurement order, baseline first.
func CaseNames() []string {
	var out []string
	for _, c := range cases {
		out = append(out, c.name)
	}
	return out
}

// CaseHelp is one line per case, for -h.
func CaseHelp() string {
	var b strings.Builder
	for _, c := range cases {
		suite := c.suite
		if suite == "" {
			suite = "all"
		}
		fmt.Fprintf(&b, "  %-15s %-4s %s\n", c.name, suite, c.doc)
	}
	return b.String()
}

// Metric names, as printed.
const (
	MetricTCP1     = "tcp_1"
	MetricTCP2     = "tcp_2"
	MetricUDP64    = "udp64_pps"
	MetricRR       = "rr_latency" // selects the two below
	MetricRRP50    = "rr_latency_p50_us"
	MetricRRP99    = "rr_latency_p99_us"
	MetricConnRate = "conn_rate"
	MetricSwap     = "swap" // selects the four below
	MetricSwapP50  = "swap_p50_ms"
	MetricSwapMax  = "swap_max_ms"
	MetricSwapD    = "swap_filterd_ms"
	MetricSwapLost = "swap_lost_packets"
	// MetricLoad is the time to put the case's policy in place: the API
	// call that attaches the firewall with it, or `nft -f` of the rule set.
	MetricLoad = "policy_load_ms"
	// MetricMem is the kernel memory of the vNIC's firewall: the sum of
	// its maps' memlock (bpf_map_info).
	MetricMem      = "vnic_mem_bytes"
	metricUDP64Snt = "udp64_sent_pps" // reported inside the udp64_pps line
)

// coreMetrics are measured by the core cases, and by a baseline-only run.
var coreMetrics = []string{MetricTCP1, MetricTCP2, MetricUDP64, MetricRR}

// MetricNames lists the metrics --metrics accepts, in measurement order.
func MetricNames() []string {
	return []string{MetricTCP1, MetricTCP2, MetricUDP64, MetricRR, MetricConnRate, MetricSwap, MetricLoad, MetricMem}
}

// units of the reported metrics.
var units = map[string]string{
	MetricTCP1:     "Gb/s",
	MetricTCP2:     "Gb/s",
	MetricUDP64:    "pps",
	MetricRRP50:    "us",
	MetricRRP99:    "us",
	MetricConnRate: "conn/s",
	MetricSwapP50:  "ms",
	MetricSwapMax:  "ms",
	MetricSwapD:    "ms",
	MetricSwapLost: "packets",
	MetricLoad:     "ms",
	MetricMem:      "bytes",
}

// unpaired metrics have no baseline: they describe an operation, not a
// path (the swap). Their samples are aggregated over repetitions by aggr.
var unpaired = map[string]bool{MetricSwap: true, MetricLoad: true, MetricMem: true}

// aggr says how the per-repetition samples of a figure become its value:
// the median unless named here.
var aggr = map[string]string{MetricSwapMax: "max", MetricSwapLost: "sum"}

// reported expands the selected metric names into the names of the figures
// they produce, in output order.
func reported(metrics []string) []string {
	var out []string
	for _, m := range metrics {
		switch m {
		case MetricRR:
			out = append(out, MetricRRP50, MetricRRP99)
		case MetricSwap:
			out = append(out, MetricSwapP50, MetricSwapMax, MetricSwapD, MetricSwapLost)
		default:
			out = append(out, m)
		}
	}
	return out
}

// caseMetrics is what case c measures: its own list (or coreMetrics),
// narrowed to sel when --metrics chose.
func caseMetrics(c benchCase, sel []string) []string {
	own := c.metrics
	if own == nil {
		own = coreMetrics
	}
	if len(sel) == 0 {
		return slices.Clone(own)
	}
	var out []string
	for _, m := range MetricNames() {
		if slices.Contains(own, m) && slices.Contains(sel, m) {
			out = append(out, m)
		}
	}
	return out
}

// baselineMetrics is what the baseline between cases prev and next (either
// may be nil at the ends of a repetition) measures: the paired metrics of
// both, so each case has a baseline on each side. With no filtered case at
// all, the baseline measures sel or coreMetrics.
func baselineMetrics(prev, next *benchCase, sel []string) []string {
	if prev == nil && next == nil {
		if len(sel) == 0 {
			return slices.Clone(coreMetrics)
		}
		var out []string
		for _, m := range MetricNames() {
			if slices.Contains(sel, m) && !unpaired[m] {
				out = append(out, m)
			}
		}
		return out
	}
	var want []string
	for _, c := range []*benchCase{prev, next} {
		if c != nil {
			want = append(want, caseMetrics(*c, sel)...)
		}
	}
	var out []string
	for _, m := range MetricNames() {
		if slices.Contains(want, m) && !unpaired[m] {
			out = append(out, m)
		}
	}
	return out
}

// selectNames checks a comma-separated selection against the known names
// and returns it in the known order; empty selects all.
func selectNames(kind string, sel, known []string) ([]string, error) {
	if len(sel) == 0 {
		return slices.Clone(known), nil
	}
	for _, s := range sel {
		if !slices.Contains(known, s) {
			return nil, fmt.Errorf("unknown %s %q (want one of %s)", kind, s, strings.Join(known, ", "))
		}
	}
	var out []string
	for _, k := range known {
		if slices.Contains(sel, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

// selectedCases returns the cases to measure, baseline always first: the
// named cases, or else the cases of the named suites (default: core).
func selectedCases(sel, suites []string) ([]benchCase, error) {
	names, err := selectNames("case", sel, CaseNames())
	if err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		if len(suites) == 0 {
			suites = []string{SuiteCore}
		}
		if suites, err = selectNames("suite", suites, SuiteNames()); err != nil {
			return nil, err
		}
		names = nil
		for _, c := range cases[1:] {
			if slices.Contains(suites, c.suite) || slices.Contains(suites, SuiteAll) {
				names = append(names, c.name)
			}
		}
	}
	out := []benchCase{cases[0]}
	for _, c := range cases[1:] {
		if slices.Contains(names, c.name) {
			out = append(out, c)
		}
	}
	return out, nil
}

// randomHex returns n random bytes as 2n hex digits: the suffix that keeps
// two benchmark runs (or a benchmark and a test) from colliding.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err)) // never fails on Linux
	}
	return hex.EncodeToString(b)
}
