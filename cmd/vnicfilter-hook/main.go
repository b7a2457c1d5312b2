// Command vnicfilter-hook is vnicfilter's libvirt qemu hook. Install it as
// /etc/libvirt/hooks/qemu.d/vnicfilter (libvirt ≥ 6.5; the first hook file
// needs a libvirtd restart to be noticed). It validates a domain's filter
// configuration at prepare and attaches its chains at start; see package
// hooks and docs/domain-xml.md.
//
// Environment: VNICFILTER_SOCKET overrides filterd's socket
// (default /run/vnicfilter/filterd.sock).
package main

import (
	"context"
	"os"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/hooks"
)

func main() {
	h := hooks.Hook{
		Client:     api.NewClient(os.Getenv("VNICFILTER_SOCKET")),
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		NetworkXML: hooks.NetworkFiles(hooks.DefaultNetworkDir),
	}
	os.Exit(h.Run(context.Background(), os.Args[1:], os.Stdin))
}
