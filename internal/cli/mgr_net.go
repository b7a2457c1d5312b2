package cli

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	mapi "github.com/vnicfilter/vnicfilter/manager/api"
)

// vfctl mgr segment(s) and encryption(s): the manager's network objects
// (docs/manager.md). The manager turns them into encap and encrypt slots
// and host documents; these commands only edit the objects.

func (m *mgrApp) segmentsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "segments",
		Short: "List overlay segments",
		Long: `List the overlay segments: each puts the vNICs of a group's VMs in a
VXLAN segment (VNI) that spans hosts (filters/encap, docs/encap.md).
Change them with vfctl mgr segment set|delete.`,
		Example: `  vfctl mgr segments
  vfctl mgr segments -o json`,
		Args: args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listSegments(ctx, c) }),
	}
}

func (m *mgrApp) listSegments(ctx context.Context, c *mapi.Client) error {
	ss, err := c.Segments(ctx)
	if err != nil {
		return err
	}
	return m.a.emit(ss, func(w io.Writer) error {
		tw := table(w)
		row(tw, "SEGMENT", "VNI", "GROUP", "GBP", "UNDERLAY-MTU", "REVISION", "DESCRIPTION")
		for _, s := range ss {
			row(tw, s.Name, s.VNI, s.Group, gbpText(s.GBP), mtuText(s.UnderlayMTU), s.Revision, dash(s.Description))
		}
		return tw.Flush()
	})
}

func gbpText(gbp int) string {
	if gbp == 0 {
		return "-"
	}
	return strconv.Itoa(gbp)
}

func mtuText(mtu int) string {
	if mtu == 0 {
		return "1500 (default)"
	}
	return strconv.Itoa(mtu)
}

func (m *mgrApp) segmentCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "segment",
		Short: "Set, show and delete an overlay segment",
		Long: `A segment places the vNICs of a group's VMs in an overlay segment: their
frames travel VXLAN-encapsulated between hosts with the segment's VNI
(1-16777215, unique among segments) and reach only vNICs of the same
segment (filters/encap, docs/encap.md). The manager gives each member
vNIC an encap slot and each host the forwarding table of its segments
(which host every member MAC is on, from the hosts' inventories and
their underlay addresses).

A segment names a group: the group cannot be deleted while the segment
exists.`,
		Example: `  vfctl mgr segment set blue --vni 100 --group web
  vfctl mgr segment get blue
  vfctl mgr segments`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var s mapi.Segment
	set := &cobra.Command{
		Use:   "set NAME --vni N --group GROUP",
		Short: "Create or replace a segment",
		Long: `Create segment NAME, or replace it whole, from the flags. --vni and --group
are required; --gbp is the VXLAN-GBP group policy id the members' frames
carry (the sender's identity on the wire, 0-65535; 0: none);
--underlay-mtu is the underlay's MTU (576-65535; default 1500): larger
encapsulated frames are dropped and counted.

The manager refuses (exit 5, nothing stored) a VNI out of range or
already another segment's, an unknown group, a GBP or MTU out of range.`,
		Example: `  vfctl mgr groups set web --selector tier=web
  vfctl mgr segment set blue --vni 100 --group web
  vfctl mgr segment set blue --vni 100 --group web --gbp 10 --underlay-mtu 9000 \
      --description "web tier overlay"`,
		Args: args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			s.Name = args[0]
			out, err := c.PutSegment(ctx, s)
			if err != nil {
				return err
			}
			return m.a.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "segment %s: vni %d, group %s (revision %d)\n", out.Name, out.VNI, out.Group, out.Revision)
				return err
			})
		}),
	}
	set.Flags().Int64Var(&s.VNI, "vni", 0, "segment id `N`, 1-16777215, unique among segments (required)")
	set.Flags().StringVar(&s.Group, "group", "", "the `group` whose VMs are the members (required)")
	set.Flags().IntVar(&s.GBP, "gbp", 0, "VXLAN-GBP group policy `id` of the members' frames, 0-65535 (0: none)")
	set.Flags().IntVar(&s.UnderlayMTU, "underlay-mtu", 0, "underlay `MTU`, 576-65535 (default 1500)")
	set.Flags().StringVar(&s.Description, "description", "", "free `text`")
	_ = set.MarkFlagRequired("vni")
	_ = set.MarkFlagRequired("group")
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show a segment",
		Long: `Print a segment: its VNI, group, GBP id, underlay MTU and revision. The
members are the group's: vfctl mgr groups get GROUP lists them.`,
		Example: `  vfctl mgr segment get blue
  vfctl mgr segment get blue -o json`,
		Args: args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			s, err := c.Segment(ctx, args[0])
			if err != nil {
				return err
			}
			return m.a.emit(s, func(w io.Writer) error {
				fmt.Fprintf(w, "segment %s: vni %d, group %s, gbp %s, underlay mtu %s\n", s.Name, s.VNI, s.Group, gbpText(s.GBP), mtuText(s.UnderlayMTU))
				if s.Description != "" {
					fmt.Fprintf(w, "description: %s\n", s.Description)
				}
				_, err := fmt.Fprintf(w, "revision: %d\n", s.Revision)
				return err
			})
		}),
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a segment",
		Long: `Delete a segment: its members lose their encap slot and the hosts their
forwarding entries, at once.`,
		Example: `  vfctl mgr segment delete blue`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			return c.DeleteSegment(ctx, args[0])
		}),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List segments (as vfctl mgr segments)",
		Long:    `List segments with their VNI, group, GBP id and underlay MTU.`,
		Example: `  vfctl mgr segment list`,
		Args:    args(),
		RunE:    m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listSegments(ctx, c) }),
	}
	cmd.AddCommand(list, get, set, del)
	return cmd
}

