// Command vnicfilter-hook is vnicfilter's libvirt qemu hook. `make install`
// installs it as /etc/libvirt/hooks/qemu.d/vnicfilter (libvirt ≥ 6.5; the
// first hook file needs a libvirtd restart to be noticed). It validates a
// domain's filter configuration at prepare and attaches its chains at
// start; see package hooks, docs/domain-xml.md and docs/libvirt.md.
//
// libvirt runs hooks with a clean environment, so the hook reads filterd's
// socket from vnicfilter.conf in the hooks directory (the parent of
// qemu.d/): a line "socket=/path" (default /run/vnicfilter/filterd.sock).
// VNICFILTER_SOCKET, when set, overrides it, for running the hook by hand.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/hooks"
)

func main() {
	path := hooks.ConfigPath(os.Args[0])
	cfg, err := hooks.LoadConfig(path)
	if err != nil {
		// A broken configuration must not let a protected VM start: exit
		// non-zero, which refuses prepare and start (stop phases ignore it).
		fmt.Fprintf(os.Stderr, "vnicfilter: %v (fix %s)\n", err, path)
		os.Exit(1)
	}
	if s := os.Getenv("VNICFILTER_SOCKET"); s != "" {
		cfg.Socket = s
	}
	cfg = cfg.WithDefaults()
	h := hooks.Hook{
		Client:       api.NewClient(cfg.Socket),
		Stdout:       os.Stdout,
		Stderr:       os.Stderr,
		Timeout:      cfg.Timeout,
		NetworkXML:   hooks.NetworkFiles(cfg.NetworkDir),
		Guard:        hooks.BPFFSGuard{Root: cfg.BPFFSRoot},
		HiddenBridge: cfg.HiddenBridge,
		HiddenAllow:  cfg.HiddenAllow,
		MigrateState: cfg.MigrateState,
		MarkerDir:    cfg.MarkerDir,
	}
	os.Exit(h.Run(context.Background(), os.Args[1:], os.Stdin))
}
