package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

func (a *app) checkCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Probe the kernel for the features vnicfilter needs",
		Long: `Check asks filterd to probe the running kernel and prints one line per
feature:

  FEATURE   what was probed
  STATUS    ok, or MISSING
  REQUIRED  yes if filterd cannot protect vNICs without it
  DETAIL    what was found, or why the probe failed

It exits 1 if a required feature is missing, 0 otherwise. It changes
nothing. Without a running daemon, 'filterd check' runs the same probe
locally.`,
		Example: `  vfctl check
  vfctl check -o json | jq '.features[] | select(.ok | not)'`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			r, err := call(ctx, a, a.client.Check)
			if errors.Is(err, api.ErrDaemonNotRunning) {
				return &exitError{code: ExitNoDaemon, msg: err.Error(),
					hint: fmt.Sprintf("start it (filterd --socket %s), or run 'filterd check' to probe without the daemon", a.socket)}
			}
			if err != nil {
				return err
			}
			err = a.emit(r, func(w io.Writer) error {
				fmt.Fprintf(w, "kernel %s  attach mode %s\n\n", dash(r.Kernel), dash(r.Mode))
				tw := table(w)
				row(tw, "FEATURE", "STATUS", "REQUIRED", "DETAIL")
				for _, f := range r.Features {
					status := "ok"
					if !f.OK {
						status = "MISSING"
					}
					row(tw, f.Name, status, yesNo(f.Required), dash(f.Detail))
				}
				return tw.Flush()
			})
			if err != nil {
				return err
			}
			var missing []string
			for _, f := range r.Features {
				if f.Required && !f.OK {
					missing = append(missing, f.Name)
				}
			}
			if len(missing) > 0 {
				return &exitError{code: ExitFailure,
					msg:  fmt.Sprintf("required kernel feature missing: %s", strings.Join(missing, ", ")),
					hint: "vnicfilter needs a newer kernel or one built with these features; the DETAIL column says what failed"}
			}
			return nil
		}),
	}
}

func (a *app) filtersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "filters [FILTER]",
		Short: "List the filters filterd can attach, with their parameters",
		Long: `Filters lists the filters registered in filterd, or only FILTER:

  NAME        what to pass to attach and chain set
  VERSION     the filter's version
  DIRECTIONS  the directions it filters by default (from-vm, to-vm, both)
  FAST        yes if it has an eBPF fast path in the kernel
  SLOW        yes if it has a slow path in filterd that gets punted frames
  FAILMODE    what it does by default when it cannot decide
  SUMMARY     what it does

and for each filter its parameters: name, type (with the accepted range
or values), default ("required" when it has none and must be given) and
documentation. Set them with --param KEY=VALUE or FILTER:KEY=VALUE.

It changes nothing.`,
		Example: `  vfctl filters
  vfctl filters dnslog`,
		Args: args("[FILTER]"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			fs, err := call(ctx, a, a.client.Filters)
			if err != nil {
				return err
			}
			if fs == nil {
				fs = []api.FilterInfo{}
			}
			sort.Slice(fs, func(i, j int) bool { return fs[i].Name < fs[j].Name })
			if len(args) > 0 {
				var names []string
				var one []api.FilterInfo
				for _, f := range fs {
					names = append(names, f.Name)
					if f.Name == args[0] {
						one = append(one, f)
					}
				}
				if len(one) == 0 {
					return &exitError{code: ExitNotFound, msg: fmt.Sprintf("unknown filter %q", args[0]),
						hint: "registered filters: " + dash(strings.Join(names, ", "))}
				}
				fs = one
			}
			return a.emit(fs, func(w io.Writer) error { return printFilters(w, fs) })
		}),
	}
}

func printFilters(w io.Writer, fs []api.FilterInfo) error {
	if len(fs) == 0 {
		fmt.Fprintln(w, "no filters registered")
		return nil
	}
	tw := table(w)
	row(tw, "NAME", "VERSION", "DIRECTIONS", "FAST", "SLOW", "FAILMODE", "SUMMARY")
	for _, f := range fs {
		row(tw, f.Name, dash(f.Version), dash(f.Directions), yesNo(f.FastPath), yesNo(f.SlowPath), dash(f.FailMode), dash(f.Summary))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range fs {
		fmt.Fprintln(w)
		if len(f.Params) == 0 {
			fmt.Fprintf(w, "%s: no parameters\n", f.Name)
			continue
		}
		fmt.Fprintf(w, "%s parameters:\n", f.Name)
		tw := table(w)
		row(tw, "  NAME", "TYPE", "DEFAULT", "DOC")
		for _, p := range f.Params {
			def := dash(p.Default)
			if p.Required {
				def = "required"
			}
			row(tw, "  "+p.Name, paramType(p), def, dash(p.Doc))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// paramType prints a parameter's type with its constraints: "int 1..100",
// "string pass|drop".
func paramType(p sdk.ParamSpec) string {
	t := p.Type.String()
	switch {
	case len(p.Enum) > 0:
		t += " " + strings.Join(p.Enum, "|")
	case p.Min != nil && p.Max != nil:
		t += fmt.Sprintf(" %d..%d", *p.Min, *p.Max)
	case p.Min != nil:
		t += fmt.Sprintf(" >=%d", *p.Min)
	case p.Max != nil:
		t += fmt.Sprintf(" <=%d", *p.Max)
	}
	return t
}

// versionOutput is what "vfctl version -o json" prints.
type versionOutput struct {
	Client struct {
		Version string `json:"version"`
		API     string `json:"api"`
	} `json:"client"`
	// Daemon is null when filterd is not running.
	Daemon *api.VersionInfo `json:"daemon"`
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print vfctl's and filterd's versions",
		Long: `Version prints vfctl's version and API version, and filterd's version,
API and slot ABI versions, attach mode and bpffs root.

If filterd is not running it says so and still exits 0. With -o json it
prints {"client": {...}, "daemon": VersionInfo or null}.`,
		Example: `  vfctl version
  vfctl version -o json | jq -r .daemon.version`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			var out versionOutput
			out.Client.Version, out.Client.API = Version, api.Version
			v, err := call(ctx, a, a.client.Version)
			switch {
			case errors.Is(err, api.ErrDaemonNotRunning):
			case err != nil:
				return err
			default:
				out.Daemon = v
			}
			return a.emit(out, func(w io.Writer) error {
				fmt.Fprintf(w, "vfctl    %s (API %s)\n", Version, api.Version)
				if out.Daemon == nil {
					fmt.Fprintf(w, "filterd  not running (no daemon on %s)\n", a.socket)
					return nil
				}
				d := out.Daemon
				fmt.Fprintf(w, "filterd  %s (API %s, slot ABI %d, attach mode %s, bpffs %s)\n",
					dash(d.Version), dash(d.API), d.ABI, dash(d.AttachMode), dash(d.BPFFSRoot))
				if d.API != api.Version {
					fmt.Fprintf(w, "warning: vfctl speaks API %s, filterd %s; upgrade the older one\n", api.Version, d.API)
				}
				return nil
			})
		}),
	}
}

func (a *app) metricsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "metrics",
		Short: "Print filterd's Prometheus metrics",
		Long: `Metrics prints filterd's metrics in the Prometheus text exposition format,
as served on GET /metrics: the chain and verdict counters of every vNIC and
the counters filters report (vnicfilter_filter_<name>). The output is the
same with -o json. It changes nothing.`,
		Example: `  vfctl metrics | grep fail_closed`,
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			s, err := call(ctx, a, a.client.Metrics)
			if err != nil {
				return err
			}
			_, err = io.WriteString(a.stdout, s)
			return err
		}),
	}
}
