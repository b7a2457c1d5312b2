package filterd

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// HiddenConfig configures the hidden bridge: a per-host bridge with no
// uplink carrying only filterd's own address and the control VM's vNIC,
// where filterd serves its API to the control VM's agent over mutual TLS.
type HiddenConfig struct {
	// Bridge is the bridge's name (e.g. vfhidden0); empty: no hidden
	// bridge.
	Bridge string
	// Addr is filterd's address on it (a link-local IPv4 prefix, e.g.
	// 169.254.77.1/24).
	Addr netip.Prefix
	// Port of the mutual-TLS API (default 9443).
	Port int
	// TLSDir holds the host CA and filterd's certificate (created at
	// first start, 0700).
	TLSDir string
	// Allow are glob patterns of the only ports allowed on the bridge
	// (the control VM's vNIC, named in its domain XML's <target dev>);
	// default "vfcvm*".
	Allow []string
	// Guard is how often the bridge's ports are checked besides link
	// events; default 1s.
	Guard time.Duration
}

// nftTable is the table keeping the hidden bridge unroutable.
const nftTable = "vnicfilter_hidden"

// hidden runs the hidden bridge: its setup, its port guard, its listener.
type hidden struct {
	cfg HiddenConfig
	log *slog.Logger

	mu         sync.Mutex
	intrusions []api.Intrusion
	count      atomic.Uint64
}

func (c HiddenConfig) withDefaults() HiddenConfig {
	if c.Port == 0 {
		c.Port = 9443
	}
	if len(c.Allow) == 0 {
		c.Allow = []string{"vfcvm*"}
	}
	if c.Guard <= 0 {
		c.Guard = time.Second
	}
	return c
}

func (c HiddenConfig) validate() error {
	switch {
	case len(c.Bridge) == 0 || len(c.Bridge) > 15:
		return fmt.Errorf("hidden bridge name %q: want 1 to 15 characters", c.Bridge)
	case !c.Addr.IsValid() || !c.Addr.Addr().Is4():
		return fmt.Errorf("hidden bridge address %q: want an IPv4 prefix such as 169.254.77.1/24", c.Addr)
	case !c.Addr.Addr().IsLinkLocalUnicast() && !c.Addr.Addr().IsPrivate():
		return fmt.Errorf("hidden bridge address %s: want a link-local (169.254/16) or private address, never a routable one", c.Addr)
	case c.TLSDir == "":
		return errors.New("hidden bridge: a TLS directory is required (--hidden-tls-dir)")
	}
	for _, p := range c.Allow {
		if _, err := filepath.Match(p, "x"); err != nil {
			return fmt.Errorf("hidden bridge allow pattern %q: %v", p, err)
		}
	}
	if _, err := exec.LookPath("nft"); err != nil {
		return errors.New("hidden bridge: the nft command (package nftables) is required to keep it unroutable")
	}
	return nil
}

