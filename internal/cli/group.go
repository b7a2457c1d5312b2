package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

func (a *app) groupCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "group",
		Short: "Host address groups that policies name (list, show, set, delete)",
		Long: `Host address groups are named sets of addresses kept by filterd, which
filters' configurations name instead of listing addresses: a firewall rule
with "src_groups": ["tag:web"] allows whatever addresses the group holds
now, and follows it as VMs come and go.

Two kinds:
  tag:<tag>  dynamic: the addresses of every vNIC labelled with the tag
             (vfctl label), plus members pushed for the same name (the
             control plane's view of other hosts).
  <name>     pushed: members set with vfctl group set (or the API).

Every change reloads the filters using the group; each swaps the new
membership in atomically, as a policy update (established flows still
allowed keep going, others are cut).`,
		Example: `  vfctl group list
  vfctl group set admins 10.0.99.0/24 fd00:99::/64
  vfctl group show tag:web
  vfctl group delete admins`,
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the host's groups with their members and users",
		Long:    "List prints every pushed group and every tag group in use, with the addresses filters resolve it to now and the filter instances using it.",
		Example: "  vfctl group list\n  vfctl -o json group list",
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			gs, err := call(ctx, a, func(ctx context.Context) ([]api.Group, error) { return a.client.Groups(ctx) })
			if err != nil {
				return err
			}
			return a.emit(gs, func(w io.Writer) error {
				tw := table(w)
				row(tw, "GROUP", "MEMBERS", "VNICS", "USED BY")
				for _, g := range gs {
					row(tw, g.Name, dash(strings.Join(g.Members, ",")), dash(strings.Join(g.VNICs, ",")), dash(strings.Join(g.UsedBy, ", ")))
				}
				return tw.Flush()
			})
		}),
	}
	show := &cobra.Command{
		Use:     "show GROUP",
		Short:   "Show one group",
		Long:    "Show prints a group's members now, the members pushed for it, the tagged vNICs (tag groups) and the filters using it.",
		Example: "  vfctl group show tag:web",
		Args:    args("GROUP"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			g, err := call(ctx, a, func(ctx context.Context) (*api.Group, error) { return a.client.Group(ctx, args[0]) })
			if err != nil {
				return err
			}
			return a.emit(g, func(w io.Writer) error {
				fmt.Fprintf(w, "group:   %s\nmembers: %s\npushed:  %s\nvnics:   %s\nused by: %s\n", g.Name,
					dash(strings.Join(g.Members, ", ")), dash(strings.Join(g.Pushed, ", ")), dash(strings.Join(g.VNICs, ", ")), dash(strings.Join(g.UsedBy, ", ")))
				return nil
			})
		}),
	}
	set := &cobra.Command{
		Use:   "set GROUP [ADDRESS|CIDR]...",
		Short: "Set a group's pushed members (none: an empty group)",
		Long: `Set replaces the members pushed for GROUP. A bad address is refused and
nothing changes. The filters using the group reload; a filter that cannot
take the change (e.g. its compiled policy would grow past its budget) keeps
its live configuration, and the failure is printed.`,
		Example: "  vfctl group set admins 10.0.99.0/24 fd00:99::/64\n  vfctl group set tag:web 10.1.0.7   # web VMs on other hosts",
		Args:    cobra.MinimumNArgs(1),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			ch, err := call(ctx, a, func(ctx context.Context) (*api.GroupChange, error) { return a.client.SetGroup(ctx, args[0], args[1:]) })
			if err != nil {
				return err
			}
			return a.emitChange(ch)
		}),
	}
	del := &cobra.Command{
		Use:     "delete GROUP",
		Short:   "Forget a pushed group (refused while a policy uses it)",
		Long:    "Delete forgets the members pushed for GROUP. It is refused (exit 5) while a filter's configuration names the group, unless it is a tag group, which stays defined by its tag.",
		Example: "  vfctl group delete admins",
		Args:    args("GROUP"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			ch, err := call(ctx, a, func(ctx context.Context) (*api.GroupChange, error) { return a.client.DeleteGroup(ctx, args[0]) })
			if err != nil {
				return err
			}
			return a.emitChange(ch)
		}),
	}
	c.AddCommand(list, show, set, del)
	return c
}

