package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/firewall"
)

// chainOf reads vnic's chain; a vNIC without one is ExitNotFound.
func (a *app) chainOf(ctx context.Context, vnic string) (*api.VNIC, error) {
	v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) { return a.client.VNIC(ctx, vnic) })
	if api.IsCode(err, api.CodeNotAttached) || api.IsCode(err, api.CodeNoSuchDevice) {
		return nil, &exitError{code: ExitNotFound, msg: fmt.Sprintf("%s is not a protected vNIC", vnic)}
	}
	return v, err
}

// filterSlots lists v's instances of filter, only the one in slot when
// given.
func filterSlots(v *api.VNIC, filter string, slot *int) []api.Slot {
	var out []api.Slot
	for _, s := range v.Slots {
		if s.Filter == filter && (slot == nil || *slot == s.Slot) {
			out = append(out, s)
		}
	}
	return out
}

// ambiguous is the usage error of a chain with several instances of
// filter and no --slot to pick one.
func ambiguous(v *api.VNIC, what string, found []api.Slot) error {
	var ns []string
	for _, s := range found {
		ns = append(ns, strconv.Itoa(s.Slot))
	}
	return &exitError{code: ExitUsage, msg: fmt.Sprintf("%s has %s in slots %s", v.Name, what, strings.Join(ns, ", ")), hint: "pick one with --slot N"}
}

// firewallSlot returns the slot of vnic's chain the firewall is in (the
// one asked for with --slot, else the first), and its parameters.
func (a *app) firewallSlot(ctx context.Context, vnic string, want slotFlag) (api.Slot, error) {
	v, err := a.chainOf(ctx, vnic)
	if err != nil {
		return api.Slot{}, err
	}
	if found := filterSlots(v, firewall.Name, want.slot); len(found) > 0 {
		return found[0], nil
	}
	if want.slot != nil {
		return api.Slot{}, &exitError{code: ExitNotFound, msg: fmt.Sprintf("slot %d of %s holds no firewall", *want.slot, vnic)}
	}
	return api.Slot{}, &exitError{code: ExitNotFound, msg: fmt.Sprintf("%s has no firewall in its chain", vnic)}
}

// inspectFirewall asks the firewall on vnic for a view and decodes it
// into out.
func (a *app) inspectFirewall(ctx context.Context, vnic string, slot slotFlag, query map[string]string, out any) (api.Slot, error) {
	s, err := a.firewallSlot(ctx, vnic, slot)
	if err != nil {
		return s, err
	}
	_, err = a.inspect(ctx, vnic, s.Slot, query, out)
	return s, err
}

// inspect asks the filter in slot of vnic's chain for its live state
// (GET …/inspect) and decodes the state into out; the result returned
// carries no state of its own.
func (a *app) inspect(ctx context.Context, vnic string, slot int, query map[string]string, out any) (*api.InspectResult, error) {
	var raw json.RawMessage
	res, err := call(ctx, a, func(ctx context.Context) (*api.InspectResult, error) {
		r, state, err := a.client.Inspect(ctx, vnic, slot, query)
		raw = state
		return r, err
	})
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return nil, fmt.Errorf("decode the %s state of %s slot %d: %w", res.Filter, vnic, slot, err)
	}
	res.State = nil
	return res, nil
}

