package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// ErrMeasurementFailed is returned by Run, after the results are
// printed, when a figure could not be measured.
var ErrMeasurementFailed = errors.New("some measurements failed")

// Run measures the baseline and the selected cases, interleaved, and prints
// the results to o.Out. It needs root (namespaces, bpffs) and iperf3; the
// filtered cases need filterd, the nftables cases nft. Everything it
// creates is removed before it returns, also when ctx is cancelled.
func Run(ctx context.Context, o Options) (err error) {
	o = o.withDefaults()
	sel, err := selectedCases(o.Cases, o.Suites)
	if err != nil {
		return err
	}
	// The encap suite's two-host cases run on their own topologies
	// (encap_linux.go), after the one-host cases if there are any.
	var overlay []benchCase
	if sel, overlay = splitOverlay(sel); len(overlay) > 0 {
		if len(sel) == 1 {
			return runOverlay(ctx, o, overlay)
		}
		defer func() {
			if ctx.Err() == nil {
				err = errors.Join(err, runOverlay(ctx, o, overlay))
			}
		}()
	}
	if len(o.Metrics) > 0 {
		if _, err := selectNames("metric", o.Metrics, MetricNames()); err != nil {
			return err
		}
	}
	// A case none of whose metrics was chosen is left out.
	var filtered []benchCase
	var all []string
	for _, bc := range sel[1:] {
		ms := caseMetrics(bc, o.Metrics)
		if len(ms) == 0 {
			logf(o.Log, "NOTE: %s measures none of --metrics %s: left out", bc.name, strings.Join(o.Metrics, ","))
			continue
		}
		filtered = append(filtered, bc)
		all = append(all, ms...)
	}
	all = append(all, baselineMetrics(nil, nil, o.Metrics)...)
	if err := preflight(all, filtered); err != nil {
		return err
	}
	// Cases with their own topology and baseline (crypt) run first, apart.
	var own []benchCase
	filtered = slices.DeleteFunc(filtered, func(bc benchCase) bool {
		if bc.own {
			own = append(own, bc)
		}
		return bc.own
	})
	ownRs := runOwnCases(ctx, o, own)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if len(own) > 0 && len(filtered) == 0 {
		return writeOwn(o, ownRs)
	}
	var bin string
	if slices.ContainsFunc(filtered, benchCase.hasChain) {
		if bin, err = findFilterd(o.Filterd); err != nil {
			return err
		}
	}

	topo, err := newTopology()
	if err != nil {
		return fmt.Errorf("build topology: %w", err)
	}
	defer func() { err = errors.Join(err, wrapErr("remove topology", topo.Close())) }()
	logf(o.Log, "topology: host %s (bridge %s), VM A %s (%s, vNIC %s), VM B %s (%s, vNIC %s)",
		topo.host.ns.name, topo.host.bridge, topo.a.ns.name, vmAIPv4, topo.a.tap, topo.b.ns.name, vmBIPv4, topo.b.tap)

	var d *daemon
	mode := "none"
	if bin != "" {
		if d, err = startDaemon(ctx, bin, topo.host); err != nil {
			return err
		}
		defer func() {
			err = errors.Join(err, wrapErr("stop filterd", d.close(err != nil && !errors.Is(err, context.Canceled))))
		}()
		if v, verr := d.client.Version(ctx); verr == nil {
			mode = v.AttachMode
			logf(o.Log, "filterd %s (api %s, attach mode %s) from %s, bpffs %s", v.Version, v.API, v.AttachMode, bin, d.bpffs)
		}
	}
	e, err := newRunEnv(o, topo, d)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, e.close()) }()

	c := newCollected()
	if d != nil {
		loadExtPunt(ctx, o, d, filtered, c)
		skipUnknownFilters(ctx, o, d, filtered, c)
	}
	// A datapath that cannot be put back to the baseline ends the
	// measurements, but what was measured up to then is still printed.
	var aborted error
