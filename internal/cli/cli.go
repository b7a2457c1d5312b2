package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// Version is vfctl's version, set at build time with
// -ldflags "-X github.com/vnicfilter/vnicfilter/internal/cli.Version=...".
var Version = "dev"

// SocketEnv names the environment variable that overrides the default
// --socket.
const SocketEnv = "VNICFILTER_SOCKET"

// Main runs vfctl with args (without the program name) and returns the
// process exit code. SIGINT and SIGTERM cancel the running command.
func Main(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal a second one kills vfctl the default way.
	context.AfterFunc(ctx, stop)
	return run(ctx, args, stdout, stderr)
}

// app is one invocation: the global flags and the client they configure.
type app struct {
	// socket, output and timeout are the global flags.
	socket string
	// --remote/--remote-cert/--remote-key/--remote-ca: filterd's
	// mutual-TLS API on the hidden bridge instead of the unix socket (the
	// control VM's view).
	server, cert, key, ca string
	output                string
	timeout               time.Duration

	stdout io.Writer
	stderr io.Writer
	client *api.Client
	// ran is set once a command's own code starts: any error before that
	// comes from parsing the command line, so it is a usage error.
	ran bool
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	if !a.ran {
		if _, ok := err.(*usageError); !ok {
			err = &usageError{msg: err.Error()}
		}
	}
	return a.report(stderr, cmd, err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "vfctl",
		Short: "Control filterd, the vnicfilter host daemon",
		Long: `vfctl is the operator's command line for filterd, which runs chains of
packet filters in front of VM network interfaces (the host side of each
tap device, a "vNIC").

A chain holds up to 16 filter instances in slots 0..15; every frame the VM
sends (from-vm) or receives (to-vm) runs through the slots in order. Each
instance has a failure mode: when it cannot decide (its slow path is down,
stalled or panicked) it drops the frame (closed, the default) or lets it
pass (open).

vfctl talks to filterd over its unix socket and keeps no state itself:
chains live in the kernel and in filterd, and keep filtering while filterd
restarts.

Output is text for people or, with -o json, the API objects as filterd
returns them, indented, for scripts.

Exit codes:
  0  success
  1  failure (other daemon errors, missing required kernel feature, timeout)
  2  usage error (bad command, argument or flag; nothing was sent)
  3  filterd is not running
  4  not found (no such device, no chain, no such slot, unknown filter)
  5  invalid input (bad parameter, slot taken, chain exists, bad request,
     bad filter manifest or object, filter in use)`,
		Example: `  vfctl check                                  # can this kernel run vnicfilter?
  vfctl filters                                # what can be attached, with parameters
  vfctl chain set vnet3 count dnslog:rate=5    # protect vnet3 with two filters
  vfctl attach vnet3 punt --param verdict=drop --failmode open
  vfctl list                                   # every protected vNIC
  vfctl show vnet3                             # slots, verdicts, slow path state
  vfctl stats --watch 2s                       # live rates, Ctrl-C to stop
  vfctl detach vnet3 --slot 1                  # remove one filter
  vfctl detach vnet3                           # remove the whole chain`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       Version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.output {
			case "text", "json":
			default:
				return usagef("--output %q: want text or json", a.output)
			}
			if a.timeout <= 0 {
				return usagef("--timeout %s: want a positive duration (e.g. 10s)", a.timeout)
			}
			if a.server != "" {
				c, err := api.NewTLSClient(a.server, a.cert, a.key, a.ca)
				if err != nil {
					return usagef("--remote: %v", err)
				}
				a.client = c
				return nil
			}
			a.client = api.NewClient(a.socket)
			return nil
		},
	}
	root.SetVersionTemplate("vfctl {{.Version}}\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &usageError{msg: err.Error()}
	})
	socket := api.DefaultSocket
	if s := os.Getenv(SocketEnv); s != "" {
		socket = s
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.socket, "socket", socket, "filterd's API unix socket `path` (env "+SocketEnv+")")
	pf.StringVarP(&a.output, "output", "o", "text", "output `format`: text or json (the API objects, for scripts)")
	pf.DurationVar(&a.timeout, "timeout", 10*time.Second, "give up on each request to filterd after this `duration`")
	pf.StringVar(&a.server, "remote", os.Getenv("VNICFILTER_REMOTE"), "talk to filterd's mutual-TLS API at `https://HOST:PORT` (the hidden bridge, from the control VM) instead of the socket (env VNICFILTER_REMOTE)")
	pf.StringVar(&a.cert, "remote-cert", envOr("VNICFILTER_REMOTE_CERT", "/etc/vnicfilter/tls/agent.pem"), "with --remote: client certificate `file` (filterd issue-cert)")
	pf.StringVar(&a.key, "remote-key", envOr("VNICFILTER_REMOTE_KEY", "/etc/vnicfilter/tls/agent-key.pem"), "with --remote: its private key `file`")
	pf.StringVar(&a.ca, "remote-ca", envOr("VNICFILTER_REMOTE_CA", "/etc/vnicfilter/tls/ca.pem"), "with --remote: the host CA `file` that signed filterd's certificate")

	root.AddGroup(
		&cobra.Group{ID: "chain", Title: "Chains:"},
		&cobra.Group{ID: "observe", Title: "Observing:"},
		&cobra.Group{ID: "daemon", Title: "Daemon and kernel:"},
	)
	for _, c := range []*cobra.Command{a.attachCommand(), a.chainCommand(), a.detachCommand(), a.xmlCommand()} {
		c.GroupID = "chain"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.listCommand(), a.showCommand(), a.statsCommand(), a.metricsCommand(), a.captureCommand(), a.topCommand()} {
		c.GroupID = "observe"
		root.AddCommand(c)
	}
	for _, c := range []*cobra.Command{a.checkCommand(), a.filtersCommand(), a.versionCommand()} {
		c.GroupID = "daemon"
		root.AddCommand(c)
	}
	root.AddCommand(a.fwCommand())
	root.AddCommand(a.lbCommand())
	root.AddCommand(a.cryptCommand())
	root.AddCommand(a.filterCommand())
	root.AddCommand(a.vnicCommand())
	root.AddCommand(a.groupCommand())
	root.AddCommand(a.labelCommand())
	root.AddCommand(a.labelsCommand())
	root.AddCommand(a.mgrCommand())
	root.AddCommand(a.encapCommand())
	root.AddCommand(a.controlVMCommand())
	return root
}

