package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/firewall"
	"github.com/vnicfilter/vnicfilter/sdk"
)

// fwCommand is `vfctl fw`: the firewall's policy tools. explain, check and
// diff work offline on policy files (no daemon); load asks filterd to
// re-read a running instance's policy.
func (a *app) fwCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fw",
		Short: "Firewall policies and state: explain, check, diff, load, conns, top",
		Long: `Tools for the firewall filter (docs/firewall.md).

explain, check and diff read policy files and need no daemon (explain can
also take a vNIC: it then asks filterd for the policy running there); load
makes a running firewall instance re-read its policy file and swap it in
atomically; conns and top show a running instance's connection table and
busiest flows or rules.`,
		Args:    args(),
		GroupID: "chain",
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.fwExplainCommand(), a.fwCheckCommand(), a.fwDiffCommand(), a.fwLoadCommand(), a.fwConnsCommand(), a.fwTopCommand())
	return cmd
}

func loadErr(err error) error {
	code := ExitBadInput
	if errors.Is(err, os.ErrNotExist) {
		code = ExitNotFound
	}
	return &exitError{code: code, msg: err.Error()}
}

// loadPolicyFile parses a policy file; a bad file is invalid input (exit 5)
// with the parser's file:line:col message.
func loadPolicyFile(path string) (*firewall.Policy, error) {
	p, err := firewall.LoadPolicy(path, nil)
	if err != nil {
		return nil, loadErr(err)
	}
	return p, nil
}

func (a *app) fwExplainCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "explain POLICY|VNIC PACKET...",
		Short: "Say which rule of a policy decides a packet, and why",
		Long: `Explain classifies the first packet of a flow against a policy with the
firewall's reference model and prints the deciding rule (or the default),
the conditions it matched, and earlier rules of that direction that missed
by a single condition.

The policy is a file (POLICY; no daemon needed) or, when no such file
exists, the vNIC VNIC: the firewall in its chain is asked for the policy it
runs (its generation and the file's bytes as they were loaded), so an edit
not yet loaded with 'vfctl fw load' does not change the answer (a note
says the file differs). A filterd without that view (older) is asked for
the file name instead, and the file as it is now is explained.

PACKET (one argument, or several that are joined) is

  DIR PROTO SRC[:PORT] -> DST[:PORT] [flags=syn,ack] [type=N] [code=N] [fragment]

DIR is from-vm (the VM sends) or to-vm (it receives); PROTO tcp, udp, icmp,
icmpv6 or a number; IPv6 with a port is written [fd00::1]:80; "to" may
replace "->". A TCP packet without flags is a SYN. Quote PACKET, or put it
after "--" (a bare -> is taken for a flag, and by the shell for a
redirection).`,
		Example: `  vfctl fw explain web.json "from-vm tcp 10.0.0.1:1234 -> 10.0.2.10:5432"
  vfctl fw explain vnet3 to-vm icmp 10.0.99.1 to 10.0.0.1 type=8
  vfctl fw explain -o json web.json -- to-vm udp [fd00::5]:53 -> [fd00::1]:5353`,
		Args: args("POLICY|VNIC", "PACKET..."),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			pkt, err := firewall.ParsePacket(strings.Join(args[1:], " "))
			if err != nil {
				return &exitError{code: ExitBadInput, msg: err.Error()}
			}
			path, from := args[0], ""
			var p *firewall.Policy
			if _, err := os.Stat(path); err != nil {
				if strings.ContainsAny(path, "/.") { // a file name, not a device name
					return loadErr(err)
				}
				running, v, s, ok, err := a.runningPolicy(ctx, args[0])
				if err != nil {
					return err
				}
				if ok {
					p, path = running, v.File
					from = fmt.Sprintf("running on %s slot %d, generation %d, loaded %s", args[0], s.Slot, v.Generation, v.LoadedAt.Local().Format(time.DateTime))
					if fileChanged(v.File, v.SHA256) {
						from += "; the file has changed since: not loaded yet"
					}
				} else {
					if path, err = a.livePolicyPath(ctx, args[0]); err != nil {
						return err
					}
					from = "firewall of " + args[0] + ", the file as it is now"
				}
			}
			if p == nil {
				if p, err = loadPolicyFile(path); err != nil {
					return err
				}
			}
			e := p.Explain(pkt)
			return a.emit(e, func(w io.Writer) error {
				if from != "" {
					fmt.Fprintf(w, "policy:  %s (%s)\n", path, from)
				}
				return printExplanation(w, e)
			})
		}),
	}
}

