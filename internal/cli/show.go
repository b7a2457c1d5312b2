package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

func (a *app) listCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the protected vNICs and their chains",
		Long: `List prints one line per vNIC that has a chain:

  VNIC     the device name
  IFINDEX  its interface index
  MODE     how the chain is attached to tc: tcx or clsact
  CHAIN    the slots in order, "SLOT:FILTER", with what differs from the
           defaults in parentheses: "open" for a filter that fails open,
           the direction for one that filters only from-vm or to-vm, and a
           slow path that is not running ("slow path down")
  OWNER    who asked for the chain ('vfctl chain set --owner')

It changes nothing. 'vfctl show VNIC' has the details and counters.`,
		Example: `  vfctl list
  vfctl list -o json | jq -r '.[].name'`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			vs, err := call(ctx, a, a.client.VNICs)
			if err != nil {
				return err
			}
			if vs == nil {
				vs = []api.VNIC{}
			}
			return a.emit(vs, func(w io.Writer) error {
				if len(vs) == 0 {
					fmt.Fprintln(w, "no vNIC has a chain; attach one with 'vfctl attach VNIC FILTER'")
					return nil
				}
				tw := table(w)
				row(tw, "VNIC", "IFINDEX", "MODE", "CHAIN", "OWNER")
				for _, v := range vs {
					row(tw, v.Name, v.Ifindex, dash(v.Mode), chainLabel(v), dash(v.Owner))
				}
				return tw.Flush()
			})
		}),
	}
}

func (a *app) showCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show VNIC",
		Short: "Show a vNIC's chain with its counters",
		Long: `Show prints the chain of VNIC and its counters:

  chain      per direction, the frames the chain saw (entered), let
             through (passed) and dropped, in packets and bytes
  each slot  the filter, its version, directions, failure mode, slow path
             state (running, down, stalled, panicked) and parameters;
             its verdicts per direction: continue, drop, punt (to the slow
             path), redirect, consumed, and the two failure verdicts:
             fail_closed (dropped because the filter could not decide)
             and fail_open (passed for the same reason); then the counters
             the filter reports itself

Counts use SI suffixes (k, M, G) and bytes IEC units (KiB, MiB); -o json
has the exact values. A slow path that is not running or a non-zero
fail_closed count is called out with a "!" line. It changes nothing.`,
		Example: `  vfctl show vnet3
  vfctl show vnet3 -o json | jq '.slots[].verdicts["from-vm"].fail_closed'`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) {
				return a.client.VNIC(ctx, args[0])
			})
			if err != nil {
				return err
			}
			return a.emit(v, func(w io.Writer) error { return printShow(w, v) })
		}),
	}
}

// showDirections are the direction columns of "vfctl show": those with
// counters, or both when there are none yet.
func showDirections(v *api.VNIC) []string {
	seen := map[string]bool{}
	for d := range v.Chain {
		seen[d] = true
	}
	for _, s := range v.Slots {
		for d := range s.Verdicts {
			seen[d] = true
		}
	}
	if len(seen) == 0 {
		return []string{"from-vm", "to-vm"}
	}
	return directionOrder(mapKeys(seen))
}

func counterHeader(first string, dirs []string) []any {
	h := []any{first}
	for _, d := range dirs {
		u := strings.ToUpper(d)
		h = append(h, u+" PKTS", u+" BYTES")
	}
	return h
}

func counterRow(name string, dirs []string, get func(dir string) (api.Counter, bool)) []any {
	r := []any{name}
	for _, d := range dirs {
		c, ok := get(d)
		if !ok {
			r = append(r, "-", "-")
			continue
		}
		r = append(r, humanCount(float64(c.Packets)), humanBytes(float64(c.Bytes)))
	}
	return r
}

// verdictNames are the verdicts of api.Verdicts in the order shown.
var verdictNames = []string{"continue", "drop", "punt", "redirect", "consumed", "fail_closed", "fail_open"}

func verdict(v api.Verdicts, name string) api.Counter {
	switch name {
	case "continue":
		return v.Continue
	case "drop":
		return v.Drop
	case "punt":
		return v.Punt
	case "redirect":
		return v.Redirect
	case "consumed":
		return v.Consumed
	case "fail_closed":
		return v.FailClosed
	case "fail_open":
		return v.FailOpen
	}
	return api.Counter{}
}

func printShow(w io.Writer, v *api.VNIC) error {
	fmt.Fprintln(w, vnicHeader(v))
	dirs := showDirections(v)

	fmt.Fprintln(w)
	tw := table(w)
	row(tw, counterHeader("CHAIN", dirs)...)
	for _, name := range []string{"entered", "passed", "dropped"} {
		row(tw, counterRow(name, dirs, func(d string) (api.Counter, bool) {
			c, ok := v.Chain[d]
			switch name {
			case "entered":
				return c.Entered, ok
			case "passed":
				return c.Passed, ok
			}
			return c.Dropped, ok
		})...)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Slots) == 0 {
		fmt.Fprintln(w, "\nchain is empty: frames pass unfiltered")
		return nil
	}
	for _, s := range v.Slots {
		fmt.Fprintf(w, "\nslot %d: %s %s  directions %s  failmode %s  slow path %s\n",
			s.Slot, s.Filter, dash(s.Version), dash(s.Directions), dash(s.FailMode), slowPathLabel(s))
		fmt.Fprintf(w, "  params: %s\n", formatParams(s.Params))
		if s.SlowPath && s.SlowPathState != "" && s.SlowPathState != "running" {
			what := "are dropped (fail closed)"
			if s.FailMode == "open" {
				what = "pass unfiltered (fail open)"
			}
			fmt.Fprintf(w, "  ! slow path %s: frames this filter punts %s\n", s.SlowPathState, what)
		}
		if len(s.Verdicts) == 0 {
			fmt.Fprintln(w, "  no verdict counters")
		} else {
			tw := table(w)
			h := counterHeader("VERDICT", dirs)
			h[0] = "  " + h[0].(string)
			row(tw, h...)
			for _, name := range verdictNames {
				r := counterRow(name, dirs, func(d string) (api.Counter, bool) {
					vd, ok := s.Verdicts[d]
					return verdict(vd, name), ok
				})
				r[0] = "  " + r[0].(string)
				row(tw, r...)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			var failed uint64
			for _, vd := range s.Verdicts {
				failed += vd.FailClosed.Packets
			}
			if failed > 0 {
				fmt.Fprintf(w, "  ! %s frames dropped because %s could not decide (fail_closed)\n", humanCount(float64(failed)), s.Filter)
			}
		}
		if len(s.Counters) > 0 {
			tw := table(w)
			row(tw, "  FILTER COUNTER", "LABELS", "VALUE")
			for _, c := range s.Counters {
				val := formatValue(c.Value)
				if c.Gauge {
					val += " (gauge)"
				}
				row(tw, "  "+c.Name, formatLabels(c.Labels), val)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}
