package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

func (a *app) vnicCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "vnic",
		Short: "Move a vNIC's filter state to another host (export, import)",
		Long: `When a VM moves to another host outside libvirt's migration flow, its
filters' per-vNIC state must move with it, or a default-deny firewall cuts
its live connections: the firewall's connection table (and any filter that
keeps state that must follow the VM) is exported from the source vNIC and
imported into the destination vNIC, whose chain is attached first with the
same filters in the same slots.

The bundle is versioned and every filter's part carries a CRC-32C; a
damaged bundle, one of another version or format, or one that does not fit
the destination chain is refused with the reason and changes nothing.
Imported connections are checked against the destination's own policy at
their first packet there.`,
		Example: `  # on the source host, just before the VM stops there:
  vfctl vnic export vnet3 -f /run/vm42.state
  # on the destination, after attaching the same chain, before the VM resumes:
  vfctl vnic import vnet9 /run/vm42.state`,
	}
	var file string
	export := &cobra.Command{
		Use:   "export VNIC [-f FILE]",
		Short: "Write the state of VNIC's chain to a bundle (stdout or FILE)",
		Long: `Export asks filterd for the movable state of every filter in VNIC's chain
(the firewall's connection table, with each flow's remaining lifetime) and
writes it as one versioned, checksummed bundle: to stdout, or atomically to
FILE. Export just before the VM stops on this host, so the bundle holds the
flows it had at the last moment; the chain here keeps running.`,
		Example: "  vfctl vnic export vnet3 -f /run/vm42.state\n  vfctl vnic export vnet3 | ssh dst vfctl vnic import vnet9 -",
		Args:    args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			b, err := call(ctx, a, func(ctx context.Context) ([]byte, error) { return a.client.ExportState(ctx, args[0]) })
			if err != nil {
				return err
			}
			if file == "" || file == "-" {
				_, err = os.Stdout.Write(b)
				return err
			}
			tmp, err := os.CreateTemp(filepath.Dir(file), ".vfstate-*")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			if _, err := tmp.Write(b); err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), file); err != nil {
				return err
			}
			return a.emit(map[string]any{"vnic": args[0], "file": file, "bytes": len(b)}, func(w io.Writer) error {
				fmt.Fprintf(w, "exported %s: %d bytes to %s\n", args[0], len(b), file)
				return nil
			})
		}),
	}
	export.Flags().StringVarP(&file, "file", "f", "", "write the bundle to `FILE` (atomically) instead of stdout")
	imp := &cobra.Command{
		Use:   "import VNIC FILE",
		Short: "Add a state bundle exported elsewhere to VNIC's chain (FILE - reads stdin)",
		Long: `Import hands each filter of VNIC's chain its part of the bundle. Attach the
same chain (same filters in the same slots) first, and import before the VM
resumes on this host. The whole bundle is checked before any filter reads
it: a damaged bundle, another bundle version or state format, or a slot
holding another filter is refused (exit 5) and nothing changes. Imported
flows are re-checked against this host's policy at their first packet.`,
		Example: "  vfctl vnic import vnet9 /run/vm42.state\n  vfctl -o json vnic import vnet9 /run/vm42.state",
		Args:    args("VNIC", "FILE"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			var b []byte
			var err error
			if args[1] == "-" {
				b, err = io.ReadAll(os.Stdin)
			} else {
				b, err = os.ReadFile(args[1])
			}
			if err != nil {
				return err
			}
			r, err := call(ctx, a, func(ctx context.Context) (*api.ImportResult, error) { return a.client.ImportState(ctx, args[0], b) })
			if err != nil {
				return err
			}
			return a.emit(r, func(w io.Writer) error {
				fmt.Fprintf(w, "imported into %s (exported from %s at %s) in %.1f ms\n", r.VNIC, r.From, r.ExportedAt.Format("2006-01-02 15:04:05 MST"), r.Seconds*1000)
				tw := table(w)
				row(tw, "SLOT", "FILTER", "ENTRIES", "BYTES", "MS")
				for _, s := range r.Slots {
					row(tw, fmt.Sprint(s.Slot), s.Filter, fmt.Sprint(s.Entries), fmt.Sprint(s.Bytes), fmt.Sprintf("%.1f", s.Seconds*1000))
				}
				return tw.Flush()
			})
		}),
	}
	c.AddCommand(export, imp)
	return c
}