// setup creates the bridge (or checks the one there), gives it filterd's
// address, turns forwarding off on it and installs the nftables table that
// drops anything reaching filterd's address from elsewhere and anything
// routed into or out of the bridge.
func (h *hidden) setup() error {
	c := h.cfg
	l, err := netlink.LinkByName(c.Bridge)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: c.Bridge}}
		if err := netlink.LinkAdd(br); err != nil {
			return fmt.Errorf("create hidden bridge %s: %w", c.Bridge, err)
		}
		if l, err = netlink.LinkByName(c.Bridge); err != nil {
			return err
		}
		h.log.Info("created the hidden bridge", "bridge", c.Bridge)
	case err != nil:
		return err
	case l.Type() != "bridge":
		return fmt.Errorf("hidden bridge %s exists and is a %s, not a bridge", c.Bridge, l.Type())
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Addr.Addr().AsSlice(), Mask: net.CIDRMask(c.Addr.Bits(), 32)}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("address %s on %s: %w", c.Addr, c.Bridge, err)
	}
	for key, val := range map[string]string{
		"net/ipv4/conf/" + c.Bridge + "/forwarding":   "0",
		"net/ipv6/conf/" + c.Bridge + "/disable_ipv6": "1",
	} {
		if err := os.WriteFile(filepath.Join("/proc/sys", key), []byte(val), 0o644); err != nil {
			return fmt.Errorf("sysctl %s: %w", key, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return err
	}
	ruleset := fmt.Sprintf(`table inet %[1]s
delete table inet %[1]s
table inet %[1]s {
	chain input {
		type filter hook input priority -200; policy accept;
		ip daddr %[2]s iifname != "%[3]s" counter drop comment "filterd's hidden address, from anywhere but the hidden bridge"
	}
	chain forward {
		type filter hook forward priority -200; policy accept;
		iifname "%[3]s" counter drop comment "nothing is routed out of the hidden bridge"
		oifname "%[3]s" counter drop comment "nothing is routed into it"
	}
}
`, nftTable, c.Addr.Addr(), c.Bridge)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = bytes.NewBufferString(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("install nftables table %s: %v: %s", nftTable, err, bytes.TrimSpace(out))
	}
	h.guard()
	return nil
}

// allowed reports whether a port name matches an allow pattern.
func (h *hidden) allowed(name string) bool {
	for _, p := range h.cfg.Allow {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

// guard removes every port of the hidden bridge that is not allowed, sets
// it down and raises the alarm (log, metric, GET /v1/hidden).
func (h *hidden) guard() {
	br, err := netlink.LinkByName(h.cfg.Bridge)
	if err != nil {
		h.log.Error("hidden bridge is gone", "bridge", h.cfg.Bridge, "err", err)
		return
	}
	links, err := netlink.LinkList()
	if err != nil {
		h.log.Error("list links", "err", err)
		return
	}
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex != br.Attrs().Index || h.allowed(a.Name) {
			continue
		}
		err := netlink.LinkSetNoMaster(l)
		if err == nil {
			err = netlink.LinkSetDown(l)
		}
		in := api.Intrusion{Port: a.Name, MAC: a.HardwareAddr.String(), At: time.Now().UTC(), Removed: err == nil}
		if err != nil {
			in.Error = err.Error()
		}
		h.mu.Lock()
		h.intrusions = append(h.intrusions, in)
		if len(h.intrusions) > 100 {
			h.intrusions = h.intrusions[len(h.intrusions)-100:]
		}
		h.mu.Unlock()
		h.count.Add(1)
		h.log.Error("ALARM: a port not allowed on the hidden bridge was removed", "bridge", h.cfg.Bridge, "port", a.Name, "mac", a.HardwareAddr, "removed", err == nil, "err", err)
	}
}

// watch runs the guard on every link change and every Guard interval.
func (h *hidden) watch(ctx context.Context) {
	updates := make(chan netlink.LinkUpdate, 64)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(updates, done); err != nil {
		h.log.Warn("link events unavailable; the hidden bridge is checked by interval only", "err", err)
		updates = nil
	}
	t := time.NewTicker(h.cfg.Guard)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case _, ok := <-updates:
			if !ok {
				updates = nil
				continue
			}
		}
		h.guard()
	}
}

// status is GET /v1/hidden.
func (h *hidden) status() api.HiddenStatus {
	st := api.HiddenStatus{Bridge: h.cfg.Bridge, Address: h.cfg.Addr.String(), Port: h.cfg.Port, Allow: h.cfg.Allow, Ports: []string{}, Intrusions: []api.Intrusion{}}
	if br, err := netlink.LinkByName(h.cfg.Bridge); err == nil {
		if links, err := netlink.LinkList(); err == nil {
			for _, l := range links {
				if l.Attrs().MasterIndex == br.Attrs().Index {
					st.Ports = append(st.Ports, l.Attrs().Name)
				}
			}
		}
	}
	h.mu.Lock()
	st.Intrusions = append(st.Intrusions, h.intrusions...)
	h.mu.Unlock()
	st.IntrusionsTotal = h.count.Load()
	return st
}

// serveHidden sets the hidden bridge up and serves the API on it over
// mutual TLS until ctx ends. It runs in the calling goroutine's network
// namespace context (filterd's).
func (d *Daemon) serveHidden(ctx context.Context) (func() error, error) {
	h := d.hidden
	if err := h.setup(); err != nil {
		return nil, err
	}
	tcfg, err := serverTLS(h.cfg.TLSDir, h.cfg.Addr.Addr().AsSlice())
	if err != nil {
		return nil, fmt.Errorf("hidden bridge TLS: %w", err)
	}
	addr := net.JoinHostPort(h.cfg.Addr.Addr().String(), strconv.Itoa(h.cfg.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("hidden bridge API on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: d.Handler(), TLSConfig: tcfg, ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelDebug)}
	go h.watch(ctx)
	go func() {
		if err := srv.Serve(tls.NewListener(ln, tcfg)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("hidden bridge API", "err", err)
		}
	}()
	d.log.Info("serving the API on the hidden bridge (mutual TLS)", "bridge", h.cfg.Bridge, "addr", addr, "allow", h.cfg.Allow)
	return func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	}, nil
}