// runE adapts a command body: it marks the start of the command's own
// work (errors after this are not usage errors) and hands it a context.
func (a *app) runE(fn func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.ran = true
		return fn(cmd.Context(), args)
	}
}

// call runs one request with the --timeout deadline.
func call[T any](ctx context.Context, a *app, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	return fn(ctx)
}

// args validates positional arguments against their names: required
// names first, then optional ones written "[NAME]", or a last "NAME..."
// that takes one or more.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		required, max := 0, len(names)
		for _, n := range names {
			if !strings.HasPrefix(n, "[") {
				required++
			}
			if strings.HasSuffix(n, "...") {
				max = -1
			}
		}
		if len(got) < required {
			missing := names[len(got):required]
			return usagef("%s: missing %s", cmd.Name(), strings.Join(missing, " and "))
		}
		if max == 0 && cmd.HasSubCommands() {
			if len(got) > 0 {
				return usagef("unknown command %q for %q", got[0], cmd.CommandPath())
			}
			return nil
		}
		if max >= 0 && len(got) > max {
			return usagef("%s: unexpected argument %q (takes %s)", cmd.Name(), got[max], takes(names))
		}
		return nil
	}
}

func takes(names []string) string {
	if len(names) == 0 {
		return "no arguments"
	}
	return strings.Join(names, " ")
}

// emit prints v as indented JSON with -o json, or calls text otherwise.
func (a *app) emit(v any, text func(w io.Writer) error) error {
	if a.output == "json" {
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	return text(a.stdout)
}

// table returns a tabwriter on w laid out like ip/kubectl tables; the
// caller must Flush it.
func table(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes one tab-separated table row.
func row(w io.Writer, cells ...any) {
	for i, c := range cells {
		if i > 0 {
			fmt.Fprint(w, "\t")
		}
		fmt.Fprint(w, c)
	}
	fmt.Fprintln(w)
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