func (a *app) fwConnsCommand() *cobra.Command {
	var slot slotFlag
	var limit int
	cmd := &cobra.Command{
		Use:   "conns VNIC",
		Short: "List the flows the firewall on a vNIC tracks",
		Long: `Conns lists the live entries of the connection table of the firewall in
VNIC's chain, most recently active first: protocol, the VM's side and the
remote side (address:port; for ICMP echo, the identifier), the direction
that opened the flow, its state, age (since its first packet), idle time
(since its last), packets and bytes both ways (approximate), and the rule
that allowed it ("-" for the direction's default).

The header says how many flows are live, how many expired entries wait for
the sweep, and the table's size (conntrack_size). With -o json the answer
is the filter's view=conns state (docs/firewall.md, "Inspect").`,
		Example: `  vfctl fw conns vnet3
  vfctl fw conns vnet3 --limit 1000 -o json`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			if limit < 1 || limit > firewall.MaxInspectLimit {
				return &exitError{code: ExitUsage, msg: fmt.Sprintf("--limit %d: want 1..%d", limit, firewall.MaxInspectLimit)}
			}
			var v firewall.ConnsView
			s, err := a.inspectFirewall(ctx, args[0], slot, map[string]string{"view": firewall.ViewConns, "limit": strconv.Itoa(limit)}, &v)
			if err != nil {
				return err
			}
			return a.emit(v, func(w io.Writer) error {
				more := ""
				if v.Truncated {
					more = fmt.Sprintf("; showing the %d most recently active (--limit)", len(v.Conns))
				}
				fmt.Fprintf(w, "%s slot %d: %d flows, %d expired awaiting the sweep, table size %d%s\n", args[0], s.Slot, v.Flows, v.Expired, v.Capacity, more)
				return printConns(w, v.Conns)
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", "the firewall in slot `N` (default: the first firewall of the chain)")
	cmd.Flags().IntVar(&limit, "limit", firewall.DefaultConnsLimit, "list at most `N` flows")
	return cmd
}

func (a *app) fwTopCommand() *cobra.Command {
	var slot slotFlag
	var limit int
	var by string
	cmd := &cobra.Command{
		Use:   "top VNIC",
		Short: "Show the busiest flows or the most hit rules of a vNIC's firewall",
		Long: `Top shows, for the firewall in VNIC's chain, the live flows with the most
bytes (--by bytes, the default) or packets (--by packets) since they
opened, or the rules with the most hits (--by rules: new flows and denied
packets each rule decided since the policy was loaded).

A snapshot, not a live display: run it under watch(1) to follow it.
With -o json the answer is the filter's view=top state.`,
		Example: `  vfctl fw top vnet3
  vfctl fw top vnet3 --by rules --limit 20
  watch -n1 vfctl fw top vnet3 --by packets`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			if limit < 1 || limit > firewall.MaxInspectLimit {
				return &exitError{code: ExitUsage, msg: fmt.Sprintf("--limit %d: want 1..%d", limit, firewall.MaxInspectLimit)}
			}
			switch by {
			case "bytes", "packets", "rules":
			default:
				return &exitError{code: ExitUsage, msg: fmt.Sprintf("--by %q: want bytes, packets or rules", by)}
			}
			var v firewall.TopView
			s, err := a.inspectFirewall(ctx, args[0], slot, map[string]string{"view": firewall.ViewTop, "by": by, "limit": strconv.Itoa(limit)}, &v)
			if err != nil {
				return err
			}
			return a.emit(v, func(w io.Writer) error {
				if by == "rules" {
					fmt.Fprintf(w, "%s slot %d: rules by hits\n", args[0], s.Slot)
					tw := table(w)
					row(tw, "RULE", "INDEX", "ACTION", "HITS")
					for _, r := range v.Rules {
						row(tw, r.Name, r.Index, r.Action, r.Hits)
					}
					return tw.Flush()
				}
				fmt.Fprintf(w, "%s slot %d: top %d of %d flows by %s\n", args[0], s.Slot, len(v.Conns), v.Flows, by)
				return printConns(w, v.Conns)
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", "the firewall in slot `N` (default: the first firewall of the chain)")
	cmd.Flags().IntVar(&limit, "limit", firewall.DefaultTopLimit, "show at most `N` flows or rules")
	cmd.Flags().StringVar(&by, "by", "bytes", "rank by `KEY`: bytes or packets (flows), or rules (hits)")
	return cmd
}

func printConns(w io.Writer, conns []firewall.Conn) error {
	tw := table(w)
	row(tw, "PROTO", "VM", "REMOTE", "DIR", "STATE", "AGE", "IDLE", "PACKETS", "BYTES", "RULE")
	for _, c := range conns {
		rule := "-"
		if c.RuleIndex != nil {
			rule = dash(c.Rule)
		}
		row(tw, c.Proto, endpoint(c.VM, c.VMPort, c.Proto), endpoint(c.Remote, c.RemotePort, c.Proto), c.Dir, c.State,
			seconds(c.AgeSeconds), seconds(c.IdleSeconds), humanCount(float64(c.Packets)), humanBytes(float64(c.Bytes)), rule)
	}
	return tw.Flush()
}

// endpoint prints addr:port ([v6]:port); ICMP flows show the echo
// identifier as id=N on the VM's side; other protocols have no port.
func endpoint(addr string, port uint16, proto string) string {
	switch proto {
	case "tcp", "udp":
		if a, err := netip.ParseAddr(addr); err == nil {
			return netip.AddrPortFrom(a, port).String()
		}
	case "icmp", "icmpv6":
		if port != 0 {
			return fmt.Sprintf("%s id=%d", addr, port)
		}
	}
	return addr
}

func seconds(s float64) string {
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

// runningPolicy asks the firewall on vnic for the policy it runs
// (view=policy with its source) and parses that source. ok is false when
// the daemon or filter cannot say (an older filterd: 501), so the caller
// falls back to the file the firewall was attached with.
func (a *app) runningPolicy(ctx context.Context, vnic string) (p *firewall.Policy, v *firewall.PolicyView, s api.Slot, ok bool, err error) {
	v = &firewall.PolicyView{}
	s, err = a.inspectFirewall(ctx, vnic, slotFlag{}, map[string]string{"view": firewall.ViewPolicy, "source": "true"}, v)
	if api.IsCode(err, api.CodeNotSupported) {
		return nil, nil, s, false, nil
	}
	if err != nil {
		return nil, nil, s, false, err
	}
	if v.Source == "" {
		return nil, v, s, false, nil
	}
	p, err = firewall.ParsePolicy([]byte(v.Source), firewall.ParseOptions{File: v.File})
	if err != nil {
		return nil, nil, s, false, fmt.Errorf("the policy running on %s does not parse here (vfctl older than filterd?): %w", vnic, err)
	}
	return p, v, s, true, nil
}

// fileChanged reports whether path's bytes differ from the digest of the
// running policy (false when unreadable).
func fileChanged(path, digest string) bool {
	b, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]) != digest
}
