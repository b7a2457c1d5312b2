package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"
)

// topRow is one vNIC's rates over the last interval.
type topRow struct {
	vnic                         string
	inPPS, outPPS, inBPS, outBPS float64
	dropPS, failPS               float64
	reset                        bool
}

func (a *app) topCommand() *cobra.Command {
	var (
		interval time.Duration
		limit    int
		sortBy   string
		count    int
	)
	c := &cobra.Command{
		Use:   "top [--interval D] [--sort pps|bytes|drops] [--limit N] [-n COUNT]",
		Short: "Live per-vNIC packet, byte and drop rates, busiest first",
		Long: `Top redraws, every --interval, one line per protected vNIC with the rates
over the last interval, busiest first:

  IN pps / IN bit/s    what the VM sent (from-vm) into its chain
  OUT pps / OUT bit/s  what was sent to the VM (to-vm) into its chain
  DROP/s               frames the chains dropped (both directions)
  FAIL/s               frames dropped because a filter could not decide

On a terminal the screen is cleared each time; otherwise (a pipe, a file)
each sample is printed after the previous one. Ctrl-C ends it (exit 0).
With -n it stops after COUNT samples. It changes nothing.`,
		Example: "  vfctl top\n  vfctl top --sort drops --limit 10\n  vfctl top -n 3 --interval 2s > rates.txt",
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			if interval < minWatch {
				return usagef("--interval %s: want at least %s", interval, minWatch)
			}
			switch sortBy {
			case "pps", "bytes", "drops":
			default:
				return usagef("--sort %q: want pps, bytes or drops", sortBy)
			}
			tty := false
			if f, ok := a.stdout.(*os.File); ok {
				if st, err := f.Stat(); err == nil {
					tty = st.Mode()&os.ModeCharDevice != 0
				}
			}
			prev, err := a.snapshot(ctx, "")
			if err != nil {
				return err
			}
			taken := time.Now()
			t := time.NewTicker(interval)
			defer t.Stop()
			for n := 0; count == 0 || n < count; n++ {
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
				cur, err := a.snapshot(ctx, "")
				if err != nil {
					if ctx.Err() != nil {
						return nil
					}
					fmt.Fprintf(a.stderr, "vfctl: %v (retrying every %s)\n", err, interval)
					continue
				}
				now := time.Now()
				rows := topRows(statLines(prev), statLines(cur), now.Sub(taken))
				sortTop(rows, sortBy)
				if tty {
					fmt.Fprint(a.stdout, "\x1b[H\x1b[2J")
				} else if n > 0 {
					fmt.Fprintln(a.stdout)
				}
				printTop(a.stdout, rows, limit, now, now.Sub(taken))
				prev, taken = cur, now
			}
			return nil
		}),
	}
	f := c.Flags()
	f.DurationVar(&interval, "interval", time.Second, "sampling `interval`")
	f.IntVar(&limit, "limit", 25, "show the `N` busiest vNICs (0: all)")
	f.StringVar(&sortBy, "sort", "pps", "order by `key`: pps, bytes or drops")
	f.IntVarP(&count, "count", "n", 0, "stop after `COUNT` samples (0: until Ctrl-C)")
	return c
}

func topRows(prev, cur []statLine, elapsed time.Duration) []topRow {
	before := map[string]statLine{}
	for _, l := range prev {
		before[l.vnic+"\x00"+l.dir] = l
	}
	byVNIC := map[string]*topRow{}
	var order []string
	secs := elapsed.Seconds()
	for _, l := range cur {
		r := byVNIC[l.vnic]
		if r == nil {
			r = &topRow{vnic: l.vnic}
			byVNIC[l.vnic] = r
			order = append(order, l.vnic)
		}
		p, ok := before[l.vnic+"\x00"+l.dir]
		if l.none || !ok || p.none {
			continue
		}
		if l.entered < p.entered || l.nbytes < p.nbytes || l.dropped < p.dropped || l.failed < p.failed {
			r.reset = true
			continue
		}
		pps, bps := float64(l.entered-p.entered)/secs, float64(l.nbytes-p.nbytes)*8/secs
		if l.dir == "from-vm" {
			r.inPPS, r.inBPS = pps, bps
		} else {
			r.outPPS, r.outBPS = pps, bps
		}
		r.dropPS += float64(l.dropped-p.dropped) / secs
		r.failPS += float64(l.failed-p.failed) / secs
	}
	out := make([]topRow, 0, len(order))
	for _, n := range order {
		out = append(out, *byVNIC[n])
	}
	return out
}

func sortTop(rows []topRow, by string) {
	key := func(r topRow) float64 {
		switch by {
		case "bytes":
			return r.inBPS + r.outBPS
		case "drops":
			return r.dropPS + r.failPS
		}
		return r.inPPS + r.outPPS
	}
	sort.SliceStable(rows, func(i, j int) bool {
		if ki, kj := key(rows[i]), key(rows[j]); ki != kj {
			return ki > kj
		}
		return rows[i].vnic < rows[j].vnic
	})
}

func printTop(w io.Writer, rows []topRow, limit int, now time.Time, over time.Duration) {
	fmt.Fprintf(w, "vfctl top — %s, rates over %s, %d vNICs\n\n", now.Format("15:04:05"), over.Round(time.Millisecond), len(rows))
	tw := table(w)
	row(tw, "VNIC", "IN pps", "OUT pps", "IN bit/s", "OUT bit/s", "DROP/s", "FAIL/s")
	for i, r := range rows {
		if limit > 0 && i >= limit {
			break
		}
		if r.reset {
			row(tw, r.vnic, "reset", "reset", "reset", "reset", "reset", "reset")
			continue
		}
		row(tw, r.vnic, humanCount(r.inPPS), humanCount(r.outPPS), humanCount(r.inBPS), humanCount(r.outBPS), humanCount(r.dropPS), humanCount(r.failPS))
	}
	_ = tw.Flush()
}