// livePolicyPath asks filterd for the policy file of vnic's firewall.
func (a *app) livePolicyPath(ctx context.Context, vnic string) (string, error) {
	v, err := call(ctx, a, func(ctx context.Context) (*api.VNIC, error) { return a.client.VNIC(ctx, vnic) })
	if err != nil {
		if api.IsCode(err, api.CodeNotAttached) || api.IsCode(err, api.CodeNoSuchDevice) {
			return "", &exitError{code: ExitNotFound, msg: fmt.Sprintf("%s is neither a policy file nor a protected vNIC", vnic)}
		}
		return "", err
	}
	for _, s := range v.Slots {
		if s.Filter == firewall.Name && s.Params["policy"] != "" {
			return s.Params["policy"], nil
		}
	}
	return "", &exitError{code: ExitNotFound, msg: fmt.Sprintf("%s has no firewall in its chain", vnic)}
}

func printExplanation(w io.Writer, e *firewall.Explanation) error {
	fmt.Fprintf(w, "packet:  %s\n", e.Packet)
	if e.Rule >= 0 {
		line := ""
		if e.RuleLine > 0 {
			line = fmt.Sprintf(", line %d", e.RuleLine)
		}
		fmt.Fprintf(w, "verdict: %s by rule %d %q%s\n", e.Verdict, e.Rule, e.RuleName, line)
	} else {
		fmt.Fprintf(w, "verdict: %s\n", e.Verdict)
	}
	fmt.Fprintln(w, "why:")
	for _, s := range e.Why {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	if len(e.Skipped) > 0 {
		fmt.Fprintln(w, "near misses before it:")
		for _, s := range e.Skipped {
			fmt.Fprintf(w, "  - %s\n", s)
		}
	}
	for _, s := range e.Notes {
		fmt.Fprintf(w, "note: %s\n", s)
	}
	return nil
}

// fwCheckReport is `vfctl fw check -o json`.
type fwCheckReport struct {
	Policy         string  `json:"policy"`
	CompileSeconds float64 `json:"compile_seconds"`
	firewall.CompileStats
}

func (a *app) fwCheckCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "check POLICY",
		Short: "Parse and compile a policy; print its size (offline)",
		Long: `Check parses POLICY and compiles it into the classification tables the
kernel would get, and prints the rule count, the compile time and the table
sizes. A bad file is reported as file:line:col: field: problem (exit 5).`,
		Example: `  vfctl fw check /etc/vnicfilter/web.json`,
		Args:    args("POLICY"),
		RunE: a.runE(func(_ context.Context, args []string) error {
			p, err := loadPolicyFile(args[0])
			if err != nil {
				return err
			}
			start := time.Now()
			c, err := firewall.Compile(p)
			took := time.Since(start)
			if err != nil {
				return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: %v", args[0], err)}
			}
			r := fwCheckReport{Policy: args[0], CompileSeconds: took.Seconds(), CompileStats: c.Stats()}
			return a.emit(r, func(w io.Writer) error {
				fmt.Fprintf(w, "%s: ok, %d rules, compiled in %v\n", args[0], r.Rules, took.Round(time.Microsecond))
				fmt.Fprintf(w, "defaults: from-vm %s, to-vm %s, non-ip %s\n", p.Defaults[sdk.FromVM], p.Defaults[sdk.ToVM], p.NonIP)
				tw := table(w)
				row(tw, "TABLE", "ENTRIES")
				row(tw, "fw_src (LPM)", r.SrcPrefixes)
				row(tw, "fw_dst (LPM)", r.DstPrefixes)
				row(tw, "fw_cross proto×p1", r.CrossProtoP1)
				row(tw, "fw_cross l4×p2", r.CrossL4)
				row(tw, "fw_cross src×dst", r.CrossAddr)
				row(tw, "fw_cross final", r.CrossFinal)
				row(tw, "fw_cross total", fmt.Sprintf("%d (limit %d)", r.CrossTotal, firewall.MaxCrossEntries))
				if err := tw.Flush(); err != nil {
					return err
				}
				cl := r.Classes
				fmt.Fprintf(w, "classes: src %d, dst %d, proto %d, p1 %d, p2 %d, proto×p1 %d, l4 %d, addr %d\n", cl[0], cl[1], cl[2], cl[3], cl[4], cl[5], cl[6], cl[7])
				return nil
			})
		}),
	}
}

