// Package hooks is the logic of vnicfilter's libvirt qemu hook
// (cmd/vnicfilter-hook, installed as /etc/libvirt/hooks/qemu.d/vnicfilter).
//
// libvirt runs the hook as `qemu <domain> <operation> <sub-op> <extra>`
// with the full domain XML on stdin, at every phase. What we measured on
// libvirt 9.0 (../shared/DESIGN.md) decides what each phase does:
//
//   - prepare: no tap exists yet. Validate the configuration; a non-zero
//     exit aborts the start and libvirt shows our stderr in `virsh start`.
//   - start: the tap exists and is already a bridge port, QEMU is not
//     running yet. Attach every chain here, so no guest frame passes
//     unfiltered. filterd unreachable = pin a drop-all guard on every
//     protected tap and let the domain start behind it (fail-closed);
//     filterd's watcher replaces the guards with the chains when it comes
//     up. A guard that cannot be pinned refuses the start.
//   - started: too late to attach (the vCPUs already run); nothing to do.
//   - stopped, release: detach the chains the domain owns; remove the
//     guards of the taps the XML names and every guard whose tap is gone.
//   - migrate, restore: validate the incoming XML and pass it through; at
//     migrate, note that the domain arrives, so that start moves its
//     connection state from the source (migrate.go).
//   - reconnect, attach: nothing; filterd's reconcile loop owns running
//     domains.
//
// The hook never calls back into libvirtd (libvirt forbids it: the daemon
// waits for the hook), and every filterd call has a timeout, so a hung
// filterd cannot hang a `virsh start`.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// Client is the part of filterd's API the hook uses; *api.Client
// implements it.
type Client interface {
	Filters(ctx context.Context) ([]api.FilterInfo, error)
	VNICs(ctx context.Context) ([]api.VNIC, error)
	SetChain(ctx context.Context, vnic string, req api.ChainRequest) (*api.VNIC, error)
	Detach(ctx context.Context, vnic string) error
}

var _ Client = (*api.Client)(nil)

// Guard pins and removes the drop-all guards that keep a tap closed while
// filterd is down; BPFFSGuard is the real one.
type Guard interface {
	// Pin attaches the guard to both tc hooks of tap.
	Pin(tap string) error
	// Remove detaches and unpins tap's guard, if any.
	Remove(tap string) error
	// RemoveStale removes the guards whose device is gone.
	RemoveStale() ([]string, error)
}

// DefaultTimeout bounds every filterd call.
const DefaultTimeout = 10 * time.Second

// DefaultNetworkDir is where libvirt keeps the persistent network
// definitions (`virsh net-define`, `virsh net-edit`).
const DefaultNetworkDir = "/etc/libvirt/qemu/networks"

// Hook runs one invocation of the qemu hook. The zero value of every
// field but Client is usable.
type Hook struct {
	// Client talks to filterd.
	Client Client
	// Stdout receives the domain XML at migrate and restore (libvirt
	// reads the hook's output as the possibly rewritten XML). Nil
	// discards.
	Stdout io.Writer
	// Stderr receives one line per problem; libvirt shows it in the
	// error of the failed operation. Nil discards.
	Stderr io.Writer
	// Timeout bounds each filterd call; zero means DefaultTimeout.
	Timeout time.Duration
	// NetworkXML returns the XML of a libvirt network, for its portgroup
	// defaults; an error wrapping fs.ErrNotExist means "no defaults". Nil
	// means no portgroup defaults at all. NetworkFiles reads them from
	// libvirt's config directory (the hook must not ask libvirtd).
	NetworkXML func(name string) ([]byte, error)
	// Guard pins the drop-all guards at start while filterd is down. Nil
	// means a BPFFSGuard under the bpffs-root of the configuration file
	// beside the running hook (ConfigPath(os.Args[0])), read when first
	// needed: cmd/vnicfilter-hook does not set this field.
	Guard Guard
	// HiddenBridge and HiddenAllow: a domain with an interface on the
	// hidden bridge whose tap name matches no HiddenAllow pattern is
	// refused at prepare, start, migrate and restore (hidden.go).
	HiddenBridge string
	HiddenAllow  []string
	// MigrateState says whether an arriving domain's connection state is
	// moved from the source filterd at start (migrate.go); "" means
	// MigrateBestEffort.
	MigrateState MigrateState
	// MarkerDir holds the markers of arriving domains; DefaultMarkerDir
	// when empty.
	MarkerDir string
}

// configuredGuard is the Guard of a Hook that names none.
func configuredGuard() Guard {
	path := ConfigPath(os.Args[0])
	cfg, err := LoadConfig(path)
	if err != nil {
		return brokenGuard{fmt.Errorf("%w (fix %s)", err, path)}
	}
	return BPFFSGuard{Root: cfg.WithDefaults().BPFFSRoot}
}

