package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// slotFlag is an optional slot number: unset means "let filterd choose".
type slotFlag struct{ slot *int }

func (f *slotFlag) String() string {
	if f.slot == nil {
		return ""
	}
	return strconv.Itoa(*f.slot)
}

func (f *slotFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= sdk.MaxSlots {
		return fmt.Errorf("want a slot number 0..%d", sdk.MaxSlots-1)
	}
	f.slot = &n
	return nil
}

func (f *slotFlag) Type() string { return "N" }

func (a *app) attachCommand() *cobra.Command {
	var (
		slot      slotFlag
		params    []string
		failMode  string
		direction string
	)
	cmd := &cobra.Command{
		Use:   "attach VNIC FILTER",
		Short: "Add one filter to a vNIC's chain",
		Long: `Attach adds one instance of FILTER to the chain of VNIC, the host side of
a VM's tap device. If VNIC has no chain yet, filterd creates it and attaches
its dispatchers to the device; from then on every frame of the vNIC runs
through the chain.

Without --slot the filter takes the slot after the last used one; --slot N
puts it in slot N, which must be free and leave no gap. --param sets one of
the filter's parameters (repeat it; 'vfctl filters' lists them). --failmode
overrides what the filter does when it cannot decide: closed drops the
frame, open lets it pass. --direction restricts the instance to frames the
VM sends (from-vm) or receives (to-vm).

Nothing changes if the attach fails. Prints the resulting chain.`,
		Example: `  vfctl attach vnet3 count
  vfctl attach vnet3 dnslog --param rate=5 --failmode open
  vfctl attach vnet3 punt --slot 0 --direction from-vm --param verdict=drop`,
		Args: args("VNIC", "FILTER"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			req := api.AttachRequest{Slot: slot.slot, Filter: api.FilterSpec{Name: args[1]}}
			var err error
			if req.Filter.Params, err = parseParams(params); err != nil {
				return err
			}
			if req.Filter.FailMode, err = parseFailMode(failMode); err != nil {
				return usagef("--failmode %q: want closed or open", failMode)
			}
			if req.Filter.Directions, err = parseDirection(direction); err != nil {
				return usagef("--direction %q: want from-vm, to-vm or both", direction)
			}
			v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) {
				return a.client.Attach(ctx, args[0], req)
			})
			if err != nil {
				return err
			}
			return a.emit(v, func(w io.Writer) error { return printChain(w, v) })
		}),
	}
	f := cmd.Flags()
	f.Var(&slot, "slot", fmt.Sprintf("put the filter in slot `N` (0..%d); default: after the last used slot", sdk.MaxSlots-1))
	f.StringArrayVar(&params, "param", nil, "set a filter parameter, `KEY=VALUE` (repeatable)")
	f.StringVar(&failMode, "failmode", "", "when the filter cannot decide: closed (drop) or open (pass); default: the filter's")
	f.StringVar(&direction, "direction", "", "directions to filter: from-vm, to-vm or both; default: the filter's")
	return cmd
}

