package cli

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// minWatch keeps --watch from hammering filterd.
const minWatch = 100 * time.Millisecond

func (a *app) statsCommand() *cobra.Command {
	var watch time.Duration
	cmd := &cobra.Command{
		Use:   "stats [VNIC]",
		Short: "Print compact counters per vNIC, once or continuously",
		Long: `Stats prints one line per vNIC and direction with the chain's counters:

  ENTERED      frames the chain saw
  PASSED       frames it let through
  DROPPED      frames a filter or the framework dropped
  FAIL_CLOSED  frames dropped because a filter could not decide (its slow
               path down, stalled or panicked), summed over the slots
  BYTES        bytes the chain saw

Without VNIC it covers every vNIC with a chain.

With --watch DURATION it prints the totals, then every DURATION the rates
per second over the last interval, until interrupted (Ctrl-C, exit code 0).
A counter that went backwards (the chain was recreated) shows "reset".
With -o json it prints the VNIC objects (with counters) at every interval
instead, as a JSON array each time: rates are for the reader to compute.

It changes nothing.`,
		Example: `  vfctl stats
  vfctl stats vnet3
  vfctl stats --watch 2s
  vfctl stats vnet3 --watch 500ms -o json`,
		Args: args("[VNIC]"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			if watch < 0 || (watch > 0 && watch < minWatch) {
				return usagef("--watch %s: want an interval of at least %s", watch, minWatch)
			}
			name := ""
			if len(args) > 0 {
				name = args[0]
			}
			vs, err := a.snapshot(ctx, name)
			if err != nil {
				return err
			}
			taken := time.Now()
			if err := a.emit(vs, func(w io.Writer) error { return printTotals(w, vs) }); err != nil {
				return err
			}
			if watch == 0 {
				return nil
			}
			return a.watch(ctx, name, watch, vs, taken)
		}),
	}
	cmd.Flags().DurationVar(&watch, "watch", 0, "print rates every `DURATION` (e.g. 2s) until Ctrl-C")
	return cmd
}

// snapshot reads the counters of one vNIC, or of all when name is "".
func (a *app) snapshot(ctx context.Context, name string) ([]api.VNIC, error) {
	if name != "" {
		v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) { return a.client.VNIC(ctx, name) })
		if err != nil {
			return nil, err
		}
		return []api.VNIC{*v}, nil
	}
	list, err := call(ctx, a, a.client.VNICs)
	if err != nil {
		return nil, err
	}
	out := make([]api.VNIC, 0, len(list))
	for _, l := range list {
		v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) { return a.client.VNIC(ctx, l.Name) })
		if api.IsCode(err, api.CodeNotAttached) || api.IsCode(err, api.CodeNoSuchDevice) {
			continue // detached since the list was taken
		}
		if err != nil {
			return nil, err
		}
		out = append(out, *v)
	}
	return out, nil
}

// statLine is one line of "vfctl stats".
type statLine struct {
	vnic, dir                                string
	entered, passed, dropped, failed, nbytes uint64
	// none is set for a vNIC without chain counters yet.
	none bool
}

func statLines(vs []api.VNIC) []statLine {
	var out []statLine
	for _, v := range vs {
		if len(v.Chain) == 0 {
			out = append(out, statLine{vnic: v.Name, dir: "-", none: true})
			continue
		}
		for _, d := range directionOrder(mapKeys(v.Chain)) {
			c := v.Chain[d]
			l := statLine{vnic: v.Name, dir: d,
				entered: c.Entered.Packets, passed: c.Passed.Packets, dropped: c.Dropped.Packets,
				nbytes: c.Entered.Bytes}
			for _, s := range v.Slots {
				l.failed += s.Verdicts[d].FailClosed.Packets
			}
			out = append(out, l)
		}
	}
	return out
}

var statsHeader = []any{"VNIC", "DIR", "ENTERED", "PASSED", "DROPPED", "FAIL_CLOSED", "BYTES"}

func printTotals(w io.Writer, vs []api.VNIC) error {
	if len(vs) == 0 {
		fmt.Fprintln(w, "no vNIC has a chain")
		return nil
	}
	tw := table(w)
	row(tw, statsHeader...)
	for _, l := range statLines(vs) {
		if l.none {
			row(tw, l.vnic, l.dir, "-", "-", "-", "-", "-")
			continue
		}
		n := func(v uint64) string { return humanCount(float64(v)) }
		row(tw, l.vnic, l.dir, n(l.entered), n(l.passed), n(l.dropped), n(l.failed), humanBytes(float64(l.nbytes)))
	}
	return tw.Flush()
}

func printRates(w io.Writer, prev, cur []statLine, elapsed time.Duration) error {
	before := map[string]statLine{}
	for _, l := range prev {
		before[l.vnic+"\x00"+l.dir] = l
	}
	tw := table(w)
	row(tw, "VNIC", "DIR", "ENTERED/s", "PASSED/s", "DROPPED/s", "FAIL_CLOSED/s", "BYTES/s")
	secs := elapsed.Seconds()
	for _, l := range cur {
		p, ok := before[l.vnic+"\x00"+l.dir]
		if l.none || !ok || p.none {
			row(tw, l.vnic, l.dir, "-", "-", "-", "-", "-")
			continue
		}
		rate := func(c, p uint64, bytes bool) string {
			if c < p {
				return "reset"
			}
			r := float64(c-p) / secs
			if bytes {
				return humanBytes(r)
			}
			return humanCount(r)
		}
		row(tw, l.vnic, l.dir, rate(l.entered, p.entered, false), rate(l.passed, p.passed, false),
			rate(l.dropped, p.dropped, false), rate(l.failed, p.failed, false), rate(l.nbytes, p.nbytes, true))
	}
	return tw.Flush()
}

// watch prints rates every interval until ctx is cancelled. A failed read
// is reported and retried at the next interval: filterd may be restarting.
func (a *app) watch(ctx context.Context, name string, interval time.Duration, prev []api.VNIC, taken time.Time) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	prevLines := statLines(prev)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		vs, err := a.snapshot(ctx, name)
		if err != nil {
			if ctx.Err() != nil {
				return nil // interrupted mid-request
			}
			fmt.Fprintf(a.stderr, "vfctl: %v (retrying every %s)\n", err, interval)
			continue
		}
		now := time.Now()
		cur := statLines(vs)
		err = a.emit(vs, func(w io.Writer) error {
			fmt.Fprintf(w, "\n%s  rates over %s\n", now.Format("15:04:05"), now.Sub(taken).Round(time.Millisecond))
			return printRates(w, prevLines, cur, now.Sub(taken))
		})
		if err != nil {
			return err
		}
		prevLines, taken = cur, now
	}
}
