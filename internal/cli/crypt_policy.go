package cli

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filters/encrypt"
)

// `vfctl crypt policy`: the encryption policy document filterd manages
// for encrypt instances attached with --param policy=api
// (docs/encrypt.md, Policy through the API).

func (a *app) cryptPolicyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Show or replace the policy document filterd manages",
		Long: `Policy reads and replaces the encryption policy document filterd keeps in
its state directory (<state-dir>/encrypt/policy.json, mode 0600) for every
encrypt instance attached with --param policy=api, in the schema of a
policy file (docs/encrypt.md): the protected address space ("space"), each
vNIC's protected destinations ("vnics": addresses, prefixes, peer:<name>)
and the pairs. The control plane's agent writes it through the same API
(PUT /v1/encrypt/policy).

show  the document, its generation and when it was last replaced
set   replace it: validated first (against the live peers and the host
      groups too), then written and every policy=api instance reloaded

Until the first set, instances with policy=api run with the empty policy:
a protect=policy vNIC protects nothing (its traffic crosses in clear), a
protect=all vNIC protects what its peers carry, as without a policy.`,
		Args:    args(),
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		Example: "  vfctl crypt policy show\n  vfctl crypt policy set crypt-policy.json",
	}
	cmd.AddCommand(a.cryptPolicyShowCommand(), a.cryptPolicySetCommand())
	return cmd
}

func (a *app) cryptPolicyShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show the API-managed policy document",
		Long: `Show prints the policy document filterd manages (GET /v1/encrypt/policy):
its generation (the number of accepted replacements; 0: none yet, the
instances with policy=api then run with the empty policy), when it was
last replaced, the file it lives in, the protected space, one line per
vNIC and the pairs:

  VNIC          the vNIC (host-side device name) the line is for
  DESTINATIONS  its protected destinations: addresses, prefixes and
                peer:<name> (every prefix behind that host)

This is the document as written; 'vfctl crypt show' has what each vNIC's
routes protect right now. With -o json it prints filterd's answer,
"document" holding the policy document itself (null before the first
set).`,
		Example: `  vfctl crypt policy show
  vfctl crypt policy show -o json | jq .document > crypt-policy.json   # edit, then set
  vfctl crypt policy show -o json | jq -r '.document.vnics.vnet3[]'`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			p, err := call(ctx, a, a.client.EncryptPolicy)
			if err != nil {
				return err
			}
			return a.emit(p, func(w io.Writer) error {
				if p.Generation == 0 && string(p.Document) == "null" {
					fmt.Fprintf(w, "generation 0: no policy document yet (%s); instances with policy=api run with the empty policy (protect=policy protects nothing)\n", p.File)
					return nil
				}
				fmt.Fprintf(w, "generation %d  updated %s  file %s\n", p.Generation, p.Updated.Format(time.RFC3339), p.File)
				doc, err := encrypt.ParsePolicy(p.Document)
				if err != nil {
					return fmt.Errorf("the stored document does not parse: %w", err)
				}
				var space []string
				for _, x := range doc.Space {
					space = append(space, x.String())
				}
				fmt.Fprintf(w, "space %s\n", dash(strings.Join(space, ",")))
				if len(doc.VNICs) == 0 {
					fmt.Fprintln(w, "no vNIC destinations")
				} else {
					tw := table(w)
					row(tw, "VNIC", "DESTINATIONS")
					for _, v := range slices.Sorted(func(yield func(string) bool) {
						for k := range doc.VNICs {
							if !yield(k) {
								return
							}
						}
					}) {
						var ds []string
						for _, d := range doc.VNICs[v] {
							ds = append(ds, d.String())
						}
						row(tw, v, dash(strings.Join(ds, ",")))
					}
					if err := tw.Flush(); err != nil {
						return err
					}
				}
				var pairs []string
				for _, pr := range doc.Pairs {
					pairs = append(pairs, pr.String())
				}
				fmt.Fprintf(w, "pairs: %s\n", dash(strings.Join(pairs, "; ")))
				return nil
			})
		}),
	}
}

func (a *app) cryptPolicySetCommand() *cobra.Command {
	var ifGen uint64
	var cmd *cobra.Command
	cmd = &cobra.Command{
		Use:   "set FILE",
		Short: "Replace the API-managed policy document",
		Long: `Set replaces the policy document filterd manages with FILE ("-": standard
input), a policy file (docs/encrypt.md), and reloads every encrypt instance
attached with --param policy=api (PUT /v1/encrypt/policy).

FILE is parsed here first, then by filterd with the encrypt filter's
parser and against what a reload would use: a document that does not
parse, has an unknown member, gives a vNIC something other than a list, a
malformed address or a prefix with host bits set, names a peer:<name> the
live peers do not list, or a group: nobody pushed, is refused (exit 5,
file:line:col: field: problem) and nothing changes. If an instance refuses
the reload, filterd puts the previous document back, reloads the
instances with it and vfctl exits 5: the running policy is untouched
either way.

A destination added is protected from the reload on (its traffic goes
into the tunnel, or is dropped while the peer is down); one removed
crosses in clear again. The policy is symmetric: the peer host's policy
must protect the way back too, or its answers arrive in clear and are
dropped. --if-generation N replaces the document only while its
generation is N ('vfctl crypt policy show -o json | jq .generation');
otherwise nothing changes and vfctl exits 1.

To drop a peer host, set a policy without its peer:<name> first, then the
peers document without the host (the other order is refused).

Prints the new generation and the instances reloaded; with -o json
filterd's answer (api.EncryptPolicyResult).`,
		Example: `  vfctl crypt policy set crypt-policy.json
  vfctl crypt policy set --if-generation 4 crypt-policy.json
  # protect vnet3's traffic to 10.99.2.7 as well:
  vfctl crypt policy show -o json | jq '.document | .vnics.vnet3 += ["10.99.2.7"]' | vfctl crypt policy set -`,
		Args: args("FILE"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			return a.setEncryptDocument(ctx, cmd, args[0], ifGen, encryptDocCommand{
				what:  "policy",
				parse: func(doc []byte) error { _, err := encrypt.ParsePolicy(doc); return err },
				set:   a.client.SetEncryptPolicy,
			})
		}),
	}
	cmd.Flags().Uint64Var(&ifGen, "if-generation", 0, "replace only while the document's generation is `N` (compare-and-swap)")
	return cmd
}
