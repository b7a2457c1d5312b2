package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
)

// cryptCommand is `vfctl crypt`: the encrypt filter's host tunnel and its
// peers (show), the host's key (rotate, host), its files (reload), the
// API-managed peers and policy documents (peers, policy).
func (a *app) cryptCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "crypt",
		Short: "Distributed encryption: tunnel and peers, key rotation, reload",
		Long: `Tools for the encrypt filter (docs/encrypt.md), which steers the traffic a
VM's policy protects into the host's WireGuard tunnel and drops it, counted,
whenever the tunnel to the peer host is not up (fail-closed).

The tunnel is one per host, shared by every vNIC carrying encrypt: show,
rotate and reload act on the host through any such vNIC — the one named,
else the first one filterd lists.

show    the tunnel, every peer host (endpoint, key, handshake age, bytes,
        up or DOWN) and each vNIC's steering and drop counters
rotate  give the host a new key pair; prints the new public key for the
        control plane to push into every peer's peers file
reload  re-read the host's peers and policy files (after the control plane
        changed them); a bad file is refused and the running configuration
        stays in force
host    this host's public key, key age and tunnel endpoints: what the
        control plane collects to put the host into the other hosts' peers
peers   show or replace the peers document filterd manages for instances
        attached with --param peers=api (what the control plane pushes)
policy  show or replace the policy document filterd manages for instances
        attached with --param policy=api (what the control plane pushes)`,
		Args:    args(),
		GroupID: "chain",
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.cryptShowCommand(), a.cryptRotateCommand(), a.cryptReloadCommand(), a.cryptHostCommand(), a.cryptPeersCommand(), a.cryptPolicyCommand())
	return cmd
}

// encryptSlots finds the encrypt instances to act on: those of the vNIC
// args names, if any (the one in slot, or the only one), or else the first
// vNIC's (all of them with all).
func (a *app) encryptSlots(ctx context.Context, args []string, slot slotFlag, all bool) ([]api.VNIC, error) {
	vnic := ""
	if len(args) > 0 {
		vnic = args[0]
	}
	var vs []api.VNIC
	if vnic != "" {
		v, err := a.chainOf(ctx, vnic)
		if err != nil {
			return nil, err
		}
		vs = []api.VNIC{*v}
	} else {
		var err error
		if vs, err = call(ctx, a, a.client.VNICs); err != nil {
			return nil, err
		}
	}
	var out []api.VNIC
	for _, v := range vs {
		slots := filterSlots(&v, encrypt.Name, slot.slot)
		if len(slots) == 0 {
			continue
		}
		if len(slots) > 1 && slot.slot == nil {
			return nil, ambiguous(&v, "encrypt", slots)
		}
		v.Slots = slots[:1]
		out = append(out, v)
		if !all {
			break
		}
	}
	if len(out) == 0 {
		where := "no vNIC of this host"
		if vnic != "" {
			where = vnic
			if slot.slot != nil {
				where += " slot " + strconv.Itoa(*slot.slot)
			}
		}
		return nil, &exitError{code: ExitNotFound, msg: where + " carries the encrypt filter",
			hint: "attach it: vfctl attach VNIC encrypt --param peers=FILE --param policy=FILE"}
	}
	return out, nil
}

// cryptShow is one vNIC of `vfctl crypt show -o json`: filterd's inspect
// result with the encrypt filter's state.
type cryptShow struct {
	api.InspectResult
	State encrypt.Inspection `json:"state"`
}

