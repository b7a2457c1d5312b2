// Command filterd is the vnicfilter host daemon: it attaches per-vNIC filter
// chains to tap devices and serves the API vfctl and the libvirt hook use.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd"
	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	_ "github.com/vnicfilter/vnicfilter/filters/all"
	"github.com/vnicfilter/vnicfilter/filters/firewall"
	"github.com/vnicfilter/vnicfilter/internal/logflag"
	"github.com/vnicfilter/vnicfilter/sdk"
)

const usage = `Usage: filterd [flags]
       filterd check [--output text|json] [--attach-mode MODE]
       filterd issue-cert --name NAME --out DIR [--hidden-tls-dir DIR]
       filterd version

filterd attaches vnicfilter chains in front of VM network interfaces (the
host side of each tap device) and serves its API on a unix socket.

Every chain is pinned under the bpffs root and keeps enforcing while filterd
is stopped or restarting: on start, filterd reconciles the pinned datapath
with its saved state (STATE-DIR/state.json) and adopts what it finds without
touching a single packet. Chains whose device is gone are removed.

"filterd check" probes the kernel for the features vnicfilter needs and
exits 1 if a required one is missing.

With --hidden-bridge, filterd creates a bridge with no uplink for the host's
control VM, takes --hidden-addr on it and serves the same API there over
mutual TLS (client certificates of the host CA in --hidden-tls-dir). Only
ports matching --hidden-allow may sit on it: any other is removed and an
alarm raised (log, vnicfilter_hidden_bridge_intrusions_total, GET
/v1/hidden). An nftables table keeps filterd's hidden address unreachable
from anywhere else and the bridge unroutable. "filterd issue-cert" writes a
client certificate of the host CA (for the control VM's agent or an
operator's vfctl).

Policy documents: a remote agent stores firewall policies with PUT
/v1/policies/NAME; filterd checks them with the firewall's parser, keeps
them in STATE-DIR/policies/NAME.json (0600) and reloads every firewall
whose policy= parameter names the file.

--datapath=record validates and records chains instead of loading and
attaching them: nothing reaches the kernel and nothing is enforced. It is
for control-plane simulations of many hosts on one machine, never for a
host that must filter traffic.

With --migrate-listen, filterd serves live-migration state transfers to the
filterds of --migrate-peers-ca over mutual TLS (certificates of the same
host CA): the libvirt hook on the destination pulls an arriving VM's
connection state from the source before the guest runs there, and the
source pushes its final state when the VM leaves (docs/migration.md).

Flags:
`

