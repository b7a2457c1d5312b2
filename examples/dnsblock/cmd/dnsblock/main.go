// Command dnsblock is the dnsblock filter's process. filterd starts it
// from dnsblock.json (never run it by hand): install it beside the
// manifest, then `vfctl filter load dnsblock.json`.
package main

import (
	"fmt"
	"os"

	"example.com/dnsblock"

	"github.com/vnicfilter/vnicfilter/sdk/slowproc"
)

// version is set by the build (-ldflags "-X main.version=...").
var version = "1.0.0"

func main() {
	err := slowproc.Serve(slowproc.Filter{
		Name:    "dnsblock",
		Version: version,
		Params:  dnsblock.Params,
		New:     dnsblock.New,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "dnsblock:", err)
		os.Exit(1)
	}
}