func (a *app) cryptShowCommand() *cobra.Command {
	var (
		slot slotFlag
		all  bool
	)
	cmd := &cobra.Command{
		Use:   "show [VNIC]",
		Short: "Show the host's tunnel, its peers and the vNICs' counters",
		Long: `Show asks filterd for the live state of the encrypt filter on VNIC (without
VNIC: on the first vNIC carrying it; with --all: on every one) and prints:

The host's tunnel: device, running or STOPPED (stopped: every protected
packet is dropped), UDP port, the host's public key and its VM prefixes.

One line per peer host:
  PEER       its name in the peers file
  ENDPOINT   its underlay address and port
  KEY        its public key's first 8 characters (the fingerprint to
             compare with the peers file; -o json has the whole key)
  STATE      up, or "DOWN, dropping": its session is not alive, protected
             traffic to it is dropped and counted, never sent in clear
             (fail-closed)
  HANDSHAKE  age of the last completed handshake (never: none yet)
  RX, TX     bytes the tunnel received from and sent to it

The policy's group pairs and the host groups they resolved.

Per vNIC, its protect mode and per peer:
  STEERED        packets sent into the tunnel toward the peer
  DOWN-DROPPED   protected packets dropped while the peer was DOWN
  CLEAR-DROPPED  packets from a protected source that arrived in clear
  RECEIVED       packets from a protected source that came through the tunnel
and the drops not tied to a peer: protected destinations no peer carries,
and frames that could not be classified safely (IPv6 extension headers,
VLAN tags).

The figures are the tunnel's state as of its last 250 ms check. With -o
json it prints an array of filterd's inspect results, one per vNIC;
"state" is encrypt.Inspection (docs/encrypt.md).`,
		Example: `  vfctl crypt show
  vfctl crypt show vnet3
  vfctl crypt show --all
  vfctl crypt show -o json | jq '.[0].state.tunnel.peers[] | select(.up | not) | .name'`,
		Args: args("[VNIC]"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			vs, err := a.encryptSlots(ctx, args, slot, all)
			if err != nil {
				return err
			}
			var out []cryptShow
			for _, v := range vs {
				s := v.Slots[0]
				var cs cryptShow
				res, err := a.inspect(ctx, v.Name, s.Slot, nil, &cs.State)
				if err != nil {
					return err
				}
				cs.InspectResult = *res
				out = append(out, cs)
			}
			return a.emit(out, func(w io.Writer) error {
				if err := printTunnel(w, &out[0].State.Tunnel, out[0].State.Pairs, out[0].State.Groups); err != nil {
					return err
				}
				for _, cs := range out {
					fmt.Fprintln(w)
					if err := printCryptVNIC(w, cs); err != nil {
						return err
					}
				}
				return nil
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", "the encrypt instance's `slot` (default: the only encrypt in the chain)")
	cmd.Flags().BoolVar(&all, "all", false, "show every vNIC carrying encrypt, not only the first")
	return cmd
}

// keyPrint is the first 8 characters of a base64 key.
func keyPrint(k string) string {
	if len(k) <= 8 {
		return k
	}
	return k[:8] + "…"
}

func handshakeAge(s float64) string {
	if s < 0 {
		return "never"
	}
	return (time.Duration(math.Round(s)) * time.Second).String() + " ago"
}

func printTunnel(w io.Writer, t *encrypt.TunnelStatus, pairs, groups []string) error {
	state := "running"
	if !t.Running {
		state = "STOPPED (protected traffic dropped)"
	}
	fmt.Fprintf(w, "TUNNEL %s  %s  ifindex %d  port %d  key %s  prefixes %s\n", t.Device, state, t.Ifindex, t.ListenPort, keyPrint(t.PublicKey), dash(strings.Join(t.Prefixes, ",")))
	fmt.Fprintln(w, "fail-closed: protected traffic to a peer that is not up is dropped and counted, never sent in clear")
	if len(t.Peers) == 0 {
		fmt.Fprintln(w, "no peers")
	} else {
		tw := table(w)
		row(tw, "PEER", "ENDPOINT", "KEY", "PREFIXES", "STATE", "HANDSHAKE", "RX", "TX")
		for _, p := range t.Peers {
			st := "up"
			if !p.Up {
				st = "DOWN, dropping"
			}
			row(tw, p.Name, p.Endpoint, keyPrint(p.PublicKey), dash(strings.Join(p.Prefixes, ",")), st, handshakeAge(p.HandshakeAgeSeconds), humanBytes(float64(p.RxBytes)), humanBytes(float64(p.TxBytes)))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(pairs) > 0 {
		fmt.Fprintf(w, "pairs: %s", strings.Join(pairs, "; "))
		if len(groups) > 0 {
			fmt.Fprintf(w, "  (host groups: %s)", strings.Join(groups, ", "))
		}
		fmt.Fprintln(w)
	}
	return nil
}

func printCryptVNIC(w io.Writer, cs cryptShow) error {
	st := cs.State
	protected := 0
	for _, r := range st.Routes {
		if r.Protected {
			protected++
		}
	}
	fmt.Fprintf(w, "VNIC %s  slot %d  protect=%s  %d protected prefixes, %d pairs\n", cs.VNIC, cs.Slot, st.Protect, protected, len(st.Pairs))
	tw := table(w)
	row(tw, "PEER", "STEERED", "DOWN-DROPPED", "CLEAR-DROPPED", "RECEIVED")
	for _, c := range st.Counters {
		row(tw, c.Peer, c.SteeredPackets, c.DownDropped, c.ClearDropped, c.ReceivedPackets)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "no peer: dropped %d, clear-dropped %d; unsafe frames dropped %d\n", st.NoPeer.Dropped, st.NoPeer.ClearDropped, st.NoPeer.UnsafeDropped)
	return nil
}

// cryptRotate is `vfctl crypt rotate -o json`.
type cryptRotate struct {
	api.ActionResult
	Result encrypt.Rotation `json:"result"`
}

func (a *app) cryptRotateCommand() *cobra.Command {
	var slot slotFlag
	cmd := &cobra.Command{
		Use:   "rotate [VNIC]",
		Short: "Give the host's tunnel a new key pair",
		Long: `Rotate generates a new private key on this host (it never leaves it: written
0600 to the key directory, then applied to the running tunnel) and prints
the new public key. The tunnel is the host's, reached through VNIC or the
first vNIC carrying encrypt.

Until the peers know the new public key they refuse this host's
handshakes: the control plane (or you) must put it into every peer host's
peers file (this host's "public_key") and reload them (vfctl crypt reload
on each). Meanwhile protected traffic waits or is retransmitted, never sent
in clear; established TCP connections survive (docs/encrypt.md, Keys).

With -o json it prints filterd's action result; "result" holds tunnel,
public_key and previous_public_key.`,
		Example: `  vfctl crypt rotate
  NEW=$(vfctl crypt rotate -o json | jq -r .result.public_key)`,
		Args: args("[VNIC]"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			vs, err := a.encryptSlots(ctx, args, slot, false)
			if err != nil {
				return err
			}
			v, s := vs[0], vs[0].Slots[0]
			var raw json.RawMessage
			res, err := call(ctx, a, func(ctx context.Context) (*api.ActionResult, error) {
				r, out, err := a.client.Act(ctx, v.Name, s.Slot, "rotate", nil)
				raw = out
				return r, err
			})
			if err != nil {
				return err
			}
			out := cryptRotate{ActionResult: *res}
			if err := json.Unmarshal(raw, &out.Result); err != nil {
				return fmt.Errorf("decode the rotation of %s slot %d: %w", v.Name, s.Slot, err)
			}
			out.ActionResult.Result = nil
			return a.emit(out, func(w io.Writer) error {
				fmt.Fprintf(w, "tunnel %s: new public key %s\n", out.Result.Tunnel, out.Result.PublicKey)
				fmt.Fprintf(w, "previous public key %s\n", out.Result.PreviousPublicKey)
				fmt.Fprintln(w, "put the new key into every peer host's peers file and run 'vfctl crypt reload' there")
				return nil
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", "the encrypt instance's `slot` (default: the only encrypt in the chain)")
	return cmd
}

func (a *app) cryptReloadCommand() *cobra.Command {
	var slot slotFlag
	cmd := &cobra.Command{
		Use:   "reload [VNIC]",
		Short: "Re-read the host's peers and policy files",
		Long: `Reload makes the encrypt filter re-read this host's peers and policy files
(through VNIC, or the first vNIC carrying encrypt; every vNIC of the host is
updated) and re-resolve the policy's host groups. Peers whose key and
endpoint did not change keep their sessions; removed peers are revoked at
once.

A file that does not parse, names an unknown peer or an unknown host group
is refused (exit 5) with its file:line:col; the running configuration
stays in force, so protected traffic stays protected.`,
		Example: `  vfctl crypt reload
  vfctl crypt reload vnet3`,
		Args: args("[VNIC]"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			vs, err := a.encryptSlots(ctx, args, slot, false)
			if err != nil {
				return err
			}
			v, s := vs[0], vs[0].Slots[0]
			r, err := call(ctx, a, func(ctx context.Context) (*api.ReloadResult, error) {
				return a.client.Reload(ctx, v.Name, s.Slot)
			})
			if err != nil {
				return err
			}
			return a.emit(r, func(w io.Writer) error {
				fmt.Fprintf(w, "%s slot %d (%s): peers and policy reloaded in %v\n", r.VNIC, r.Slot, r.Filter, time.Duration(r.Seconds*float64(time.Second)).Round(time.Microsecond))
				return nil
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", "the encrypt instance's `slot` (default: the only encrypt in the chain)")
	return cmd
}
