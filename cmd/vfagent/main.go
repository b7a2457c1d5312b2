// Command vfagent is the vnicfilter host agent that runs in a host's
// control VM: it enrolls with the manager, follows the host's desired
// state and drives filterd over the hidden bridge (controlvm/agent).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vnicfilter/vnicfilter/controlvm/agent"
	fapi "github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/internal/logflag"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

const usage = `Usage: vfagent run    --manager URL --filterd URL|--filterd-socket PATH [flags]
       vfagent enroll --manager URL --manager-ca FILE --join-token-file FILE [flags]
       vfagent version

vfagent is the host agent of vnicfilter's control VM. It is the middle of
three tiers: the manager (vfmanager) decides what every host enforces,
the agent applies it to its host's filterd, and filterd's eBPF chains
enforce it in front of every vNIC.

enroll exchanges a single-use join token (vfctl mgr token create --role
join --host HOST) for a client certificate of the manager CA. The private
key is made here and never leaves: only a certificate request is sent.
--dir receives agent.key (0600), agent.crt and manager-ca.pem.

run holds one HTTPS stream of the host's desired state open
(GET /v1/agent/desired?watch=true, mutual TLS) and, for every change:
  - stores each merged firewall policy in filterd (PUT /v1/policies/NAME,
    NAME = "mgr." + the policies it merges); filterd checks it with the
    firewall's parser and reloads every chain using it, atomically;
  - puts the host-wide documents that changed: the overlay forwarding
    table of the host's segments (PUT /v1/encap/fdb), the encryption
    peers (PUT /v1/encrypt/peers: the other hosts' public keys, endpoints
    and protected VM addresses) and the encryption policy (PUT
    /v1/encrypt/policy);
  - sets the chain of each vNIC whose filters changed (PUT /v1/vnics/VNIC,
    replacing the running chain in one swap);
  - reports what it enforces (PUT /v1/agent/realized: the version
    applied, each vNIC's chain hash or error).
It also reports the host's inventory (every vNIC filterd knows, its VM
from the chain owner, its guest MAC and addresses from its labels), the
host's underlay address (--underlay) and its encryption tunnel (public
key and endpoint, from GET /v1/encrypt/host: the private key never leaves
the host; a rotation is reported with the next inventory) when they
change, and the chains' counters every --counters-interval. With a join
token and no credentials yet, run enrolls first.

filterd is reached over the hidden bridge with the host CA's client
certificate (filterd issue-cert --name agent --out DIR), or, on the host
itself, over its unix socket.

The agent is never in the datapath: if it, its control VM or the manager
goes away, every chain keeps enforcing the last policy applied. On
reconnect the agent resumes from the last version it applied (kept in
--dir/agent.json) and receives one event: "current" or the whole state.

Flags:
`