func (m *mgrApp) encryptionsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "encryptions",
		Short: "List encryptions",
		Long: `List the encryptions: each says that traffic between the VMs of two groups
is encrypted when it crosses hosts (filters/encrypt, docs/encrypt.md).
Change them with vfctl mgr encryption set|delete.`,
		Example: `  vfctl mgr encryptions
  vfctl mgr encryptions -o json`,
		Args: args(),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listEncryptions(ctx, c) }),
	}
}

func (m *mgrApp) listEncryptions(ctx context.Context, c *mapi.Client) error {
	es, err := c.Encryptions(ctx)
	if err != nil {
		return err
	}
	return m.a.emit(es, func(w io.Writer) error {
		tw := table(w)
		row(tw, "ENCRYPTION", "BETWEEN", "REVISION", "DESCRIPTION")
		for _, e := range es {
			row(tw, e.Name, e.From+" <-> "+e.To, e.Revision, dash(e.Description))
		}
		return tw.Flush()
	})
}

func (m *mgrApp) encryptionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "encryption",
		Short: "Set, show and delete an encryption between two groups",
		Long: `An encryption protects the traffic between the VMs of two groups when it
crosses hosts, in both directions: "pci <-> pci" (the group with itself)
or "web <-> db". The manager gives the members' vNICs an encrypt slot and
each host its WireGuard peers (the other hosts' public keys and endpoints
from their inventories) and encryption policy (filters/encrypt,
docs/encrypt.md). Traffic an encryption protects is never sent in clear:
without a tunnel to the peer host it is dropped and counted.

An encryption names two groups: neither can be deleted while it exists.`,
		Example: `  vfctl mgr encryption set pci --from pci --to pci
  vfctl mgr encryption set web-db --from web --to db
  vfctl mgr encryptions`,
		Args: args(),
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	var e mapi.Encryption
	set := &cobra.Command{
		Use:   "set NAME --from GROUP --to GROUP",
		Short: "Create or replace an encryption",
		Long: `Create encryption NAME, or replace it whole: the traffic between the VMs
of --from and those of --to (both required; they may be the same group)
is encrypted when it crosses hosts. The direction does not matter: both
ways are protected. The manager refuses an unknown group or a malformed
space (exit 5, nothing stored).

--space (repeatable, or comma-separated) names prefixes where the members'
addresses live. Without it only the addresses of members the manager
knows are protected: a VM of a deleted (revoked) host is no longer a
known member, and traffic to it would leave in clear. With it, a member's
traffic to any address of the space is protected, and dropped (counted as
no_peer) when no host carries the address: revoked hosts, VMs not
reported yet, and non-members inside the space.`,
		Example: `  vfctl mgr encryption set pci --from pci --to pci --space 10.99.0.0/16 --description "cardholder data"
  vfctl mgr encryption set web-db --from web --to db`,
		Args: args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			e.Name = args[0]
			out, err := c.PutEncryption(ctx, e)
			if err != nil {
				return err
			}
			return m.a.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "encryption %s: %s <-> %s (revision %d)\n", out.Name, out.From, out.To, out.Revision)
				return err
			})
		}),
	}
	set.Flags().StringVar(&e.From, "from", "", "one `group` (required)")
	set.Flags().StringVar(&e.To, "to", "", "the other `group`; may be the same (required)")
	set.Flags().StringVar(&e.Description, "description", "", "free `text`")
	set.Flags().StringSliceVar(&e.Space, "space", nil, "a `prefix` the members' addresses live in: never sent to in clear (repeatable)")
	_ = set.MarkFlagRequired("from")
	_ = set.MarkFlagRequired("to")
	get := &cobra.Command{
		Use:   "get NAME",
		Short: "Show an encryption",
		Long:  `Print an encryption: its two groups and its revision.`,
		Example: `  vfctl mgr encryption get pci
  vfctl mgr encryption get pci -o json`,
		Args: args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			e, err := c.Encryption(ctx, args[0])
			if err != nil {
				return err
			}
			return m.a.emit(e, func(w io.Writer) error {
				fmt.Fprintf(w, "encryption %s: %s <-> %s\n", e.Name, e.From, e.To)
				if len(e.Space) > 0 {
					fmt.Fprintf(w, "space: %s\n", strings.Join(e.Space, ", "))
				}
				if e.Description != "" {
					fmt.Fprintf(w, "description: %s\n", e.Description)
				}
				_, err := fmt.Fprintf(w, "revision: %d\n", e.Revision)
				return err
			})
		}),
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an encryption",
		Long: `Delete an encryption: traffic between its groups is no longer encrypted
(unless another encryption covers it) once the hosts apply their new
desired state.`,
		Example: `  vfctl mgr encryption delete web-db`,
		Args:    args("NAME"),
		RunE: m.run(func(ctx context.Context, c *mapi.Client, args []string) error {
			return c.DeleteEncryption(ctx, args[0])
		}),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List encryptions (as vfctl mgr encryptions)",
		Long:    `List encryptions with their two groups.`,
		Example: `  vfctl mgr encryption list`,
		Args:    args(),
		RunE:    m.run(func(ctx context.Context, c *mapi.Client, _ []string) error { return m.listEncryptions(ctx, c) }),
	}
	cmd.AddCommand(list, get, set, del)
	return cmd
}

// emitDocStatus prints the host documents' lines of vfctl mgr status.
func emitDocStatus(w io.Writer, docs []mapi.DocStatus) error {
	if len(docs) == 0 {
		return nil
	}
	fmt.Fprintln(w)
	tw := table(w)
	row(tw, "DOCUMENT", "DESIRED", "REALIZED", "IN-SYNC", "ERROR")
	for _, d := range docs {
		desired := d.DesiredHash
		if desired == "" && d.Error == "" {
			desired = "(not managed)"
		}
		row(tw, d.Name, dash(desired), dash(d.RealizedHash), d.InSync, dash(d.Error))
	}
	return tw.Flush()
}