type brokenGuard struct{ err error }

func (g brokenGuard) Pin(string) error               { return g.err }
func (g brokenGuard) Remove(string) error            { return g.err }
func (g brokenGuard) RemoveStale() ([]string, error) { return nil, g.err }

// NetworkFiles returns a Hook.NetworkXML reading dir/NAME.xml.
func NetworkFiles(dir string) func(name string) ([]byte, error) {
	return func(name string) ([]byte, error) {
		if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
			return nil, fmt.Errorf("network name %q: %w", name, os.ErrNotExist)
		}
		return os.ReadFile(filepath.Join(dir, name+".xml"))
	}
}

// maxXML bounds what we read from stdin.
const maxXML = 64 << 20

// Run handles one hook invocation: args are libvirt's (domain,
// operation, sub-operation, extra), stdin carries the domain XML. It
// returns the process exit status: non-zero aborts prepare, start,
// migrate and restore.
func (h Hook) Run(ctx context.Context, args []string, stdin io.Reader) int {
	if h.Stdout == nil {
		h.Stdout = io.Discard
	}
	if h.Stderr == nil {
		h.Stderr = io.Discard
	}
	if h.Timeout <= 0 {
		h.Timeout = DefaultTimeout
	}
	if len(args) < 2 {
		fmt.Fprintln(h.Stderr, "vnicfilter-hook: usage: vnicfilter-hook DOMAIN OPERATION [SUB-OPERATION [EXTRA]] < domain.xml (run by libvirtd)")
		return 2
	}
	r := &run{Hook: h, domain: args[0]}
	xmlDoc, err := io.ReadAll(io.LimitReader(stdin, maxXML))
	if err != nil {
		return r.fail("read the domain XML from stdin: %v", err)
	}
	switch args[1] {
	case "prepare", "start", "migrate", "restore":
		if code := r.checkHidden(xmlDoc); code != 0 {
			return code
		}
	}
	switch args[1] {
	case "prepare":
		return r.prepare(ctx, xmlDoc)
	case "start":
		return r.start(ctx, xmlDoc)
	case "stopped", "release":
		r.clearIncoming()
		return r.teardown(ctx, xmlDoc, args[1] == "stopped")
	case "migrate", "restore":
		if code := r.prepare(ctx, xmlDoc); code != 0 {
			return code
		}
		if args[1] == "migrate" {
			if err := r.markIncoming(); err != nil {
				r.note("arriving by migration, but the marker for start cannot be written (%v): connection state will not be moved", err)
			}
		}
		// libvirt takes our output as the XML to use; pass it on
		// unchanged (empty output would mean the same, but a hook
		// after us in qemu.d/ may read ours).
		if _, err := h.Stdout.Write(xmlDoc); err != nil {
			return r.fail("write the domain XML to stdout: %v", err)
		}
		return 0
	default:
		// started (too late to attach), reconnect and attach (filterd's
		// reconcile loop owns running domains), and anything newer.
		return 0
	}
}

// run is one invocation's state.
type run struct {
	Hook
	domain string
}

// guard returns the Hook's Guard, or the configured one.
func (r *run) guard() Guard {
	if r.Guard == nil {
		r.Guard = configuredGuard()
	}
	return r.Guard
}

// fail prints one line naming the domain and returns exit status 1.
func (r *run) fail(format string, args ...any) int {
	r.note(format, args...)
	return 1
}

// note prints one line naming the domain.
func (r *run) note(format string, args ...any) {
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ")
	fmt.Fprintf(r.Stderr, "vnicfilter: domain %s: %s\n", r.domain, msg)
}

// chains parses the XML and returns the domain's chains, with the
// portgroup defaults of its networks.
func (r *run) chains(xmlDoc []byte) ([]domainxml.Chain, error) {
	d, err := domainxml.Parse(xmlDoc)
	if err != nil {
		return nil, err
	}
	defaults := domainxml.PortgroupDefaults{}
	if r.NetworkXML != nil {
		seen := map[string]bool{}
		for _, in := range d.Interfaces {
			if in.Type != "network" || seen[in.Network] {
				continue
			}
			seen[in.Network] = true
			doc, err := r.NetworkXML(in.Network)
			if errors.Is(err, os.ErrNotExist) {
				continue // a transient network: no defaults
			}
			if err != nil {
				return nil, fmt.Errorf("network %s: %w", in.Network, err)
			}
			nd, err := domainxml.ParseNetworkDefaults(doc)
			if err != nil {
				return nil, fmt.Errorf("network %s: %w", in.Network, err)
			}
			maps.Copy(defaults, nd)
		}
	}
	return d.Chains(defaults)
}

