package watch

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
)

// Options configure a Watcher. The zero value of every field but URI is
// usable.
type Options struct {
	// URI of libvirtd, e.g. qemu:///system or
	// qemu:///system?socket=/path/to/libvirt-sock.
	URI string
	// Logger; discarded if nil.
	Logger *slog.Logger
	// MinBackoff and MaxBackoff bound the wait between connection attempts
	// (doubling from min to max); 100 ms and 5 s if zero.
	MinBackoff, MaxBackoff time.Duration
	// Resync reconciles this often even without events, to repair drift
	// (a chain detached by hand); 30 s if zero, never if negative.
	Resync time.Duration
	// OnReconcile, if set, is called after every reconcile (tests, metrics).
	OnReconcile func(Result)
	// OnMigrationPaused, if set, is called (in its own goroutine) when a
	// domain pauses for the last copy of a live migration away from this
	// host (VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED, or _POSTCOPY): from then
	// on its vCPUs run nowhere until the destination resumes them, so its
	// state here is final (filterd pushes it to the destination).
	OnMigrationPaused func(domain string)
}

// Watcher keeps filterd's libvirt-owned chains equal to what the running
// domains' XML asks for.
type Watcher struct {
	chains Chains
	opts   Options
	log    *slog.Logger
	uri    *url.URL
}

// New returns a watcher driving chains. It does not connect yet: see Run.
func New(chains Chains, opts Options) (*Watcher, error) {
	u, err := url.Parse(opts.URI)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("libvirt URI %q: want e.g. qemu:///system", opts.URI)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Resync == 0 {
		opts.Resync = 30 * time.Second
	}
	return &Watcher{chains: chains, opts: opts, log: opts.Logger, uri: u}, nil
}

// events are the domain events that can change which chains should exist.
var events = []libvirt.DomainEventID{
	libvirt.DomainEventIDLifecycle,      // started, stopped, undefined, …
	libvirt.DomainEventIDDeviceAdded,    // NIC hot-plug
	libvirt.DomainEventIDDeviceRemoved,  // NIC unplug
	libvirt.DomainEventIDMetadataChange, // virsh metadata / virsh edit of the filter config
}

// Run connects to libvirtd, subscribes to the events, reconciles, and
// reconciles again after every event, every Resync, and every reconnect,
// until ctx is done. A lost connection (libvirtd restarted) is retried with
// exponential backoff; meanwhile the chains stay as they are. Run returns
// ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := w.opts.MinBackoff
	for {
		err := w.session(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		w.log.Warn("libvirt connection lost; reconnecting", "uri", w.opts.URI, "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		if err == nil || !errors.Is(err, errConnect) {
			backoff = w.opts.MinBackoff // we were connected: start over
		} else {
			backoff = min(2*backoff, w.opts.MaxBackoff)
		}
	}
}

var errConnect = errors.New("connect to libvirtd")

// session is one connection: subscribe, reconcile, then reconcile on each
// event until the connection drops or ctx ends.
func (w *Watcher) session(ctx context.Context) error {
	l, err := libvirt.ConnectToURI(w.uri)
	if err != nil {
		return fmt.Errorf("%w %s: %w", errConnect, w.opts.URI, err)
	}
	defer func() { _ = l.Disconnect() }()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dirty := make(chan struct{}, 1)
	mark := func() {
		select {
		case dirty <- struct{}{}:
		default:
		}
	}
	for _, id := range events {
		ch, err := l.SubscribeEvents(sctx, id, libvirt.OptDomain{})
		if err != nil {
			return fmt.Errorf("subscribe to libvirt events %d: %w", id, err)
		}
		go func() {
			for ev := range ch {
				switch name, what := migrationEvent(ev); what {
				case "paused":
					w.log.Info("domain paused for migration", "domain", name)
					if w.opts.OnMigrationPaused != nil {
						go w.opts.OnMigrationPaused(name)
					}
				case "resumed":
					w.log.Info("domain resumed after migration", "domain", name)
				}
				mark()
			}
		}()
	}
	w.log.Info("watching libvirt", "uri", w.opts.URI)
	mark() // reconcile at once: on start and on every reconnect
	var resync <-chan time.Time
	if w.opts.Resync > 0 {
		t := time.NewTicker(w.opts.Resync)
		defer t.Stop()
		resync = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.Disconnected():
			return errors.New("libvirtd closed the connection")
		case <-resync:
			mark()
		case <-dirty:
			res, err := w.reconcile(ctx, l)
			if err != nil {
				w.log.Error("reconcile", "err", err)
				if !l.IsConnected() {
					return err
				}
				continue
			}
			if res.Attached+res.Replaced+res.Detached > 0 || len(res.Errors) > 0 {
				w.log.Info("reconciled", "result", res.String())
			}
			for _, e := range res.Errors {
				w.log.Error("reconcile", "err", e)
			}
			if w.opts.OnReconcile != nil {
				w.opts.OnReconcile(res)
			}
		}
	}
}