func (a *app) labelCommand() *cobra.Command {
	var tags, addrs []string
	var mac string
	c := &cobra.Command{
		Use:   "label VNIC [--tag TAG]... [--address ADDR]... [--mac MAC]",
		Short: "Set the tags, addresses and guest MAC of a vNIC's VM (tag groups)",
		Long: `Label sets the tags and addresses of the VM behind VNIC, replacing what was
set before (no --tag and no --address: the VM leaves every tag group). The
VM's addresses are then members of the group tag:<tag> of each of its tags,
and the filters using those groups reload. A vNIC does not need a chain to
be labelled; detaching its chain removes its labels.

--mac records the guest MAC of the VM's interface on VNIC (the domain XML's
<mac address=...>, not the tap's own address), which the management service
uses to place the VM in overlay segments. It must be a 6-byte unicast
Ethernet address (any case and separator; stored lower case with colons);
a multicast or all-zero address is refused (exit 5) and nothing changes.
Without --mac the recorded MAC stays as it is. The libvirt hook records it
itself when a domain starts.

vfctl labels lists what every vNIC is labelled with.`,
		Example: `  vfctl label vnet3 --tag web --address 10.0.1.5 --address fd00:1::5
  vfctl label vnet3 --tag web --address 10.0.1.5 --mac 52:54:00:6b:3c:01
  vfctl label vnet3        # untag (the MAC stays)`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			ch, err := call(ctx, a, func(ctx context.Context) (*api.GroupChange, error) {
				return a.client.SetLabels(ctx, args[0], api.Labels{Tags: tags, Addresses: addrs, MAC: mac})
			})
			if err != nil {
				return err
			}
			return a.emitChange(ch)
		}),
	}
	c.Flags().StringSliceVar(&tags, "tag", nil, "a `tag` of the VM (repeat, or comma-separate)")
	c.Flags().StringSliceVar(&addrs, "address", nil, "an `address` or CIDR of the VM (repeat, or comma-separate)")
	c.Flags().StringVar(&mac, "mac", "", "the guest `MAC` of the VM's interface on VNIC (e.g. 52:54:00:6b:3c:01)")
	return c
}

func (a *app) labelsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "labels",
		Short: "List every vNIC's labels: owner, tags, addresses, guest MAC",
		Long: `Labels lists every vNIC filterd knows (it has a chain, labels, or both)
with the owner of its chain, its tags, its addresses and the guest MAC of
its VM's interface (set by the libvirt hook or vfctl label --mac): what the
host agent reports to the management service as the host's inventory.
A dash is an empty column; CHAIN says whether the vNIC has a chain.`,
		Example: "  vfctl labels\n  vfctl -o json labels",
		Args:    args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			ls, err := call(ctx, a, func(ctx context.Context) ([]api.VNICLabels, error) { return a.client.Labels(ctx) })
			if err != nil {
				return err
			}
			return a.emit(ls, func(w io.Writer) error {
				tw := table(w)
				row(tw, "VNIC", "CHAIN", "OWNER", "TAGS", "ADDRESSES", "MAC")
				for _, l := range ls {
					chain := "no"
					if l.Chain {
						chain = "yes"
					}
					row(tw, l.VNIC, chain, dash(l.Owner), dash(strings.Join(l.Tags, ",")), dash(strings.Join(l.Addresses, ",")), dash(l.MAC))
				}
				return tw.Flush()
			})
		}),
	}
}

func (a *app) emitChange(ch *api.GroupChange) error {
	return a.emit(ch, func(w io.Writer) error {
		if len(ch.Groups) == 0 {
			fmt.Fprintln(w, "no group membership changed")
			return nil
		}
		fmt.Fprintf(w, "changed %s; %d filter(s) reloaded\n", strings.Join(ch.Groups, ", "), len(ch.Reloaded))
		failed := 0
		for _, r := range ch.Reloaded {
			if r.Error != "" {
				failed++
				fmt.Fprintf(w, "  %s slot %d (%s): kept its live configuration: %s\n", r.VNIC, r.Slot, r.Filter, r.Error)
			}
		}
		if failed > 0 {
			return &exitError{code: ExitFailure, msg: fmt.Sprintf("%d filter(s) did not take the change", failed)}
		}
		return nil
	})
}