const examples = `
Examples:
  filterd                                  # production defaults
  filterd --log-level debug --metrics-addr 127.0.0.1:9617
  filterd --libvirt-uri qemu:///system     # libvirt hosts (docs/libvirt.md)
  filterd check
  filterd --hidden-bridge vfhidden0        # control VM on the hidden bridge
  filterd issue-cert --name agent --out /var/lib/vnicfilter/agent-tls
  filterd --datapath record --state-dir /tmp/sim1 --socket /tmp/sim1.sock  # simulation only
  filterd --libvirt-uri qemu:///system --migrate-listen 10.0.0.5:9444 \
          --migrate-peers-ca /etc/vnicfilter/peers-ca.pem \
          --migrate-peers https://10.0.0.6:9444,https://10.0.0.7:9444

Environment:
  GOGC    Go's garbage-collection target; filterd uses 200 unless it is
          set (a 10,000-rule policy reload allocates ~30 MB of short-lived
          data: at Go's default of 100 the collector runs during the reload
          and adds ~10 ms to it; docs/firewall.md, "What a reload costs")

Files:
  /run/vnicfilter/filterd.sock     API socket (mode 0600)
  /sys/fs/bpf/vnicfilter/<vnic>/   pinned maps and links of each chain
  /var/lib/vnicfilter/state.json   desired state
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// defaultGCPercent is filterd's GOGC when the environment sets none.
const defaultGCPercent = 200

func run(args []string, stdout, stderr io.Writer) int {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(defaultGCPercent)
	}
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("filterd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, examples)
	}
	var cfg filterd.Config
	fs.StringVar(&cfg.Socket, "socket", api.DefaultSocket, "API unix socket `path`")
	fs.StringVar(&cfg.BPFFSRoot, "bpffs-root", datapath.DefaultRoot, "bpffs `directory` chains are pinned under")
	fs.StringVar(&cfg.StateDir, "state-dir", filterd.DefaultStateDir, "`directory` holding state.json")
	fs.StringVar(&cfg.FiltersDir, "filters-dir", filterd.DefaultFiltersDir, "`directory` of external fast-path filters (<name>.json + object) loaded at start")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "also serve /metrics over TCP at `host:port` (off by default)")
	fs.StringVar(&cfg.LibvirtURI, "libvirt-uri", "", "keep the chains of running libvirt domains as their XML says, watching libvirtd at `uri` (e.g. qemu:///system); off when empty")
	fs.StringVar(&cfg.Hidden.Bridge, "hidden-bridge", "", "create the hidden `bridge` (e.g. vfhidden0) for the control VM and serve the API there over mutual TLS; off when empty")
	hiddenAddr := fs.String("hidden-addr", "169.254.77.1/24", "filterd's `prefix` on the hidden bridge (link-local or private IPv4)")
	fs.IntVar(&cfg.Hidden.Port, "hidden-port", 9443, "`port` of the mutual-TLS API on the hidden bridge")
	fs.StringVar(&cfg.Hidden.TLSDir, "hidden-tls-dir", "/etc/vnicfilter/tls", "`directory` of the host CA and filterd's certificate (created 0700 at first start)")
	hiddenAllow := fs.String("hidden-allow", "vfcvm*", "comma-separated name `patterns` of the only ports allowed on the hidden bridge (the control VM's vNIC)")
	fs.StringVar(&cfg.Migrate.Listen, "migrate-listen", "", "serve live-migration state transfers to peer filterds over mutual TLS at `IP:PORT` on the management network (certificates of the host CA in --hidden-tls-dir); off when empty")
	fs.StringVar(&cfg.Migrate.PeersCA, "migrate-peers-ca", "", "PEM `file` of the peer hosts' CA certificates (their ca.pem): the filterds trusted to pull and push state")
	migratePeers := fs.String("migrate-peers", "", "comma-separated peer `URLs` (https://IP:PORT, their --migrate-listen) asked for an arriving VM's state")
	certName := fs.String("name", "", "issue-cert: the certificate's `name` (e.g. agent)")
	certOut := fs.String("out", "", "issue-cert: `directory` to write NAME.pem, NAME-key.pem and ca.pem into")
	dpMode := fs.String("datapath", "kernel", "`kind` of datapath: kernel (load and attach chains) or record (validate and record only; enforces nothing, for simulations)")
	mode := fs.String("attach-mode", "auto", "`mode` of attaching to tc: auto (tcx, else clsact), tcx or clsact")
	logFlags := logflag.Register(fs)
	output := fs.String("output", "text", "check output `format`: text or json")
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "filterd: unexpected argument %q (see filterd --help)\n", fs.Arg(0))
		return 2
	}
	m, err := datapath.ParseMode(*mode)
	if err != nil {
		fmt.Fprintf(stderr, "filterd: %v\n", err)
		return 2
	}
	cfg.Mode = m
	switch *dpMode {
	case "kernel":
	case "record":
		cfg.Record = true
	default:
		fmt.Fprintf(stderr, "filterd: --datapath %q: want kernel or record\n", *dpMode)
		return 2
	}
	cfg.PolicyFilter = firewall.Name
	cfg.PolicyCheck = func(doc []byte, file string, groups sdk.Groups) error {
		_, err := firewall.ParsePolicy(doc, firewall.ParseOptions{File: file, Groups: groups})
		return err
	}
	if cfg.Hidden.Bridge != "" {
		p, err := netip.ParsePrefix(*hiddenAddr)
		if err != nil {
			fmt.Fprintf(stderr, "filterd: --hidden-addr %q: want a prefix such as 169.254.77.1/24\n", *hiddenAddr)
			return 2
		}
		cfg.Hidden.Addr = p
		cfg.Hidden.Allow = strings.Split(*hiddenAllow, ",")
	}
	cfg.Migrate.TLSDir = cfg.Hidden.TLSDir
	if *migratePeers != "" {
		cfg.Migrate.Peers = strings.Split(*migratePeers, ",")
	}
	switch cmd {
	case "issue-cert":
		if *certName == "" || *certOut == "" {
			fmt.Fprintln(stderr, "filterd issue-cert: --name and --out are required")
			return 2
		}
		if err := filterd.IssueClientCert(cfg.Hidden.TLSDir, *certName, *certOut, 365*24*time.Hour); err != nil {
			fmt.Fprintf(stderr, "filterd issue-cert: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "issued %s: %s/%s.pem, %s-key.pem, ca.pem (valid one year)\n", *certName, *certOut, *certName, *certName)
		return 0
	case "version":
		fmt.Fprintln(stdout, "filterd", filterd.Version)
		return 0
	case "check":
		return check(stdout, stderr, m, *output)
	case "", "serve":
	default:
		fmt.Fprintf(stderr, "filterd: unknown command %q (see filterd --help)\n", cmd)
		return 2
	}
	if cfg.Logger, err = logFlags.Logger(stderr); err != nil {
		fmt.Fprintf(stderr, "filterd: %v\n", err)
		return 2
	}
	if missing := filterd.Missing(filterd.Check(m)); len(missing) > 0 {
		fmt.Fprintf(stderr, "filterd: this kernel lacks required features: %s (run `filterd check` for details)\n", strings.Join(missing, "; "))
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	d, err := filterd.New(ctx, cfg)
	if err != nil {
		fmt.Fprintf(stderr, "filterd: %v\n", err)
		return 1
	}
	defer d.Close()
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		if err := d.WatchLibvirt(ctx); err != nil {
			cfg.Logger.Error("libvirt watcher", "err", err)
		}
	}()
	defer func() { stop(); <-watched }() // before Close
	if err := d.Serve(ctx); err != nil {
		fmt.Fprintf(stderr, "filterd: %v\n", err)
		return 1
	}
	return 0
}

func check(stdout, stderr io.Writer, m datapath.Mode, output string) int {
	r := filterd.Check(m)
	if output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(r)
	} else {
		fmt.Fprintf(stdout, "kernel %s\n\n", r.Kernel)
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FEATURE\tSTATUS\tREQUIRED\tDETAIL")
		for _, f := range r.Features {
			st := "ok"
			if !f.OK {
				st = "MISSING"
			}
			req := "no"
			if f.Required {
				req = "yes"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Name, st, req, f.Detail)
		}
		tw.Flush()
	}
	if missing := filterd.Missing(r); len(missing) > 0 {
		fmt.Fprintf(stderr, "filterd: missing required features: %s\n", strings.Join(missing, "; "))
		return 1
	}
	return 0
}
