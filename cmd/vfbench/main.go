// Command vfbench measures vnicfilter's datapath between two namespace VMs:
// the unfiltered baseline and each filtered case in one run, as ratios.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/vnicfilter/vnicfilter/internal/bench"
	"github.com/vnicfilter/vnicfilter/sdk/slowproc"
)

const usage = `Usage: vfbench [flags]
       vfbench --attach [N] [--filterd PATH] [--json]

vfbench builds a host network namespace with a bridge and two VM namespaces
(A 10.77.0.1 / fd77::1, B 10.77.0.2 / fd77::2) whose veths are bridge ports,
starts a private filterd in the host namespace, and measures traffic from A
to B with each case's chain on A's vNIC. The baseline is measured again
before and after every case; each case is reported as a ratio to the
baselines measured next to it (absolute figures vary 3x between runs on
shared machines). Needs root and iperf3. Everything it creates is removed at
exit, also on Ctrl-C.

Suites (--suite, default core) and their cases; baseline is always measured:
  NAME            SUITE
%s
Metrics (each case has its own list; --metrics narrows it):
  tcp_1        iperf3, one TCP stream, received Gb/s
  tcp_2        iperf3 -P 2, received Gb/s
  udp64_pps    64-byte UDP payloads received per second (sendmmsg blaster)
  rr_latency   1-byte TCP ping-pong, p50 and p99 round-trip time in us
  conn_rate    new TCP connections per second (4 connect+RST loops in A)
  swap         fw-swap-10k only: policy reload time and datagrams lost
               from a paced stream during 5 reloads

The encap suite (issue 9) has its own topologies: two hosts (namespaces on
an underlay bridge) per case, VM A on one and VM B on the other; its
baseline is plain routing over the underlay ("routed"), and encap is also
compared with bridge-vxlan.

Durations on a 2-vCPU machine with the defaults (3 reps x 5 s): core ~7 min,
fw ~13 min (a 100,000-rule policy takes 20-26 s to load), dlb ~4 min,
crypt ~1 min (its own two simulated hosts: the protected pair through
wireguard-go against the same hosts in clear; no filterd needed).

--attach N times PUT /v1/vnics/<veth> with a one-filter chain on N fresh
veths, one after another (target: p99 < 50 ms, total < 5 s).

Flags:
`

const examples = `
Examples:
  make bench                              # everything, table
  make bench ARGS=--json                  # one JSON object per line
  make bench ARGS="--suite fw"            # the firewall cases (issue 5)
  make bench ARGS="--suite dlb"           # the load-balancer cases (issue 8)
  make bench ARGS="--suite crypt"         # encryption between hosts (issue 10)
  make bench ARGS="--suite encap"         # the overlay across two hosts (issue 9)
  vfbench --cases fw-10k,nft-linear-10k --metrics udp64_pps
  vfbench --cases fast-1 --metrics tcp_1,udp64_pps --duration 3s --reps 5
  vfbench --cases baseline --duration 1s --reps 1   # no filterd needed
  vfbench --attach 200
  vfbench --suite fw --json > fw.jsonl && vfbench --plot docs/img/fw-pps.png --from fw.jsonl

Exit status: 0 when every figure was measured (a FAIL against a target is
reported, not an error), 1 when something could not be measured, 2 on a
usage error.
`

