package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

func (a *app) encapCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "encap",
		Short: "The encap filter's host-wide state (fdb: the forwarding table)",
		Long: `Commands for the encap overlay filter (docs/encap.md) that concern the
whole host rather than one vNIC. See "vfctl encap fdb --help".`,
		Example: "  vfctl encap fdb show",
	}
	c.AddCommand(a.encapFDBCommand())
	return c
}

func (a *app) encapFDBCommand() *cobra.Command {
	var ifGen uint64
	c := &cobra.Command{
		Use:   "fdb",
		Short: "Show and change the encap forwarding table (segment, MAC -> host)",
		Long: `The forwarding table tells every encap instance of the host which host
each VM's MAC of its segment lives on, which hosts are members of each
segment (broadcast and unknown unicast go to these only), and which
addresses to answer ARP/ND for. The control plane pushes it to filterd on
every host; filterd writes each change into the maps of every encap
instance in place (no re-attach) and keeps the table in its state
directory (encap-fdb.json), so a restart keeps it.

Until a table is pushed, instances read the file named by their fib
parameter. Once one is, it is the table for every encap instance of the
host: the fib files are no longer read (attach and reload included) until
"vfctl encap fdb drop".

Every change is checked against the whole table and against every live
instance (a VNI out of range, a host that is not a member of the segment,
the same MAC twice in a segment, an address claimed twice, a segment a
local vNIC is in and this host is not a member of, more entries than an
instance's fib_size): a refused change is reported (exit 5) and nothing
changes anywhere.

Each accepted change has a generation number. --if-generation makes a
change conditional on the live generation (exit 5, stale_generation, if
another change came first).`,
		Example: `  vfctl encap fdb set /etc/vnicfilter/fib.json
  vfctl encap fdb show --vni 100
  vfctl encap fdb add --vni 100 --mac 02:00:00:00:00:01 --host 192.0.2.3 --ip 10.0.0.1
  vfctl encap fdb del 100 02:00:00:00:00:01`,
	}
	c.PersistentFlags().Uint64Var(&ifGen, "if-generation", 0, "change only if the live table has this `generation` (set, add, del)")

	var vni uint32
	show := &cobra.Command{
		Use:   "show [--vni VNI]",
		Short: "Print the pushed table (segments, then entries)",
		Long: `Show prints the table pushed to filterd: its generation, each segment with
its member hosts, and each entry (segment, MAC, host, addresses). With -o
json it prints the table in the file's format, which "vfctl encap fdb set"
takes back. Exit 4 when no table was pushed (the instances use their fib
files) or the segment is not in it.`,
		Example: "  vfctl encap fdb show\n  vfctl encap fdb show --vni 100\n  vfctl -o json encap fdb show > fib.json",
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			t, err := call(ctx, a, func(ctx context.Context) (*api.EncapFDB, error) { return a.client.EncapFDB(ctx, vni) })
			if err != nil {
				return err
			}
			return a.emit(t, func(w io.Writer) error {
				fmt.Fprintf(w, "generation %d\n\n", t.Generation)
				tw := table(w)
				row(tw, "VNI", "HOSTS")
				for _, s := range t.Segments {
					row(tw, s.VNI, strings.Join(s.Hosts, ","))
				}
				row(tw)
				row(tw, "VNI", "MAC", "HOST", "ADDRESSES")
				for _, e := range t.Entries {
					row(tw, e.VNI, e.MAC, e.Host, dash(strings.Join(e.IPs, ",")))
				}
				return tw.Flush()
			})
		}),
	}
	show.Flags().Uint32Var(&vni, "vni", 0, "only this `segment`")

	set := &cobra.Command{
		Use:   "set FILE|-",
		Short: "Replace the whole table with a file (- : standard input)",
		Long: `Set replaces the whole table with FILE, in the fib file's format
(docs/encap.md), atomically: each instance swaps the new table in with one
map update. A "generation" in the file must be above the live one (a
manager pushing versioned tables never goes back); without it the table
takes the next generation. Errors carry the line and column in FILE.`,
		Example: `  vfctl encap fdb set /etc/vnicfilter/fib.json
  vfctl -o json encap fdb show | jq '...' | vfctl encap fdb set -`,
		Args: args("FILE"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(os.Stdin)
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return loadErr(err)
			}
			ch, err := call(ctx, a, func(ctx context.Context) (*api.EncapFDBChange, error) { return a.client.SetEncapFDB(ctx, data, ifGen) })
			if err != nil {
				if ae, ok := err.(*api.Error); ok && args[0] != "-" {
					ae.Message = strings.Replace(ae.Message, "request body:", args[0]+":", 1)
				}
				return err
			}
			return a.emitFDBChange(ch)
		}),
	}

	var mac, host, file string
	var ips, hosts []string
	add := &cobra.Command{
		Use:   "add --vni VNI (--mac MAC --host HOST [--ip IP]... | --hosts HOST,...) | --file FILE",
		Short: "Add or replace an entry or a segment (a VM that moved: its new host)",
		Long: `Add places a VM's MAC in segment VNI on HOST, with the addresses the filter
answers ARP/ND for (--ip, repeatable), replacing the entry the MAC had in
the segment: moving a VM is one add with its new host. Each instance
writes the changed entries into its live maps one by one; a lookup sees
an entry's old or new value, never a mix.

--hosts instead sets the member hosts of segment VNI (declaring it if it
is new); entries whose host is no longer a member are refused.

--file takes a document in the fib file's format with "segments" and/or
"entries", merged the same way, all or nothing.`,
		Example: `  vfctl encap fdb add --vni 100 --mac 02:00:00:00:00:01 --host 192.0.2.3 --ip 10.0.0.1 --ip fd00::1
  vfctl encap fdb add --vni 300 --hosts 192.0.2.1,192.0.2.2
  vfctl encap fdb add --file moves.json`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			var t api.EncapFDB
			switch {
			case file != "":
				data, err := os.ReadFile(file)
				if err != nil {
					return loadErr(err)
				}
				if err := decodeStrict(data, &t); err != nil {
					return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: %v", file, err)}
				}
			case len(hosts) > 0 && vni != 0 && mac == "":
				t.Segments = []api.EncapFDBSegment{{VNI: int64(vni), Hosts: hosts}}
			case mac != "" && host != "" && vni != 0:
				t.Entries = []api.EncapFDBEntry{{VNI: int64(vni), MAC: mac, Host: host, IPs: ips}}
			default:
				return &exitError{code: ExitUsage, msg: "give --vni with --mac and --host (an entry), --vni with --hosts (a segment), or --file"}
			}
			ch, err := call(ctx, a, func(ctx context.Context) (*api.EncapFDBChange, error) { return a.client.AddEncapFDB(ctx, t, ifGen) })
			if err != nil {
				return err
			}
			return a.emitFDBChange(ch)
		}),
	}
	add.Flags().Uint32Var(&vni, "vni", 0, "the `segment`")
	add.Flags().StringVar(&mac, "mac", "", "the VM's `MAC`")
	add.Flags().StringVar(&host, "host", "", "underlay `address` of the host the VM runs on")
	add.Flags().StringSliceVar(&ips, "ip", nil, "an `address` of the VM answered for by ARP/ND (repeat, or comma-separate)")
	add.Flags().StringSliceVar(&hosts, "hosts", nil, "member `hosts` of the segment (comma-separated underlay addresses)")
	add.Flags().StringVar(&file, "file", "", "a `document` with segments and/or entries to merge")

	var segment bool
	del := &cobra.Command{
		Use:   "del VNI MAC | del --segment VNI",
		Short: "Remove an entry (or, with --segment, an empty segment)",
		Long: `Del removes the entry of MAC in segment VNI: its frames become unknown
unicast (replicated to the segment's member hosts) and its addresses are no
longer answered for. With --segment it removes segment VNI, which must have
no entries left and no vNIC of this host in it. Exit 4 if there is no such
entry or segment.`,
		Example: "  vfctl encap fdb del 100 02:00:00:00:00:01\n  vfctl encap fdb del --segment 300",
		Args: func(cmd *cobra.Command, got []string) error {
			if segment {
				return args("VNI")(cmd, got)
			}
			return args("VNI", "MAC")(cmd, got)
		},
		RunE: a.runE(func(ctx context.Context, args []string) error {
			n, err := strconv.ParseUint(args[0], 10, 32)
			if err != nil {
				return &exitError{code: ExitBadInput, msg: fmt.Sprintf("VNI %q is not a number", args[0])}
			}
			ch, err := call(ctx, a, func(ctx context.Context) (*api.EncapFDBChange, error) {
				if segment {
					return a.client.DeleteEncapFDBSegment(ctx, uint32(n), ifGen)
				}
				return a.client.DeleteEncapFDBEntry(ctx, uint32(n), args[1], ifGen)
			})
			if err != nil {
				return err
			}
			return a.emitFDBChange(ch)
		}),
	}
	del.Flags().BoolVar(&segment, "segment", false, "remove the segment VNI instead of an entry")
	drop := &cobra.Command{
		Use:   "drop",
		Short: "Forget the pushed table: instances go back to their fib files",
		Long: `Drop forgets the table pushed to filterd and removes its saved copy
(encap-fdb.json in the state directory): every encap instance of the host
reads the file its fib parameter names again, at once. The files are read
and checked for every instance first; if one has no fib parameter or its
file does not compile, the drop is refused (exit 5) and nothing changes.
The next push starts again at generation 1.`,
		Example: "  vfctl encap fdb drop",
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			ch, err := call(ctx, a, func(ctx context.Context) (*api.EncapFDBChange, error) { return a.client.DropEncapFDB(ctx, ifGen) })
			if err != nil {
				return err
			}
			return a.emitFDBChange(ch)
		}),
	}
	c.AddCommand(show, set, add, del, drop)
	return c
}

func (a *app) emitFDBChange(ch *api.EncapFDBChange) error {
	return a.emit(ch, func(w io.Writer) error {
		if ch.Generation == 0 {
			fmt.Fprintf(w, "pushed table dropped; %d encap instance(s) back on their files in %.1f ms\n", len(ch.Updated), ch.Seconds*1000)
		} else {
			fmt.Fprintf(w, "generation %d; %d encap instance(s) updated in %.1f ms\n", ch.Generation, len(ch.Updated), ch.Seconds*1000)
		}
		for _, u := range ch.Updated {
			fmt.Fprintf(w, "  %s\n", u)
		}
		return nil
	})
}

func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