const examples = `
Examples:
  # once, with a join token the administrator minted for this host
  vfagent enroll --manager https://mgr.example.net:8443 --manager-ca /etc/vfagent/manager-ca.pem \
      --join-token-file /etc/vfagent/join.token --host host1 --dir /var/lib/vfagent

  # the control VM's service
  vfagent run --manager https://mgr.example.net:8443 --host host1 --dir /var/lib/vfagent \
      --filterd https://169.254.77.1:9443 --filterd-cert /etc/vfagent/tls/agent.pem \
      --filterd-key /etc/vfagent/tls/agent-key.pem --filterd-ca /etc/vfagent/tls/ca.pem

  # on the host itself (no control VM), over filterd's socket, with the
  # underlay address its segments and encryption tunnel use
  vfagent run --manager https://mgr.example.net:8443 --dir /var/lib/vfagent \
      --filterd-socket /run/vnicfilter/filterd.sock --underlay 192.0.2.11

Files (in --dir):
  agent.key        the agent's private key (0600)
  agent.crt        its client certificate (CN = host), from the manager CA
  manager-ca.pem   the manager CA
  agent.json       the version applied and what is realized (resume point)

Exit codes:
  0  stopped by SIGINT or SIGTERM; enroll succeeded
  1  enrollment refused, credentials unusable, or another failure
  2  usage error
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cmd := ""
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("vfagent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, examples)
	}
	hn, _ := os.Hostname()
	server := fs.String("manager", os.Getenv("VFAGENT_MANAGER"), "the manager's `URL` (https://HOST:PORT; env VFAGENT_MANAGER)")
	host := fs.String("host", hn, "this host's `name` at the manager (the certificate's CN)")
	dir := fs.String("dir", "/var/lib/vfagent", "`directory` of the agent's credentials and state (0700)")
	managerCA := fs.String("manager-ca", "", "enroll: `file` with the manager CA to trust for enrollment")
	tokenFile := fs.String("join-token-file", "", "enroll (and run, when not enrolled yet): `file` holding the single-use join token")
	filterdURL := fs.String("filterd", "", "filterd's API on the hidden bridge, `URL` https://169.254.77.1:9443")
	filterdCert := fs.String("filterd-cert", "", "client certificate `file` of the host CA for --filterd")
	filterdKey := fs.String("filterd-key", "", "its private key `file`")
	filterdCA := fs.String("filterd-ca", "", "the host CA `file` filterd's certificate is checked against")
	filterdSocket := fs.String("filterd-socket", "", "filterd's unix socket `path`, instead of --filterd (an agent on the host itself)")
	underlay := fs.String("underlay", "", "this host's underlay `address`: its segments' VXLAN source, and which of filterd's endpoints the encryption tunnel reports (default: none; the only endpoint filterd lists)")
	invEvery := fs.Duration("inventory-interval", 5*time.Second, "how often filterd's vNICs are read and, if changed, reported (`duration`)")
	cntEvery := fs.Duration("counters-interval", 30*time.Second, "how often counters are reported (`duration`; 0: never)")
	logFlags := logflag.Register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vfagent: unexpected argument %q (see vfagent --help)\n", fs.Arg(0))
		return 2
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vfagent: %v\n", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	enroll := func() int {
		if *server == "" || *managerCA == "" || *tokenFile == "" || *host == "" {
			fmt.Fprintln(stderr, "vfagent enroll: --manager, --manager-ca, --join-token-file and --host are required")
			return 2
		}
		ca, err := os.ReadFile(*managerCA)
		if err != nil {
			fmt.Fprintf(stderr, "vfagent enroll: manager CA: %v\n", err)
			return 1
		}
		tok, err := os.ReadFile(*tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "vfagent enroll: join token: %v\n", err)
			return 1
		}
		ectx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := agent.Enroll(ectx, *server, ca, strings.TrimSpace(string(tok)), *host, *dir); err != nil {
			fmt.Fprintf(stderr, "vfagent enroll: %v (a join token works once and expires: mint another with vfctl mgr token create --role join --host %s)\n", err, *host)
			return 1
		}
		log.Info("enrolled", "host", *host, "manager", *server, "dir", *dir)
		return 0
	}

	switch cmd {
	case "version":
		fmt.Fprintln(stdout, "vfagent", Version)
		return 0
	case "enroll":
		return enroll()
	case "run":
	default:
		fmt.Fprintf(stderr, "vfagent: unknown or missing command %q: want run, enroll or version (see vfagent --help)\n", cmd)
		return 2
	}

	if *server == "" {
		fmt.Fprintln(stderr, "vfagent run: --manager is required")
		return 2
	}
	var fd *fapi.Client
	switch {
	case *filterdSocket != "" && *filterdURL != "":
		fmt.Fprintln(stderr, "vfagent run: give --filterd or --filterd-socket, not both")
		return 2
	case *filterdSocket != "":
		fd = fapi.NewClient(*filterdSocket)
	case *filterdURL != "":
		var err error
		if fd, err = fapi.NewTLSClient(*filterdURL, *filterdCert, *filterdKey, *filterdCA); err != nil {
			fmt.Fprintf(stderr, "vfagent run: filterd: %v\n", err)
			return 1
		}
	default:
		fmt.Fprintln(stderr, "vfagent run: --filterd (hidden bridge) or --filterd-socket is required")
		return 2
	}
	if !agent.Enrolled(*dir) {
		if *tokenFile == "" {
			fmt.Fprintf(stderr, "vfagent run: not enrolled (no %s in %s): give --join-token-file and --manager-ca, or run vfagent enroll\n", agent.CertFile, *dir)
			return 1
		}
		if rc := enroll(); rc != 0 {
			return rc
		}
	}
	mc, err := agent.ManagerClient(*server, *dir)
	if err != nil {
		fmt.Fprintf(stderr, "vfagent run: %v\n", err)
		return 1
	}
	defer mc.Close()
	if *cntEvery == 0 {
		*cntEvery = -1
	}
	var ul netip.Addr
	if *underlay != "" {
		var err error
		if ul, err = netip.ParseAddr(*underlay); err != nil || !ul.IsGlobalUnicast() && !ul.IsPrivate() {
			fmt.Fprintf(stderr, "vfagent run: --underlay %q: want this host's unicast IP address on the underlay\n", *underlay)
			return 2
		}
	}
	a, err := agent.New(agent.Options{Manager: mc, Filterd: fd, StateDir: *dir, Logger: log, InventoryInterval: *invEvery, CountersInterval: *cntEvery, Underlay: ul})
	if err != nil {
		fmt.Fprintf(stderr, "vfagent run: %v\n", err)
		return 1
	}
	log.Info("vfagent running", "host", *host, "manager", *server, "version", Version, "resume_from", a.Version())
	if err := a.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "vfagent run: %v\n", err)
		return 1
	}
	return 0
}
