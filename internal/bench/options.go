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
	// Cases to measure besides the baseline, by name (CaseNames); nil: all.
	Cases []string
	// Metrics to measure, by name (MetricNames); nil: all.
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

// benchCase is one datapath configuration of the filtered vNIC.
type benchCase struct {
	name string
	// chain is what PUT /v1/vnics/vnetA sets; nil: no chain at all.
	chain []api.FilterSpec
	doc   string
}

// baselineCase has no datapath on the vNIC at all.
const baselineCase = "baseline"

// puntFilter is the slow-path pass-through filter of the slow-punt case.
const puntFilter = "punt"

func count() api.FilterSpec { return api.FilterSpec{Name: "count"} }

// cases in measurement order.
var cases = []benchCase{
	{baselineCase, nil, "no datapath on the vNIC"},
	{"empty-chain", []api.FilterSpec{}, "a chain with zero filters: the dispatcher's own cost"},
	{"fast-1", []api.FilterSpec{count()}, "one eBPF fast-path filter (count)"},
	{"fast-4", []api.FilterSpec{count(), count(), count(), count()}, "four eBPF fast-path filters (count x4)"},
	{"slow-punt", []api.FilterSpec{{Name: puntFilter}}, "every frame through the Go slow path (punt) and back"},
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
		fmt.Fprintf(&b, "  %-12s %s\n", c.name, c.doc)
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
	metricUDP64Snt = "udp64_sent_pps" // reported inside the udp64_pps line
)

// MetricNames lists the metrics --metrics accepts, in measurement order.
func MetricNames() []string { return []string{MetricTCP1, MetricTCP2, MetricUDP64, MetricRR} }

// units of the reported metrics.
var units = map[string]string{
	MetricTCP1:  "Gb/s",
	MetricTCP2:  "Gb/s",
	MetricUDP64: "pps",
	MetricRRP50: "us",
	MetricRRP99: "us",
}

// reported expands the selected metric names into the names of the figures
// they produce, in output order.
func reported(metrics []string) []string {
	var out []string
	for _, m := range metrics {
		if m == MetricRR {
			out = append(out, MetricRRP50, MetricRRP99)
		} else {
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

// selectedCases returns the cases to measure, baseline always first.
func selectedCases(sel []string) ([]benchCase, error) {
	names, err := selectNames("case", sel, CaseNames())
	if err != nil {
		return nil, err
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
