package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// ErrMeasurementFailed is returned by Run, after the results are
// printed, when a figure could not be measured.
var ErrMeasurementFailed = errors.New("some measurements failed")

// Run measures the baseline and the selected cases, interleaved, and prints
// the results to o.Out. It needs root (namespaces, bpffs) and iperf3; the
// filtered cases need filterd. Everything it creates is removed before it
// returns, also when ctx is cancelled.
func Run(ctx context.Context, o Options) (err error) {
	o = o.withDefaults()
	sel, err := selectedCases(o.Cases)
	if err != nil {
		return err
	}
	metrics, err := selectNames("metric", o.Metrics, MetricNames())
	if err != nil {
		return err
	}
	if err := preflight(metrics); err != nil {
		return err
	}
	var bin string
	if len(sel) > 1 {
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

	c := newCollected()
	filtered := sel[1:]
	if d != nil {
		skipUnknownFilters(ctx, o, d, filtered, c)
	}
	// A datapath that cannot be put back to the baseline ends the
	// measurements, but what was measured up to then is still printed.
	var aborted error
measure:
	for rep := range o.Reps {
		c.base = append(c.base, nil)
		for k := 0; k <= len(filtered); k++ {
			// The baseline before case k (and after case k-1).
			if d != nil {
				if err := d.setChain(ctx, topo.a.tap, nil); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					aborted = fmt.Errorf("back to baseline after %s: %w", filtered[k-1].name, err)
					logf(o.Log, "ERROR: %v; measurements stop here", aborted)
					break measure
				}
			}
			s, err := measureAll(ctx, o, topo, metrics, rep, baselineCase, c)
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
			if err := d.setChain(ctx, topo.a.tap, bc.chain); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if bc.name == "slow-punt" && api.IsCode(err, api.CodeUnknownFilter) {
					c.skipped[bc.name] = fmt.Sprintf("filterd has no %q filter (unknown_filter)", puntFilter)
				} else {
					c.skipped[bc.name] = fmt.Sprintf("set chain: %v", err)
				}
				logf(o.Log, "NOTE: %s skipped: %s", bc.name, c.skipped[bc.name])
				continue
			}
			s, err = measureAll(ctx, o, topo, metrics, rep, bc.name, c)
			if err != nil {
				return err
			}
			c.cases[bc.name][rep] = s
			checkTraversal(ctx, o, d, topo.a.tap, bc)
		}
	}
	var names []string
	for _, bc := range filtered {
		names = append(names, bc.name)
	}
	rs := summarize(c, names, reported(metrics))
	if o.JSON {
		err = writeJSON(o.Out, rs)
	} else {
		title := fmt.Sprintf("vfbench %s: %d rep(s) x %v per measurement, %d round trips; attach mode %s\n"+
			"values are medians; each case is compared with the baselines measured just before and after it",
			time.Now().UTC().Format("2006-01-02 15:04 MST"), o.Reps, o.Duration, o.RoundTrips, mode)
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
func preflight(metrics []string) error {
	if os.Geteuid() != 0 {
		return errors.New("vfbench needs root (network namespaces, bpffs): run it with sudo")
	}
	for _, tool := range []string{"nsenter", "iperf3"} {
		if tool == "iperf3" && !strings.Contains(strings.Join(metrics, ","), "tcp") {
			continue
		}
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: install it (apt-get install -y %s)", tool, map[string]string{"nsenter": "util-linux", "iperf3": "iperf3"}[tool])
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
		for _, f := range bc.chain {
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

// measureAll measures every selected metric once in the current datapath
// state. A failed metric is recorded and the run goes on; only cancellation
// and a failed baseline end it.
func measureAll(ctx context.Context, o Options, t *topology, metrics []string, rep int, name string, c *collected) (sample, error) {
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
	for _, m := range metrics {
		switch m {
		case MetricTCP1, MetricTCP2:
			streams := 1
			if m == MetricTCP2 {
				streams = 2
			}
			g, err := iperfTCP(ctx, t, o.Duration, streams)
			if err != nil {
				if err := fail(m, err); err != nil {
					return nil, err
				}
				continue
			}
			s[m] = g
			logf(o.Log, "rep %d/%d %-11s %-10s %s", rep+1, o.Reps, name, m, formatValue(g, units[m]))
		case MetricUDP64:
			r, err := udpBlast(ctx, t, o.Duration)
			if err != nil {
				if err := fail(m, err); err != nil {
					return nil, err
				}
				continue
			}
			s[m], s[metricUDP64Snt] = r.received, r.sent
			logf(o.Log, "rep %d/%d %-11s %-10s %s received (%s sent)", rep+1, o.Reps, name, m, formatValue(r.received, "pps"), formatValue(r.sent, "pps"))
		case MetricRR:
			r, err := tcpRR(ctx, t, o.RoundTrips)
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