// call runs f with the per-call timeout.
func (r *run) call(ctx context.Context, f func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	return f(ctx)
}

// unreachable reports whether err means filterd could not be asked
// (not running, or not answering in time), and says which.
func (r *run) unreachable(err error) (string, bool) {
	switch {
	case errors.Is(err, api.ErrDaemonNotRunning):
		return "filterd is not running", true
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("filterd did not answer within %s", r.Timeout), true
	}
	return "", false
}

// lookup fetches the registered filters' schemas from filterd.
func (r *run) lookup(ctx context.Context) (domainxml.Lookup, error) {
	var infos []api.FilterInfo
	err := r.call(ctx, func(ctx context.Context) (err error) {
		infos, err = r.Client.Filters(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	byName := map[string]*sdk.Descriptor{}
	names := make([]string, 0, len(infos))
	for _, fi := range infos {
		dirs, err := sdk.ParseDirections(fi.Directions)
		if err != nil {
			dirs = sdk.DirBoth // trust filterd to refuse what it cannot do
		}
		byName[fi.Name] = &sdk.Descriptor{Name: fi.Name, Version: fi.Version, Directions: dirs, Params: fi.Params}
		names = append(names, fi.Name)
	}
	return func(name string) (*sdk.Descriptor, error) {
		if d, ok := byName[name]; ok {
			return d, nil
		}
		return nil, fmt.Errorf("%w %q (registered: %s)", sdk.ErrUnknownFilter, name, strings.Join(names, ", "))
	}, nil
}

// validate checks every chain against filterd's schemas.
func validate(chains []domainxml.Chain, lookup domainxml.Lookup) error {
	for _, c := range chains {
		if err := domainxml.ValidateFilters(c.Filters, lookup); err != nil {
			return fmt.Errorf("interface %s: %w", c.Interface(), err)
		}
	}
	return nil
}

// prepare validates the configuration. With filterd unreachable, only the
// XML is checked: if filterd is still down at start, the domain starts
// behind drop-all guards and filterd checks the filters when it attaches
// the chains, so nothing runs unfiltered either way.
func (r *run) prepare(ctx context.Context, xmlDoc []byte) int {
	chains, err := r.chains(xmlDoc)
	if err != nil {
		return r.fail("%v", err)
	}
	if len(chains) == 0 {
		return 0
	}
	lookup, err := r.lookup(ctx)
	if why, down := r.unreachable(err); down {
		r.note("%s: checked the XML only; filters and parameters are checked when filterd attaches the chains", why)
		return 0
	}
	if err != nil {
		return r.fail("list filters: %v", err)
	}
	if err := validate(chains, lookup); err != nil {
		return r.fail("%v", err)
	}
	return 0
}

// start attaches every chain before QEMU runs. Fail-closed: if filterd
// cannot be asked, every protected tap gets a drop-all guard (guardTaps)
// and the domain starts with no traffic until filterd's watcher attaches
// the chains, which replace the guards. On any other failure the chains
// attached so far are detached again, so a refused start changes nothing.
func (r *run) start(ctx context.Context, xmlDoc []byte) int {
	incoming := r.incoming()
	chains, err := r.chains(xmlDoc)
	if err != nil {
		return r.fail("%v", err)
	}
	if len(chains) == 0 {
		return 0
	}
	for _, c := range chains {
		if c.Tap == "" {
			return r.fail("interface %s: the XML names no tap (<target dev=…>) at start", c.Interface())
		}
	}
	lookup, err := r.lookup(ctx)
	if why, down := r.unreachable(err); down {
		return r.guardTaps(chains, why)
	}
	if err != nil {
		return r.fail("list filters: %v", err)
	}
	if err := validate(chains, lookup); err != nil {
		return r.fail("%v", err)
	}
	req := api.ChainRequest{Owner: "libvirt:" + r.domain}
	var attached []string
	for _, c := range chains {
		// The guest MAC is recorded as the vNIC's label: the manager
		// places the VM in overlay segments by it.
		req.Filters, req.MAC = c.Filters, macString(c.MAC)
		err := r.call(ctx, func(ctx context.Context) error {
			_, err := r.Client.SetChain(ctx, c.Tap, req)
			if api.IsCode(err, api.CodeAlreadyExists) {
				// libvirt created this tap a moment ago: a chain on it
				// is left over from an earlier tap of the same name.
				if err := r.Client.Detach(ctx, c.Tap); err != nil && !api.IsCode(err, api.CodeNotAttached) {
					return fmt.Errorf("replace the stale chain: %w", err)
				}
				_, err = r.Client.SetChain(ctx, c.Tap, req)
			}
			return err
		})
		if err != nil {
			r.rollback(ctx, attached)
			if why, down := r.unreachable(err); down {
				return r.guardTaps(chains, why)
			}
			return r.fail("interface %s: attach chain: %v", c.Interface(), err)
		}
		attached = append(attached, c.Tap)
	}
	if incoming {
		if code := r.pullState(ctx, chains); code != 0 {
			r.rollback(ctx, attached)
			return code
		}
	}
	return 0
}

// guardTaps pins a drop-all guard on every tap of chains, so the domain
// can start with filterd unreachable and no frame crosses its protected
// taps until filterd attaches the chains (filterd's datapath removes a
// guard once the chain is in front of it). If a guard cannot be pinned,
// the ones pinned so far are removed and the start is refused.
func (r *run) guardTaps(chains []domainxml.Chain, why string) int {
	var taps []string
	for _, c := range chains {
		if !slices.Contains(taps, c.Tap) {
			taps = append(taps, c.Tap)
		}
	}
	g := r.guard()
	for i, tap := range taps {
		if err := g.Pin(tap); err != nil {
			for _, done := range taps[:i] {
				_ = g.Remove(done)
			}
			return r.fail("%s, and the drop-all guard on %s failed: %v: refusing to start %s unprotected (fail-closed)", why, tap, err, r.domain)
		}
	}
	what := "chain"
	if len(taps) > 1 {
		what = "chains"
	}
	r.note("%s: %s starts behind a drop-all guard on %s until filterd attaches its %s", why, r.domain, strings.Join(taps, ", "), what)
	return 0
}

// rollback detaches the chains a failed start attached.
func (r *run) rollback(ctx context.Context, taps []string) {
	for _, tap := range taps {
		err := r.call(ctx, func(ctx context.Context) error { return r.Client.Detach(ctx, tap) })
		if err != nil && !api.IsCode(err, api.CodeNotAttached) {
			r.note("%s: detach after the failed start: %v", tap, err)
		}
	}
}

// teardown detaches the domain's chains at stopped and release (at
// stopped, after pushing the final state of a migrated domain). It
// always exits 0: libvirt cannot undo a stop, and filterd's reconcile
// loop removes whatever is left. The chains are found by owner
// ("libvirt:<domain>"), not by the taps in the XML: at stopped and release
// libvirt has already dropped <target dev=…> from the XML it passes
// (measured on libvirt 9.0), and a chain attached live by filterd's
// watcher (hot-plug) is this domain's too. Chains of other owners are
// left alone, in case a tap name was already reused.
func (r *run) teardown(ctx context.Context, xmlDoc []byte, stopped bool) int {
	chains, err := r.chains(xmlDoc)
	if err == nil && len(chains) == 0 {
		return 0 // never protected: do not bother filterd
	}
	defer r.removeGuards(chains)
	if stopped {
		// A domain leaving by migration: its final state goes to the
		// destination before the chains go (migrate.go).
		r.handoff(ctx)
	}
	owner := "libvirt:" + r.domain
	var vnics []api.VNIC
	err = r.call(ctx, func(ctx context.Context) (err error) {
		vnics, err = r.Client.VNICs(ctx)
		return err
	})
	if why, down := r.unreachable(err); down {
		r.note("%s: chains left for filterd to reconcile", why)
		return 0
	}
	if err != nil {
		r.note("list chains: %v", err)
		return 0
	}
	for _, v := range vnics {
		if v.Owner != owner {
			continue
		}
		err := r.call(ctx, func(ctx context.Context) error { return r.Client.Detach(ctx, v.Name) })
		switch why, down := r.unreachable(err); {
		case err == nil, api.IsCode(err, api.CodeNotAttached), api.IsCode(err, api.CodeNoSuchDevice):
		case down:
			r.note("%s: chains left for filterd to reconcile", why)
			return 0
		default:
			r.note("%s: detach chain: %v", v.Name, err)
		}
	}
	return 0
}

// removeGuards removes, at stopped and release, the drop-all guards of the
// taps the XML names (libvirt 9.0 names none at these phases, measured) and
// every guard whose tap is gone: a domain that started behind guards and
// stopped before filterd came back leaves them on its deleted taps.
func (r *run) removeGuards(chains []domainxml.Chain) {
	g := r.guard()
	for _, c := range chains {
		if c.Tap == "" {
			continue
		}
		if err := g.Remove(c.Tap); err != nil {
			r.note("%s: remove the drop-all guard: %v", c.Tap, err)
		}
	}
	if _, err := g.RemoveStale(); err != nil {
		r.note("remove stale drop-all guards: %v", err)
	}
}

// macString is a MAC as filterd records it; empty when unknown.
func macString(mac net.HardwareAddr) string {
	if len(mac) == 0 {
		return ""
	}
	return mac.String()
}