// reconcile lists filterd's chains first and libvirt's running domains
// second (see Apply for why), then applies the difference.
func (w *Watcher) reconcile(ctx context.Context, l *libvirt.Libvirt) (Result, error) {
	actual, err := w.chains.VNICs(ctx)
	if err != nil {
		return Result{}, fmt.Errorf("list chains: %w", err)
	}
	running, err := Read(l)
	if err != nil {
		return Result{}, err
	}
	return Apply(ctx, w.chains, w.log, actual, running), nil
}

// Read returns every running domain with the chains its live XML asks
// for, portgroup defaults of its libvirt networks included.
func Read(l *libvirt.Libvirt) ([]Running, error) {
	doms, _, err := l.ConnectListAllDomains(1, libvirt.ConnectListDomainsActive)
	if err != nil {
		return nil, fmt.Errorf("list running domains: %w", err)
	}
	nets := map[string]domainxml.PortgroupDefaults{}
	var out []Running
	for _, dom := range doms {
		r := Running{Name: dom.Name}
		x, err := l.DomainGetXMLDesc(dom, 0)
		if err != nil {
			if libvirt.IsNotFound(err) {
				continue // gone since the list: not running
			}
			r.Err = fmt.Errorf("live XML: %w", err)
			out = append(out, r)
			continue
		}
		d, err := domainxml.Parse([]byte(x))
		if err != nil {
			r.Err = err
			out = append(out, r)
			continue
		}
		defaults := domainxml.PortgroupDefaults{}
		for _, in := range d.Interfaces {
			if in.Type != "network" {
				continue
			}
			nd, ok := nets[in.Network]
			if !ok {
				nd, err = networkDefaults(l, in.Network)
				if err != nil {
					r.Err = err
					break
				}
				nets[in.Network] = nd
			}
			for k, v := range nd {
				defaults[k] = v
			}
		}
		if r.Err == nil {
			r.Chains, r.Err = DesiredChains(d, defaults)
		}
		out = append(out, r)
	}
	return out, nil
}

// networkDefaults reads a libvirt network's portgroup defaults; a network
// that does not exist has none.
func networkDefaults(l *libvirt.Libvirt, name string) (domainxml.PortgroupDefaults, error) {
	n, err := l.NetworkLookupByName(name)
	if err != nil {
		var e libvirt.Error
		if errors.As(err, &e) && e.Code == uint32(libvirt.ErrNoNetwork) {
			return nil, nil
		}
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	x, err := l.NetworkGetXMLDesc(n, 0)
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	d, err := domainxml.ParseNetworkDefaults([]byte(x))
	if err != nil {
		return nil, fmt.Errorf("network %s: %w", name, err)
	}
	return d, nil
}

// migrationEvent tells a domain's pause for the switch-over of an
// outgoing live migration ("paused") and an incoming domain's resumption
// ("resumed") from other events (""), and names the domain.
func migrationEvent(ev any) (string, string) {
	var m libvirt.DomainEventLifecycleMsg
	switch e := ev.(type) {
	case *libvirt.DomainEventCallbackLifecycleMsg:
		m = e.Msg
	case libvirt.DomainEventCallbackLifecycleMsg:
		m = e.Msg
	default:
		return "", ""
	}
	switch libvirt.DomainEventType(m.Event) {
	case libvirt.DomainEventSuspended:
		switch libvirt.DomainEventSuspendedDetailType(m.Detail) {
		case libvirt.DomainEventSuspendedMigrated, libvirt.DomainEventSuspendedPostcopy:
			return m.Dom.Name, "paused"
		}
	case libvirt.DomainEventResumed:
		if libvirt.DomainEventResumedDetailType(m.Detail) == libvirt.DomainEventResumedMigrated {
			return m.Dom.Name, "resumed"
		}
	}
	return "", ""
}
