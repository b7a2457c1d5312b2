package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
)

// `vfctl crypt host` and `vfctl crypt peers`: the host side of the
// encryption mesh's key distribution (docs/encrypt.md).

func (a *app) cryptHostCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "host",
		Short: "Show this host's public key and tunnel endpoints",
		Long: `Host prints what a control plane collects from this host to put it into the
other hosts' peers documents (GET /v1/encrypt/host): the tunnel's public
key (never the private key, which stays in the key directory, mode 0600),
when the key pair was generated or last rotated, the UDP listen port, the
host's addresses with that port (pick the underlay's as the host's
"endpoint") and the VM prefixes behind the host.

While no vNIC carries encrypt, no tunnel runs: host then shows the key pair
in filterd's state directory (<state-dir>/encrypt, created on the first
call), the one a tunnel started with the default tunnel name and that
key_dir will use (with filterd's default state directory it is encrypt's
default key_dir).

With -o json it prints filterd's answer (api.EncryptHost).`,
		Example: `  vfctl crypt host
  vfctl crypt host -o json | jq -r .public_key
  # the entry of this host in the other hosts' peers documents:
  vfctl crypt host -o json | jq '{name: "host-1", public_key, endpoint: .endpoints[0].endpoint, prefixes}'`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			h, err := call(ctx, a, a.client.EncryptHost)
			if err != nil {
				return err
			}
			return a.emit(h, func(w io.Writer) error {
				state := "running"
				if !h.Running {
					state = "not running (the stored key a tunnel will use)"
				}
				fmt.Fprintf(w, "TUNNEL %s  %s\n", h.Tunnel, state)
				fmt.Fprintf(w, "public key  %s\n", h.PublicKey)
				fmt.Fprintf(w, "key created %s (%s ago)  in %s\n", h.KeyCreated.Format(time.RFC3339), time.Since(h.KeyCreated).Round(time.Second), h.KeyDir)
				fmt.Fprintf(w, "listen port %d  prefixes %s\n", h.ListenPort, dash(strings.Join(h.Prefixes, ",")))
				if len(h.Endpoints) == 0 {
					fmt.Fprintln(w, "no global unicast address on an up interface")
					return nil
				}
				tw := table(w)
				row(tw, "ENDPOINT", "INTERFACE")
				for _, e := range h.Endpoints {
					row(tw, e.Endpoint, e.Interface)
				}
				return tw.Flush()
			})
		}),
	}
}

func (a *app) cryptPeersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "Show or replace the peers document filterd manages",
		Long: `Peers reads and replaces the peers document filterd keeps in its state
directory (<state-dir>/encrypt/peers.json, mode 0600) for every encrypt
instance attached with --param peers=api: this host's listen port and VM
prefixes, and the other hosts (name, public key, endpoint, prefixes), in
the schema of a peers file (docs/encrypt.md). The control plane's agent
writes it through the same API (PUT /v1/encrypt/peers).

show  the document, its generation and when it was last replaced
set   replace it: validated first, then written and every peers=api
      instance reloaded; a host missing from the new document is revoked
      (its VMs' protected traffic is dropped, never sent in clear)`,
		Args:    args(),
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		Example: "  vfctl crypt peers show\n  vfctl crypt peers set peers.json",
	}
	cmd.AddCommand(a.cryptPeersShowCommand(), a.cryptPeersSetCommand())
	return cmd
}

func (a *app) cryptPeersShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show",
		Short: "Show the API-managed peers document",
		Long: `Show prints the peers document filterd manages (GET /v1/encrypt/peers):
its generation (the number of accepted replacements; 0: none yet, the
instances with peers=api then have no peers), when it was last replaced,
the file it lives in, this host's listen port and prefixes and one line per
peer host:

  PEER      its name (peer:<name> in policies)
  ENDPOINT  its underlay address and port
  KEY       its whole public key (compare with 'vfctl crypt host' there)
  PREFIXES  the VM addresses behind it

This is the document as written, not the tunnel's live state: 'vfctl crypt
show' has which peers are up. With -o json it prints filterd's answer,
"document" holding the peers document itself (null before the first set).`,
		Example: `  vfctl crypt peers show
  vfctl crypt peers show -o json | jq .document > peers.json   # edit, then set
  vfctl crypt peers show -o json | jq .generation`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			p, err := call(ctx, a, a.client.EncryptPeers)
			if err != nil {
				return err
			}
			return a.emit(p, func(w io.Writer) error {
				if p.Generation == 0 && string(p.Document) == "null" {
					fmt.Fprintf(w, "generation 0: no peers document yet (%s); instances with peers=api have no peers\n", p.File)
					return nil
				}
				fmt.Fprintf(w, "generation %d  updated %s  file %s\n", p.Generation, p.Updated.Format(time.RFC3339), p.File)
				doc, err := encrypt.ParsePeers(p.Document)
				if err != nil {
					return fmt.Errorf("the stored document does not parse: %w", err)
				}
				var pre []string
				for _, x := range doc.Prefixes {
					pre = append(pre, x.String())
				}
				fmt.Fprintf(w, "this host: listen port %d  prefixes %s\n", doc.ListenPort, dash(strings.Join(pre, ",")))
				if len(doc.Peers) == 0 {
					fmt.Fprintln(w, "no peers")
					return nil
				}
				tw := table(w)
				row(tw, "PEER", "ENDPOINT", "KEY", "PREFIXES")
				for _, pe := range doc.Peers {
					var ps []string
					for _, x := range pe.Prefixes {
						ps = append(ps, x.String())
					}
					row(tw, pe.Name, pe.Endpoint, pe.PublicKey, dash(strings.Join(ps, ",")))
				}
				return tw.Flush()
			})
		}),
	}
}