func main() {
	if os.Getenv(slowproc.FDEnv) != "" {
		// Started by filterd as the slow-ext case's external filter.
		if err := bench.ServeExtPunt(); err != nil {
			fmt.Fprintln(os.Stderr, "vfbench:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// attachFlag is --attach: bare it means the default count, and it also
// takes a count as the next argument ("--attach 200") or with "=".
type attachFlag struct {
	n   int
	set bool
}

func (a *attachFlag) String() string   { return strconv.Itoa(a.n) }
func (a *attachFlag) IsBoolFlag() bool { return true }
func (a *attachFlag) Set(s string) error {
	a.set = true
	switch s {
	case "true":
		a.n = bench.DefaultAttachN
		return nil
	case "false":
		a.set = false
		return nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive count of vNICs, not %q", s)
	}
	a.n = n
	return nil
}

// config is what the command line asks for.
type config struct {
	opts   bench.Options
	attach attachFlag
	quiet  bool
	// plot and from: draw the firewall chart from a saved --json run
	// instead of measuring.
	plot, from string
}

// parse reads the command line; ok false means exit with code.
func parse(args []string, stderr io.Writer) (c config, code int, ok bool) {
	fs := flag.NewFlagSet("vfbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, usage, bench.CaseHelp())
		fs.PrintDefaults()
		fmt.Fprint(stderr, examples)
	}
	o := &c.opts
	var cases, suites, metrics string
	fs.StringVar(&o.Filterd, "filterd", "", "filterd binary `path` (default: ./bin/filterd, then $PATH)")
	fs.DurationVar(&o.Duration, "duration", bench.DefaultDuration, "length of each throughput measurement (TCP rounds up to whole seconds)")
	fs.IntVar(&o.Reps, "reps", bench.DefaultReps, "repetitions of each case and its baselines; medians are reported")
	fs.StringVar(&cases, "cases", "", "comma-separated `list` of cases to measure, from any suite (default: those of --suite): "+strings.Join(bench.CaseNames()[1:], ","))
	fs.StringVar(&suites, "suite", "", "comma-separated `list` of suites whose cases to measure when --cases is not given (default core): "+strings.Join(bench.SuiteNames(), ","))
	fs.StringVar(&metrics, "metrics", "", "comma-separated `list` of metrics (default: each case's own): "+strings.Join(bench.MetricNames(), ","))
	fs.IntVar(&o.RoundTrips, "round-trips", bench.DefaultRoundTrips, "timed round trips of rr_latency, after 2000 untimed")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per line and measurement: case, metric, value, unit, baseline, ratio")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress on stderr")
	fs.Var(&c.attach, "attach", "run the attach benchmark on `N` vNICs instead (bare --attach: 200)")
	fs.StringVar(&c.plot, "plot", "", "instead of measuring, draw 64-byte UDP pps against the rule count of the fw suite's cases as a PNG `file`, from the --json output named by --from")
	fs.StringVar(&c.from, "from", "", "the saved --json output (`file`, - for stdin) --plot draws")

	for rest := args; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return c, 0, false
			}
			return c, 2, false
		}
		// "--attach 200": the bool-style flag left the count behind.
		if c.attach.set && fs.NArg() > 0 {
			if n, err := strconv.Atoi(fs.Arg(0)); err == nil && n > 0 {
				c.attach.n = n
				rest = fs.Args()[1:]
				continue
			}
		}
		break
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vfbench: unexpected argument %q (see vfbench -h)\n", fs.Arg(0))
		return c, 2, false
	}
	if o.Duration <= 0 || o.Reps <= 0 || o.RoundTrips <= 0 {
		fmt.Fprintln(stderr, "vfbench: --duration, --reps and --round-trips must be positive")
		return c, 2, false
	}
	if (c.plot == "") != (c.from == "") {
		fmt.Fprintln(stderr, "vfbench: --plot and --from go together (vfbench --plot out.png --from run.jsonl)")
		return c, 2, false
	}
	o.Cases, o.Suites, o.Metrics = splitList(cases), splitList(suites), splitList(metrics)
	return c, 0, true
}

func run(args []string, stdout, stderr io.Writer) int {
	c, code, ok := parse(args, stderr)
	if !ok {
		return code
	}
	if c.plot != "" {
		if err := plotFW(c.plot, c.from); err != nil {
			fmt.Fprintf(stderr, "vfbench: %v\n", err)
			return 1
		}
		return 0
	}
	o, attach := c.opts, c.attach
	o.Out, o.Log = stdout, stderr
	if c.quiet {
		o.Log = io.Discard
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var err error
	if attach.set {
		err = bench.RunAttach(ctx, bench.AttachOptions{Filterd: o.Filterd, N: attach.n, JSON: o.JSON, Out: o.Out, Log: o.Log})
	} else {
		err = bench.Run(ctx, o)
	}
	switch {
	case err == nil:
		return 0
	case ctx.Err() != nil:
		fmt.Fprintln(stderr, "vfbench: interrupted; everything it created has been removed")
		if err != context.Canceled && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "vfbench: %v\n", err)
		}
		return 130
	default:
		fmt.Fprintf(stderr, "vfbench: %v\n", err)
		return 1
	}
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// plotFW draws the firewall chart of the --json results in from into out.
func plotFW(out, from string) error {
	in := os.Stdin
	if from != "-" {
		f, err := os.Open(from)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	rs, err := bench.ReadResults(in)
	if err != nil {
		return fmt.Errorf("%s: %w", from, err)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := bench.PlotFW(rs, f, "Firewall: 64-byte UDP through one vNIC"); err != nil {
		f.Close()
		os.Remove(out)
		return err
	}
	return f.Close()
}