func (a *app) chainCommand() *cobra.Command {
	chain := &cobra.Command{
		Use:   "chain",
		Short: "Set a vNIC's whole chain at once",
		Long: `Commands on a vNIC's chain as a whole. See 'vfctl chain set --help'.
To remove a chain use 'vfctl detach VNIC'.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var owner string
	var replace bool
	set := &cobra.Command{
		Use:   "set VNIC FILTER[:KEY=VALUE,...]...",
		Short: "Create a vNIC's chain with all its filters",
		Long: `Set creates the chain of VNIC with one filter per argument, in slot order
(the first argument is slot 0). filterd loads every filter first and
attaches the chain to the device only when all of them loaded, so the vNIC
is never half protected. It fails if VNIC has a chain already, unless
--replace is given: then the new chain is built beside the running one and
swapped in atomically — every frame meets the old chain or the new one,
never a mix and never none — and a filter kept in the same slot with the
same parameters keeps its state (connection table, counters).

Each FILTER argument is

  FILTER[:KEY=VALUE[,KEY=VALUE]...]

where KEY=VALUE sets one of the filter's parameters ('vfctl filters' lists
them), except two reserved keys that configure the instance:

  failmode=closed|open       what to do when the filter cannot decide
                             (closed drops the frame, open passes it)
  dir=from-vm|to-vm|both     which directions the instance filters

A backslash makes the next character literal, so a value may hold a comma
("\,") or a backslash ("\\"); quote the argument for the shell.

--owner records who asked (free text, shown by 'vfctl list'); the libvirt
hook uses "libvirt:DOMAIN".

Prints the resulting chain.`,
		Example: `  vfctl chain set vnet3 count
  vfctl chain set vnet3 count dnslog:rate=5,log=false,failmode=open
  vfctl chain set vnet3 count:dir=to-vm punt:verdict=drop,dir=from-vm --owner ops:alice
  vfctl chain set vnet3 'FILTER:KEY=a\,b'      # the value is "a,b"
  vfctl chain set vnet3 count firewall:policy=/etc/vnicfilter/web.json --replace`,
		Args: args("VNIC", "FILTER..."),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			req := api.ChainRequest{Owner: owner, Replace: replace}
			for _, s := range args[1:] {
				spec, err := parseFilterSpec(s)
				if err != nil {
					return err
				}
				req.Filters = append(req.Filters, spec)
			}
			if len(req.Filters) > sdk.MaxSlots {
				return usagef("%d filters: a chain holds at most %d", len(req.Filters), sdk.MaxSlots)
			}
			v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) {
				return a.client.SetChain(ctx, args[0], req)
			})
			if err != nil {
				return err
			}
			return a.emit(v, func(w io.Writer) error { return printChain(w, v) })
		}),
	}
	set.Flags().StringVar(&owner, "owner", "", "record who asked for this chain (free `text`, e.g. libvirt:web01)")
	set.Flags().BoolVar(&replace, "replace", false, "swap an existing chain for this one atomically")
	chain.AddCommand(set)
	return chain
}

func (a *app) detachCommand() *cobra.Command {
	var slot slotFlag
	cmd := &cobra.Command{
		Use:   "detach VNIC",
		Short: "Remove a vNIC's chain, or one filter of it",
		Long: `Detach removes the whole chain of VNIC: its dispatchers are detached from
the device first, then its filters are unloaded. The vNIC is unprotected
afterwards: its frames pass unfiltered.

With --slot N only the filter in slot N is removed; the slot becomes a
pass-through and the filters after it keep running. The rest of the chain
is printed (with -o json: the VNIC object).

Without --slot, nothing is printed on success (also with -o json); the exit
code tells.`,
		Example: `  vfctl detach vnet3            # whole chain
  vfctl detach vnet3 --slot 1   # only the filter in slot 1`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			vnic := args[0]
			if slot.slot == nil {
				_, err := call(ctx, a, func(ctx context.Context) (struct{}, error) {
					return struct{}{}, a.client.Detach(ctx, vnic)
				})
				if err != nil {
					return err
				}
				if a.output == "text" {
					fmt.Fprintf(a.stdout, "detached the chain of %s; its frames now pass unfiltered\n", vnic)
				}
				return nil
			}
			_, err := call(ctx, a, func(ctx context.Context) (struct{}, error) {
				return struct{}{}, a.client.DetachSlot(ctx, vnic, *slot.slot)
			})
			if err != nil {
				return err
			}
			v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) {
				return a.client.VNIC(ctx, vnic)
			})
			if err != nil {
				return fmt.Errorf("slot %d of %s detached, but reading the chain back failed: %w", *slot.slot, vnic, err)
			}
			return a.emit(v, func(w io.Writer) error {
				fmt.Fprintf(w, "detached slot %d of %s\n", *slot.slot, vnic)
				return printChain(w, v)
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", fmt.Sprintf("remove only the filter in slot `N` (0..%d)", sdk.MaxSlots-1))
	return cmd
}