func (a *app) fwDiffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff OLD NEW",
		Short: "Compare two policies rule by rule (offline)",
		Long: `Diff parses two policy files and lists the rules added, removed and changed
(matched by name, with the fields that differ; "order" when a rule moved
relative to the others) and changed defaults.`,
		Example: `  vfctl fw diff web.json web-new.json`,
		Args:    args("OLD", "NEW"),
		RunE: a.runE(func(_ context.Context, args []string) error {
			old, err := loadPolicyFile(args[0])
			if err != nil {
				return err
			}
			new, err := loadPolicyFile(args[1])
			if err != nil {
				return err
			}
			d, err := firewall.DiffPolicies(old, new)
			if err != nil {
				return &exitError{code: ExitBadInput, msg: err.Error()}
			}
			return a.emit(d, func(w io.Writer) error {
				if d.Empty() {
					fmt.Fprintln(w, "no differences")
					return nil
				}
				for _, s := range d.Defaults {
					fmt.Fprintf(w, "~ %s\n", s)
				}
				for _, r := range d.Removed {
					fmt.Fprintf(w, "- %s (was rule %d)\n", r.Name, r.Old)
				}
				for _, r := range d.Added {
					fmt.Fprintf(w, "+ %s (rule %d)\n", r.Name, r.New)
				}
				for _, r := range d.Changed {
					fmt.Fprintf(w, "~ %s (rule %d -> %d): %s\n", r.Name, r.Old, r.New, strings.Join(r.Fields, ", "))
				}
				fmt.Fprintf(w, "%d added, %d removed, %d changed\n", len(d.Added), len(d.Removed), len(d.Changed))
				return nil
			})
		}),
	}
}

func (a *app) fwLoadCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "load VNIC SLOT",
		Short: "Make a running firewall re-read its policy file and swap it in",
		Long: `Load asks filterd to have the firewall in SLOT of VNIC's chain re-read the
policy file it was attached with and swap it in atomically: flows the new
policy still allows continue untouched, flows it denies are cut at their
next packet. A policy that does not parse or compile changes nothing
(exit 5). Edit the file, check it with 'vfctl fw check', then load it.`,
		Example: `  vfctl fw load vnet3 0`,
		Args:    args("VNIC", "SLOT"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			slot, err := strconv.Atoi(args[1])
			if err != nil || slot < 0 || slot >= sdk.MaxSlots {
				return &exitError{code: ExitUsage, msg: fmt.Sprintf("slot %q: want 0..%d", args[1], sdk.MaxSlots-1)}
			}
			r, err := call(ctx, a, func(ctx context.Context) (*api.ReloadResult, error) {
				return a.client.Reload(ctx, args[0], slot)
			})
			if err != nil {
				return err
			}
			return a.emit(r, func(w io.Writer) error {
				fmt.Fprintf(w, "%s slot %d (%s): policy reloaded in %v\n", r.VNIC, r.Slot, r.Filter, time.Duration(r.Seconds*float64(time.Second)).Round(time.Microsecond))
				return nil
			})
		}),
	}
}
