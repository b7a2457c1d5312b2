// Command vfmanager is the vnicfilter management service: the REST API
// (v1, TLS) that holds hosts, VMs, tags, groups, firewall policies and
// assignments, and streams each host's desired state to its agent.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vnicfilter/vnicfilter/internal/logflag"
	"github.com/vnicfilter/vnicfilter/manager"
	"github.com/vnicfilter/vnicfilter/manager/pki"
	"github.com/vnicfilter/vnicfilter/manager/store"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

const usage = `Usage: vfmanager serve [flags]
       vfmanager version

vfmanager is the vnicfilter management service. It keeps the inventory
the host agents report (hosts, VMs, vNICs), the tags, groups, firewall
policies and policy assignments that operators set, computes what every
host must enforce, and streams it to the host's agent. API: REST v1 over
TLS, described at /v1/openapi.yaml; docs/manager.md tells the whole story.

At first start vfmanager creates, in --data-dir (mode 0700):
  ca.crt, ca.key         the manager CA (key 0600): signs the server
                         certificate and the agents' client certificates
  server.crt, server.key the API's certificate (localhost, 127.0.0.1, ::1,
                         the host name and every --tls-san)
  admin.token            the first admin token (0600): use it with
                         vfctl mgr --token, then mint others
  store.db               the embedded store (--store bolt)
and writes the address it listens on to manager.addr.

Users authenticate with bearer tokens (admin, read-only); agents with the
client certificate they obtained at enrollment (a single-use join token
exchanged at POST /v1/enroll).

Flags:
`

const examples = `
Examples:
  vfmanager serve --data-dir /var/lib/vfmanager --listen :8443 --tls-san mgr.example.net
  vfmanager serve --listen 127.0.0.1:0 --data-dir ./mgr     # a test instance on a free port
  vfctl mgr --server https://localhost:8443 --ca /var/lib/vfmanager/ca.crt \
      --token "$(cat /var/lib/vfmanager/admin.token)" hosts

Exit codes:
  0  stopped by SIGINT or SIGTERM
  1  could not start (store, data directory, address in use) or failed
  2  usage error
`

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

// stringList is a repeatable flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("vfmanager", flag.ContinueOnError)
	fs.SetOutput(stderr)
	help := func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
		fmt.Fprint(stderr, examples)
	}
	// flag prints the error itself; the full text is for --help.
	fs.Usage = func() {}
	listen := fs.String("listen", ":8443", "serve the API at `host:port` (port 0: any free port, see manager.addr)")
	dataDir := fs.String("data-dir", "/var/lib/vfmanager", "`directory` for the CA, certificates, admin token and the embedded store")
	storeKind := fs.String("store", "bolt", "`kind` of store: bolt (embedded, DATA-DIR/store.db) or etcd (--etcd-endpoints)")
	etcd := fs.String("etcd-endpoints", "", "comma-separated etcd client `urls` for --store etcd")
	logFlags := logflag.Register(fs)
	var sans stringList
	fs.Var(&sans, "tls-san", "extra DNS `name` or IP address for the server certificate (repeatable)")

	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		help()
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	switch args[0] {
	case "version":
		fmt.Println("vfmanager", Version)
		return 0
	case "serve":
	default:
		fmt.Fprintf(stderr, "vfmanager: unknown command %q (want serve or version; see vfmanager --help)\n", args[0])
		return 2
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			help()
			return 0
		}
		fmt.Fprintln(stderr, "run 'vfmanager --help' for the flags")
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "vfmanager serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if *storeKind != "bolt" && *storeKind != "etcd" {
		fmt.Fprintf(stderr, "vfmanager: --store %q: want bolt or etcd\n", *storeKind)
		return 2
	}
	if *storeKind == "etcd" && *etcd == "" {
		fmt.Fprintln(stderr, "vfmanager: --store etcd needs --etcd-endpoints")
		return 2
	}
	log, err := logFlags.Logger(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "vfmanager: %v\n", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, log, *listen, *dataDir, *storeKind, *etcd, sans); err != nil {
		fmt.Fprintf(stderr, "vfmanager: %v\n", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, log *slog.Logger, listen, dataDir, kind, etcd string, sans []string) error {
	if err := pki.EnsureDir(dataDir); err != nil {
		return fmt.Errorf("data directory %s: %w", dataDir, err)
	}
	var st store.Store
	switch kind {
	case "bolt":
		b, err := store.OpenBolt(filepath.Join(dataDir, "store.db"), store.BoltOptions{})
		if err != nil {
			return err
		}
		st = b
	case "etcd":
		if etcd == "" {
			return errors.New("--store etcd needs --etcd-endpoints")
		}
		e, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: strings.Split(etcd, ",")})
		if err != nil {
			return err
		}
		st = e
	default:
		return fmt.Errorf("--store %q: want bolt or etcd", kind)
	}
	defer st.Close()
	srv, err := manager.New(ctx, manager.Options{Store: st, DataDir: dataDir, Names: sans, Logger: log})
	if err != nil {
		return err
	}
	defer srv.Close()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	addr := "https://" + l.Addr().String()
	if err := os.WriteFile(filepath.Join(dataDir, "manager.addr"), []byte(addr+"\n"), 0o644); err != nil {
		l.Close()
		return err
	}
	log.Info("vfmanager listening", "addr", addr, "store", kind, "data_dir", dataDir)
	return srv.Serve(ctx, l)
}