measure:
	for rep := range o.Reps {
		c.base = append(c.base, nil)
		var undo func() error // the live case's teardown
		for k := 0; k <= len(filtered); k++ {
			// The baseline before case k (and after case k-1).
			if undo != nil {
				err := undo()
				undo = nil
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					aborted = fmt.Errorf("back to baseline after %s: %w", filtered[k-1].name, err)
					logf(o.Log, "ERROR: %v; measurements stop here", aborted)
					break measure
				}
			}
			var prev, next *benchCase
			if k > 0 {
				prev = &filtered[k-1]
			}
			if k < len(filtered) {
				next = &filtered[k]
			}
			s, err := measureAll(ctx, o, e, baselineMetrics(prev, next, o.Metrics), rep, cases[0], c)
			if err != nil {
				return err
			}
			c.base[rep] = append(c.base[rep], s)
			if k == len(filtered) {
				break
			}
			bc := filtered[k]
			if _, ok := c.skipped[bc.name]; ok {
				continue
			}
			if c.cases[bc.name] == nil {
				c.cases[bc.name] = make([]sample, o.Reps)
			}
			t0 := time.Now()
			undo, err = e.setup(ctx, bc)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if bc.name == "slow-punt" && api.IsCode(err, api.CodeUnknownFilter) {
					c.skipped[bc.name] = fmt.Sprintf("filterd has no %q filter (unknown_filter)", puntFilter)
				} else {
					c.skipped[bc.name] = fmt.Sprintf("set up: %v", err)
				}
				logf(o.Log, "NOTE: %s skipped: %s", bc.name, c.skipped[bc.name])
				continue
			}
			if setupTime := time.Since(t0); setupTime > time.Second {
				logf(o.Log, "rep %d/%d %-11s set up in %.1f s", rep+1, o.Reps, bc.name, setupTime.Seconds())
			}
			if bc.swap {
				s, err = e.measureSwap(ctx, rep, bc, c)
			} else {
				s, err = measureAll(ctx, o, e, caseMetrics(bc, o.Metrics), rep, bc, c)
			}
			if err != nil {
				if undo != nil {
					_ = undo()
				}
				return err
			}
			c.cases[bc.name][rep] = s
			if bc.hasChain() {
				checkTraversal(ctx, o, d, topo.a.tap, bc)
			}
		}
		if undo != nil {
			if err := undo(); err != nil {
				aborted = fmt.Errorf("tear down %s: %w", filtered[len(filtered)-1].name, err)
				logf(o.Log, "ERROR: %v; measurements stop here", aborted)
				break measure
			}
		}
	}
	var mcs []measuredCase
	for _, bc := range filtered {
		mcs = append(mcs, measuredCase{bc.name, reported(caseMetrics(bc, o.Metrics))})
	}
	var baseFigs []string
	if len(filtered) == 0 {
		baseFigs = reported(baselineMetrics(nil, nil, o.Metrics))
	} else {
		var want []string
		for _, bc := range filtered {
			want = append(want, caseMetrics(bc, o.Metrics)...)
		}
		for _, m := range MetricNames() {
			if slices.Contains(want, m) && !unpaired[m] {
				baseFigs = append(baseFigs, reported([]string{m})...)
			}
		}
	}
	rs := append(summarize(c, baseFigs, mcs), ownRs...)
	title := fmt.Sprintf("vfbench %s: %d rep(s) x %v per measurement, %d round trips; attach mode %s\n"+
		"values are medians; each case is compared with the baselines measured just before and after it",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), o.Reps, o.Duration, o.RoundTrips, mode)
	return printResults(o, title, rs, aborted)
}

// printResults prints rs (JSON with --json, else a table under title) and
// then returns aborted, or ErrMeasurementFailed when a measurement failed.
func printResults(o Options, title string, rs []Result, aborted error) error {
	var err error
	if o.JSON {
		err = writeJSON(o.Out, rs)
	} else {
		err = writeTable(o.Out, title, rs)
	}
	if err != nil {
		return err
	}
	if aborted != nil {
		return aborted
	}
	for _, r := range rs {
		if r.Error != "" {
			return ErrMeasurementFailed
		}
	}
	return nil
}

// preflight checks what the run needs before building anything, and says
// how to get it.
func preflight(metrics []string, cs []benchCase) error {
	if os.Geteuid() != 0 {
		return errors.New("vfbench needs root (network namespaces, bpffs): run it with sudo")
	}
	need := map[string]string{"nsenter": "util-linux"}
	if slices.ContainsFunc(metrics, func(m string) bool { return strings.HasPrefix(m, "tcp_") }) {
		need["iperf3"] = "iperf3"
	}
	if slices.ContainsFunc(cs, func(c benchCase) bool { return c.nft != "" }) {
		need["nft"] = "nftables"
	}
	for tool, pkg := range need {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install it (apt-get install -y %s)", tool, pkg)
		}
	}
	return nil
}

// skipUnknownFilters marks the cases whose filters the daemon does not have.
func skipUnknownFilters(ctx context.Context, o Options, d *daemon, cs []benchCase, c *collected) {
	fs, err := d.client.Filters(ctx)
	if err != nil {
		logf(o.Log, "list filters: %v (cases are tried anyway)", err)
		return
	}
	have := map[string]bool{}
	for _, f := range fs {
		have[f.Name] = true
	}
	for _, bc := range cs {
		chain := bc.chain
		switch {
		case bc.fwRules > 0:
			chain = []api.FilterSpec{{Name: "firewall"}}
		case bc.dlb:
			chain = []api.FilterSpec{{Name: "dlb"}}
		case bc.span:
			chain = []api.FilterSpec{{Name: "mirror"}}
		}
		for _, f := range chain {
			if !have[f.Name] {
				c.skipped[bc.name] = fmt.Sprintf("filterd has no %q filter (unknown_filter)", f.Name)
				logf(o.Log, "NOTE: %s skipped: %s", bc.name, c.skipped[bc.name])
				break
			}
		}
	}
}

