package filterd

import (
	"log/slog"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// DefaultStateDir holds filterd's desired state.
const DefaultStateDir = "/var/lib/vnicfilter"

// DefaultFiltersDir holds external fast-path filters (<name>.json manifests
// with their objects) loaded at start.
const DefaultFiltersDir = "/etc/vnicfilter/filters.d"

// Config configures the daemon. The zero value is the production default.
type Config struct {
	// Socket is the API's unix socket; api.DefaultSocket if empty.
	Socket string
	// BPFFSRoot is the bpffs directory chains are pinned under;
	// datapath.DefaultRoot if empty.
	BPFFSRoot string
	// StateDir holds state.json, the desired state reconciled at start;
	// DefaultStateDir if empty.
	StateDir string
	// Mode selects tcx or clsact; auto probes.
	Mode datapath.Mode
	// MetricsAddr, when set, also serves /metrics over TCP (e.g.
	// 127.0.0.1:9617). /metrics is always on the unix socket.
	MetricsAddr string
	// LibvirtURI, when set (e.g. qemu:///system), makes WatchLibvirt keep
	// the chains of running libvirt domains as their XML says.
	LibvirtURI string
	// FiltersDir holds external fast-path filters (<name>.json and its
	// object) loaded at start; a missing directory holds none.
	// DefaultFiltersDir if empty.
	FiltersDir string
	// Hidden, when Hidden.Bridge is set, makes filterd create the hidden
	// bridge and serve the API there over mutual TLS (hidden_linux.go).
	Hidden HiddenConfig
	// Record makes filterd validate and record chains instead of loading
	// and attaching them (--datapath=record): the API answers as usual,
	// state.json keeps the chains, GET /v1/vnics lists them with mode
	// "record", policy documents "reload" them, and the kernel is not
	// touched. For control-plane simulations of many hosts on one
	// machine; never for a host that must enforce (record_linux.go).
	Record bool
	// PolicyCheck parses a policy document (PUT /v1/policies/{name})
	// before it is stored: cmd/filterd wires the firewall's parser here
	// (filterd itself imports no filter). file names the document in
	// errors; groups resolves host groups the document does not define.
	// Nil: policy documents are refused.
	PolicyCheck func(doc []byte, file string, groups sdk.Groups) error
	// PolicyFilter names the filter whose "policy" files PolicyCheck
	// parses ("firewall"): record mode (--datapath=record) checks the
	// policy files of its slots with it; other filters' "policy"
	// parameters are theirs to read.
	PolicyFilter string
	// Migrate, when Migrate.Listen is set, serves the filterd-to-filterd
	// state transfer of live migrations over mutual TLS (migrate_linux.go).
	Migrate MigrateConfig
	// Logger receives the daemon's logs; discarded if nil.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Socket == "" {
		c.Socket = api.DefaultSocket
	}
	if c.BPFFSRoot == "" {
		c.BPFFSRoot = datapath.DefaultRoot
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.FiltersDir == "" {
		c.FiltersDir = DefaultFiltersDir
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