func (a *app) cryptPeersSetCommand() *cobra.Command {
	var ifGen uint64
	var cmd *cobra.Command
	cmd = &cobra.Command{
		Use:   "set FILE",
		Short: "Replace the API-managed peers document",
		Long: `Set replaces the peers document filterd manages with FILE ("-": standard
input), a peers file (docs/encrypt.md), and reloads every encrypt instance
attached with --param peers=api (PUT /v1/encrypt/peers).

FILE is checked here first, then by filterd with the encrypt filter's
parser and against this host's own public key: a document that does not
parse, repeats a name or a key, lists this host's own key, gives a
malformed key or endpoint, or overlaps prefixes of two hosts is refused
(exit 5, file:line:col: field: problem) and nothing changes. If an instance
refuses the reload (its policy names a peer the document drops, say),
filterd puts the previous document back, reloads the instances with it and
vfctl exits 5: the running mesh is untouched either way.

Peers whose key and endpoint stay keep their sessions; a peer dropped from
the document is revoked at once (its VMs' protected traffic is dropped and
counted, never sent in clear). --if-generation N replaces the document only
while its generation is N ('vfctl crypt peers show -o json | jq
.generation'); otherwise nothing changes and vfctl exits 1.

Prints the new generation and the instances reloaded; with -o json
filterd's answer (api.EncryptPeersResult).`,
		Example: `  vfctl crypt peers set peers.json
  vfctl crypt peers set --if-generation 4 peers.json
  jq '.peers |= map(select(.name != "host-3"))' peers.json | vfctl crypt peers set -   # revoke host-3`,
		Args: args("FILE"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			return a.setEncryptDocument(ctx, cmd, args[0], ifGen, encryptDocCommand{
				what:  "peers",
				parse: func(doc []byte) error { _, err := encrypt.ParsePeers(doc); return err },
				set:   a.client.SetEncryptPeers,
			})
		}),
	}
	cmd.Flags().Uint64Var(&ifGen, "if-generation", 0, "replace only while the document's generation is `N` (compare-and-swap)")
	return cmd
}

// cryptStdin is what "vfctl crypt peers|policy set -" reads (tests
// replace it).
var cryptStdin io.Reader = os.Stdin

// encryptDocCommand is what `vfctl crypt peers set` and `vfctl crypt
// policy set` differ in.
type encryptDocCommand struct {
	what  string                 // "peers", "policy": the document and its parameter
	parse func(doc []byte) error // the encrypt filter's parser, run before sending
	set   func(ctx context.Context, doc []byte, ifGeneration *uint64) (*api.EncryptDocumentResult, error)
}

// setEncryptDocument reads file ("-": standard input), parses it locally
// (exit 5 with file:line:col), sends it with --if-generation when given
// (exit 1 on a mismatch) and prints the new generation.
func (a *app) setEncryptDocument(ctx context.Context, cmd *cobra.Command, file string, ifGen uint64, c encryptDocCommand) error {
	var doc []byte
	var err error
	if file == "-" {
		doc, err = io.ReadAll(cryptStdin)
	} else {
		doc, err = os.ReadFile(file)
	}
	if err != nil {
		return &exitError{code: ExitBadInput, msg: fmt.Sprintf("read %s document: %v", c.what, err)}
	}
	if err := c.parse(doc); err != nil {
		var ce *encrypt.ConfigError
		if errors.As(err, &ce) && file != "-" {
			ce.File = file
		}
		return &exitError{code: ExitBadInput, msg: err.Error()}
	}
	var gen *uint64
	if cmd.Flags().Changed("if-generation") {
		gen = &ifGen
	}
	r, err := call(ctx, a, func(ctx context.Context) (*api.EncryptDocumentResult, error) {
		return c.set(ctx, doc, gen)
	})
	if err != nil {
		if api.IsCode(err, api.CodeGenerationMismatch) {
			return &exitError{code: ExitFailure, msg: err.Error(), hint: fmt.Sprintf("read the current document (vfctl crypt %s show -o json), merge and retry", c.what)}
		}
		return err
	}
	return a.emit(r, func(w io.Writer) error {
		fmt.Fprintf(w, "%s document generation %d written to %s; %d encrypt instance(s) reloaded\n", c.what, r.Generation, r.File, len(r.Reloaded))
		for _, u := range r.Unmanaged {
			fmt.Fprintf(w, "  %s slot %d not reached: it %s (attach it with --param %s=api)\n", u.VNIC, u.Slot, u.Error, c.what)
		}
		return nil
	})
}