// checkTraversal warns when the chain's counters show that the traffic did
// not cross it: a ratio of 1.0 would then say nothing.
func checkTraversal(ctx context.Context, o Options, d *daemon, vnic string, bc benchCase) {
	v, err := d.client.VNIC(ctx, vnic)
	if err != nil {
		logf(o.Log, "WARNING: %s: read counters of %s: %v", bc.name, vnic, err)
		return
	}
	var entered uint64
	for _, cc := range v.Chain {
		entered += cc.Entered.Packets
	}
	if v.Chain != nil && entered == 0 {
		logf(o.Log, "WARNING: %s: the chain on %s counted no packet: traffic may have bypassed it", bc.name, vnic)
	}
}

// measureAll measures every metric in ms once in the current datapath
// state, with the traffic going where bc sends it. A failed metric is
// recorded and the run goes on; only cancellation and a failed baseline end
// it.
func measureAll(ctx context.Context, o Options, e *runEnv, ms []string, rep int, bc benchCase, c *collected) (sample, error) {
	t := e.topo
	name := bc.name
	dst := vmBIPv4.IP
	if bc.vip {
		dst = vipIPv4
	}
	s := sample{}
	fail := func(m string, err error) error {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if name == baselineCase {
			return fmt.Errorf("baseline %s: %w", m, err)
		}
		c.failed[[2]string{name, m}] = err.Error()
		logf(o.Log, "rep %d/%d %-11s %-10s FAILED: %v", rep+1, o.Reps, name, m, err)
		return nil
	}
	for _, m := range ms {
		switch m {
		case MetricTCP1, MetricTCP2:
			streams := 1
			if m == MetricTCP2 {
				streams = 2
			}
			g, err := iperfTCP(ctx, t, dst, o.Duration, streams)
			if err != nil {
				if err := fail(m, err); err != nil {
					return nil, err
				}
				continue
			}
			s[m] = g.gbps
			logf(o.Log, "rep %d/%d %-11s %-10s %s (%d retransmits)", rep+1, o.Reps, name, m, formatValue(g.gbps, units[m]), g.retransmits)
		case MetricUDP64:
			r, err := udpBlast(ctx, t, dst, o.Duration)
			if err != nil {
				if err := fail(m, err); err != nil {
					return nil, err
				}
				continue
			}
			s[m], s[metricUDP64Snt] = r.received, r.sent
			logf(o.Log, "rep %d/%d %-11s %-10s %s received (%s sent)", rep+1, o.Reps, name, m, formatValue(r.received, "pps"), formatValue(r.sent, "pps"))
		case MetricRR:
			r, err := tcpRR(ctx, t, dst, o.RoundTrips)
			if err != nil {
				for _, mm := range []string{MetricRRP50, MetricRRP99} {
					if err := fail(mm, err); err != nil {
						return nil, err
					}
				}
				continue
			}
			s[MetricRRP50], s[MetricRRP99] = r.p50, r.p99
			logf(o.Log, "rep %d/%d %-11s %-10s p50 %.1f us, p99 %.1f us", rep+1, o.Reps, name, m, r.p50, r.p99)
		case MetricLoad:
			s[m] = float64(e.loaded) / float64(time.Millisecond)
			logf(o.Log, "rep %d/%d %-11s %-10s %.1f ms", rep+1, o.Reps, name, m, s[m])
		case MetricMem:
			b, err := e.d.slotMemory(t.a.tap)
			if err != nil {
				if err := fail(m, err); err != nil {
					return nil, err
				}
				continue
			}
			s[m] = float64(b)
			logf(o.Log, "rep %d/%d %-11s %-10s %s", rep+1, o.Reps, name, m, formatValue(s[m], "bytes"))
		case MetricConnRate:
			r, err := connRate(ctx, t, dst, o.Duration)
			if err != nil {
				if err := fail(m, err); err != nil {
					return nil, err
				}
				continue
			}
			s[m] = r.rate
			logf(o.Log, "rep %d/%d %-11s %-10s %s (%d failed connects)", rep+1, o.Reps, name, m, formatValue(r.rate, "conn/s"), r.failed)
		}
	}
	return s, nil
}

func logf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, format+"\n", args...)
}

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}
