// Command vfctl is the operator's command line for filterd: it attaches and
// detaches vnicfilter chains and shows their counters. See internal/cli.
package main

import (
	"os"

	"github.com/vnicfilter/vnicfilter/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
