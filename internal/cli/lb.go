package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/dlb"
)

// lbCommand is `vfctl lb`: the distributed load balancer's services.
// show reads a running instance's state; add, rm, weight and drain edit
// its services file and reload every instance that uses the file.
func (a *app) lbCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "lb",
		Short: "Load balancer services: show, add, rm, weight, drain",
		Long: `Tools for the dlb filter (docs/dlb.md), which resolves virtual IPs at the
client's own vNIC.

show prints a running instance's services with their traffic and, per
backend, the weight, health, new and pinned flows.

add, rm, weight and drain edit a services file: the one the vNIC's dlb
instance was attached with (its "services" parameter), or --file. The
edited file is checked with the filter's own parser before it replaces the
old one (a temporary file renamed over it, so a reader never sees half a
file); then every vNIC whose dlb instance uses that file is reloaded.
Flows already pinned keep their backend whatever the edit. A refused edit
(exit 5) leaves the file as it was; if filterd refuses a reload, the old
file is put back and the instances already reloaded are reloaded again.

SERVICE is a service's "name" (its index in the file when it has none).
BACKEND is ADDR or ADDR:PORT ([ADDR]:PORT for IPv6); without a port it is
the service's port.`,
		Args:    args(),
		GroupID: "chain",
		RunE:    func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.lbShowCommand(), a.lbAddCommand(), a.lbRmCommand(), a.lbWeightCommand(), a.lbDrainCommand())
	return cmd
}

// dlbSlot finds the dlb instance of vnic's chain: the one in slot, or the
// only one.
func (a *app) dlbSlot(ctx context.Context, vnic string, slot *int) (api.Slot, error) {
	v, err := a.chainOf(ctx, vnic)
	if err != nil {
		return api.Slot{}, err
	}
	found := filterSlots(v, dlb.Name, slot)
	switch {
	case len(found) == 1:
		return found[0], nil
	case slot != nil:
		return api.Slot{}, &exitError{code: ExitNotFound, msg: fmt.Sprintf("%s has no dlb in slot %d", vnic, *slot),
			hint: fmt.Sprintf("'vfctl show %s' lists its slots", vnic)}
	case len(found) == 0:
		return api.Slot{}, &exitError{code: ExitNotFound, msg: fmt.Sprintf("%s has no dlb in its chain", vnic),
			hint: fmt.Sprintf("attach one: vfctl attach %s dlb --param services=FILE", vnic)}
	}
	return api.Slot{}, ambiguous(v, "a dlb", found)
}

// lbShow is `vfctl lb show -o json`.
type lbShow struct {
	api.InspectResult
	State dlb.State `json:"state"`
}

func (a *app) lbShowCommand() *cobra.Command {
	var slot slotFlag
	cmd := &cobra.Command{
		Use:   "show VNIC",
		Short: "Show a dlb instance's services, backends, health and flows",
		Long: `Show asks filterd for the live state of VNIC's dlb instance (the only one
in its chain, or the one in --slot) and prints, per service, its VIP, port,
protocol, session affinity, health check and traffic (packets and bytes
from the VM to the VIP and of the replies), then one line per backend:

  BACKEND  address:port
  WEIGHT   the configured weight (0: draining, takes no new flows)
  HEALTH   up, down (takes no new flows) or unchecked (no health check,
           or not enough results yet: takes flows), and since when
  NEW      flows given to it since the instance was loaded
  PINNED   flows pinned to it now (a scan of the connection table)

With -o json it prints the API's inspect result; "state" is dlb.State
(docs/dlb.md).`,
		Example: `  vfctl lb show vnet3
  vfctl lb show vnet3 --slot 2 -o json | jq '.state.services[].backends[] | select(.health == "down")'`,
		Args: args("VNIC"),
		RunE: a.runE(func(ctx context.Context, args []string) error {
			s, err := a.dlbSlot(ctx, args[0], slot.slot)
			if err != nil {
				return err
			}
			var out lbShow
			res, err := a.inspect(ctx, args[0], s.Slot, nil, &out.State)
			if err != nil {
				return err
			}
			out.InspectResult = *res
			return a.emit(out, func(w io.Writer) error {
				fmt.Fprintf(w, "%s slot %d: services from %s\n", res.VNIC, res.Slot, dash(s.Params["services"]))
				return printLBState(w, &out.State, time.Now())
			})
		}),
	}
	cmd.Flags().Var(&slot, "slot", "the dlb instance's `slot` (default: the only dlb in the chain)")
	return cmd
}

func printLBState(w io.Writer, st *dlb.State, now time.Time) error {
	if st.HealthError != "" {
		fmt.Fprintf(w, "warning: the last health change could not be applied: %s\n", st.HealthError)
	}
	if len(st.Services) == 0 {
		fmt.Fprintln(w, "no services")
		return nil
	}
	for _, s := range st.Services {
		fmt.Fprintf(w, "\nservice %s  %s/%s  affinity %s  table %d\n", s.Name, netip.AddrPortFrom(s.VIP, s.Port), s.Protocol, s.Affinity, s.TableSize)
		if h := s.Health; h != nil {
			target := "backend port"
			if h.Port != 0 {
				target = "port " + strconv.Itoa(int(h.Port))
			}
			if h.Type == "http" {
				target += " GET " + h.Path
			}
			netns := ""
			if h.Netns != "" {
				netns = " from " + h.Netns
			}
			fmt.Fprintf(w, "  health: %s %s every %s, timeout %s, rise %d, fall %d%s\n", h.Type, target, h.Interval, h.Timeout, h.Rise, h.Fall, netns)
		} else {
			fmt.Fprintln(w, "  health: no check")
		}
		fmt.Fprintf(w, "  traffic: from-vm %s packets %s, to-vm %s packets %s\n",
			humanCount(float64(s.FromVM.Packets)), humanBytes(float64(s.FromVM.Bytes)), humanCount(float64(s.ToVM.Packets)), humanBytes(float64(s.ToVM.Bytes)))
		tw := table(w)
		row(tw, "  BACKEND", "WEIGHT", "HEALTH", "NEW", "PINNED")
		for _, b := range s.Backends {
			health := b.Health
			if !b.Since.IsZero() {
				health += " for " + now.Sub(b.Since).Round(time.Second).String()
			}
			if b.Health == "down" && b.LastError != "" {
				health += " (" + b.LastError + ")"
			}
			weight := strconv.Itoa(int(b.Weight))
			if b.Weight == 0 {
				weight += " (draining)"
			}
			row(tw, "  "+netip.AddrPortFrom(b.Addr, b.Port).String(), weight, health, b.NewFlows, b.PinnedFlows)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

// lbEdit is one edit of a services file: target names the file (a vNIC's
// dlb or --file), change edits it in place and describes what it did.
type lbEdit struct {
	file string
	slot slotFlag
}

func (e *lbEdit) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&e.file, "file", "", "edit this services `file` instead of the vNIC's (then give no VNIC)")
	cmd.Flags().Var(&e.slot, "slot", "the dlb instance's `slot` in VNIC's chain (default: the only dlb)")
}

// lbArgs is args(names...) with a leading VNIC unless --file is given.
func (e *lbEdit) lbArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		if e.file == "" {
			return args(append([]string{"VNIC"}, names...)...)(cmd, got)
		}
		return args(names...)(cmd, got)
	}
}

// lbEditResult is `vfctl lb add|rm|weight|drain -o json`.
type lbEditResult struct {
	File     string             `json:"file"`
	Change   string             `json:"change"`
	Reloaded []api.ReloadResult `json:"reloaded"`
	// NotReloaded says why nothing was reloaded (filterd not running
	// with --file), empty otherwise.
	NotReloaded string `json:"not_reloaded,omitempty"`
}

// run finds the file, applies change, checks and writes the result, and
// reloads the instances that use the file.
func (a *app) runEdit(ctx context.Context, e *lbEdit, args []string, change func(f *dlb.File, args []string) (string, error)) error {
	path := e.file
	if path == "" {
		s, err := a.dlbSlot(ctx, args[0], e.slot.slot)
		if err != nil {
			return err
		}
		if path = s.Params["services"]; path == "" {
			return &exitError{code: ExitFailure, msg: fmt.Sprintf("%s slot %d: dlb has no services parameter", args[0], s.Slot)}
		}
		args = args[1:]
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return loadErr(err)
	}
	f, err := dlb.ReadFile(path)
	if err != nil {
		return &exitError{code: ExitBadInput, msg: err.Error(), hint: "the file must be valid before vfctl edits it: fix it by hand ('vfctl lb' checks it with the filter's parser)"}
	}
	what, err := change(f, args)
	if err != nil {
		return err
	}
	data := f.Format()
	if _, _, err := dlb.ParseConfigGroups(data, dlb.OfflineGroups{}); err != nil {
		return &exitError{code: ExitBadInput, msg: fmt.Sprintf("%s: %s refused: %v", path, what, err), hint: "the file is unchanged"}
	}
	if err := dlb.WriteFileAtomic(path, data); err != nil {
		return &exitError{code: ExitFailure, msg: err.Error()}
	}
	res := lbEditResult{File: path, Change: what, Reloaded: []api.ReloadResult{}}
	users, err := a.dlbUsers(ctx, path)
	switch {
	case errors.Is(err, api.ErrDaemonNotRunning) && e.file != "":
		res.NotReloaded = "filterd is not running"
	case err != nil:
		_ = dlb.WriteFileAtomic(path, old)
		return fmt.Errorf("%s (the file is unchanged): %w", what, err)
	}
	for i, u := range users {
		r, err := call(ctx, a, func(ctx context.Context) (*api.ReloadResult, error) { return a.client.Reload(ctx, u.vnic, u.slot) })
		if err != nil {
			// Put the old file back and the instances already reloaded
			// on it again: every instance keeps running one file.
			_ = dlb.WriteFileAtomic(path, old)
			for _, done := range users[:i] {
				_, _ = call(ctx, a, func(ctx context.Context) (*api.ReloadResult, error) {
					return a.client.Reload(ctx, done.vnic, done.slot)
				})
			}
			return fmt.Errorf("%s slot %d refused the edited file, which is put back as it was: %w", u.vnic, u.slot, err)
		}
		res.Reloaded = append(res.Reloaded, *r)
	}
	return a.emit(res, func(w io.Writer) error {
		fmt.Fprintf(w, "%s: %s\n", path, what)
		for _, r := range res.Reloaded {
			fmt.Fprintf(w, "reloaded %s slot %d in %v\n", r.VNIC, r.Slot, time.Duration(r.Seconds*float64(time.Second)).Round(time.Microsecond))
		}
		switch {
		case res.NotReloaded != "":
			fmt.Fprintf(w, "nothing reloaded: %s\n", res.NotReloaded)
		case len(res.Reloaded) == 0:
			fmt.Fprintln(w, "no vNIC's dlb uses this file: nothing reloaded")
		}
		return nil
	})
}

type dlbUser struct {
	vnic string
	slot int
}

// dlbUsers lists the dlb instances whose services file is path.
func (a *app) dlbUsers(ctx context.Context, path string) ([]dlbUser, error) {
	vs, err := call(ctx, a, a.client.VNICs)
	if err != nil {
		return nil, err
	}
	var out []dlbUser
	for _, v := range vs {
		for _, s := range v.Slots {
			if s.Filter == dlb.Name && sameFile(s.Params["services"], path) {
				out = append(out, dlbUser{v.Name, s.Slot})
			}
		}
	}
	return out, nil
}

func sameFile(a, b string) bool {
	if a == "" {
		return false
	}
	sa, errA := os.Stat(a)
	sb, errB := os.Stat(b)
	if errA == nil && errB == nil {
		return os.SameFile(sa, sb)
	}
	aa, _ := filepath.Abs(a)
	ab, _ := filepath.Abs(b)
	return aa == ab
}

// findService returns the index of the service called name (or numbered
// name when services have no name).
func findService(f *dlb.File, name string) (int, error) {
	for i, s := range f.Services {
		if s.Name == name || (s.Name == "" && strconv.Itoa(i) == name) {
			return i, nil
		}
	}
	var names []string
	for i, s := range f.Services {
		if s.Name == "" {
			names = append(names, strconv.Itoa(i))
		} else {
			names = append(names, s.Name)
		}
	}
	return 0, &exitError{code: ExitNotFound, msg: fmt.Sprintf("no service %q (services: %s)", name, strings.Join(names, ", "))}
}

// parseBackend reads ADDR, ADDR:PORT or [ADDR]:PORT; port 0 when absent.
func parseBackend(s string) (netip.Addr, int, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), 0, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		a, err1 := netip.ParseAddr(host)
		p, err2 := strconv.Atoi(port)
		if err1 == nil && err2 == nil && p >= 1 && p <= 65535 {
			return a.Unmap(), p, nil
		}
	}
	return netip.Addr{}, 0, &exitError{code: ExitUsage, msg: fmt.Sprintf("backend %q: want ADDR, ADDR:PORT or [IPv6]:PORT", s)}
}

// findBackend returns the index of backend spec in service s, or -1.
func findBackend(s dlb.FileService, spec string) (int, error) {
	addr, port, err := parseBackend(spec)
	if err != nil {
		return 0, err
	}
	if port == 0 {
		port = s.Port
	}
	for i, b := range s.Backends {
		ba, err := netip.ParseAddr(b.Addr)
		if err != nil {
			continue
		}
		bp := b.Port
		if bp == 0 {
			bp = s.Port
		}
		if ba.Unmap() == addr && bp == port {
			return i, nil
		}
	}
	return -1, nil
}

func backendLabel(s dlb.FileService, b dlb.FileBackend) string {
	p := b.Port
	if p == 0 {
		p = s.Port
	}
	a, _ := netip.ParseAddr(b.Addr)
	return netip.AddrPortFrom(a, uint16(p)).String()
}

func weightArg(s string) (int, error) {
	w, err := strconv.Atoi(s)
	if err != nil || w < 0 || w > 65535 {
		return 0, &exitError{code: ExitUsage, msg: fmt.Sprintf("weight %q: want 0..65535", s)}
	}
	return w, nil
}

func (a *app) lbAddCommand() *cobra.Command {
	var (
		e                            lbEdit
		weight                       int
		mac, vip, protocol, affinity string
		port, tableSize              int
	)
	cmd := &cobra.Command{
		Use:   "add [VNIC] SERVICE BACKEND...",
		Short: "Add backends to a service, or a new service with --vip",
		Long: `Add puts BACKENDs into SERVICE's pool with --weight (and --mac, the
destination MAC of frames DNATed to a backend on the client's L2 segment).
A backend already in the pool is refused: change it with 'vfctl lb weight'.

With --vip, SERVICE is a new service: VIP:--port/--protocol with the
BACKENDs as its pool (a health check, when wanted, is added to the file by
hand). Then the file is checked and written and the instances using it are
reloaded (see 'vfctl lb --help').`,
		Example: `  vfctl lb add vnet3 web 10.0.1.14:8080
  vfctl lb add vnet3 web 10.0.1.15 --weight 2 --mac 52:54:00:00:01:0f
  vfctl lb add --file /etc/vnicfilter/lb.json dns --vip 10.0.0.10 --port 53 --protocol udp 10.0.1.20 10.0.1.21`,
		RunE: a.runE(func(ctx context.Context, args []string) error {
			return a.runEdit(ctx, &e, args, func(f *dlb.File, args []string) (string, error) {
				name, specs := args[0], args[1:]
				var bs []dlb.FileBackend
				for _, spec := range specs {
					addr, p, err := parseBackend(spec)
					if err != nil {
						return "", err
					}
					w := weight
					bs = append(bs, dlb.FileBackend{Addr: addr.String(), Port: p, Weight: &w, MAC: mac})
				}
				if vip != "" {
					if port == 0 {
						return "", usagef("add --vip: give the service's --port")
					}
					s := dlb.FileService{Name: name, VIP: vip, Port: port, Protocol: protocol, Affinity: affinity, Backends: bs}
					if tableSize != 0 {
						s.TableSize = &tableSize
					}
					for _, x := range f.Services {
						if x.Name == name {
							return "", &exitError{code: ExitBadInput, msg: fmt.Sprintf("a service %q exists already", name)}
						}
					}
					f.Services = append(f.Services, s)
					return fmt.Sprintf("added service %s %s:%d/%s with %d backends", name, vip, port, protocol, len(bs)), nil
				}
				i, err := findService(f, name)
				if err != nil {
					return "", err
				}
				s := &f.Services[i]
				var added []string
				for j, b := range bs {
					if k, err := findBackend(*s, specs[j]); err != nil {
						return "", err
					} else if k >= 0 {
						return "", &exitError{code: ExitBadInput, msg: fmt.Sprintf("service %s has backend %s already", name, backendLabel(*s, s.Backends[k])),
							hint: "change its weight with 'vfctl lb weight'"}
					}
					s.Backends = append(s.Backends, b)
					added = append(added, backendLabel(*s, b))
				}
				return fmt.Sprintf("service %s: added %s (weight %d)", name, strings.Join(added, ", "), weight), nil
			})
		}),
	}
	cmd.Args = e.lbArgs("SERVICE", "BACKEND...")
	e.flags(cmd)
	fl := cmd.Flags()
	fl.IntVar(&weight, "weight", 1, "the new backends' `weight` (0..65535; 0 takes no new flows)")
	fl.StringVar(&mac, "mac", "", "destination `MAC` for frames DNATed to the new backends (same L2 segment)")
	fl.StringVar(&vip, "vip", "", "create SERVICE with this virtual `IP`")
	fl.IntVar(&port, "port", 0, "the new service's `port` (with --vip)")
	fl.StringVar(&protocol, "protocol", "tcp", "the new service's `protocol`: tcp or udp (with --vip)")
	fl.StringVar(&affinity, "affinity", "", "the new service's session `affinity`: client or none (with --vip)")
	fl.IntVar(&tableSize, "table-size", 0, "the new service's Maglev table `size`, a prime (with --vip; default 65537)")
	return cmd
}

func (a *app) lbRmCommand() *cobra.Command {
	var e lbEdit
	cmd := &cobra.Command{
		Use:   "rm [VNIC] SERVICE [BACKEND...]",
		Short: "Remove backends from a service, or the whole service",
		Long: `Rm takes BACKENDs out of SERVICE's pool, or removes SERVICE when no
BACKEND is given. New flows go to the remaining backends at once; flows
pinned to a removed backend stay on it until they end (to stop new flows
but keep the backend listed, use 'vfctl lb drain'). The last backend with
a weight above 0 cannot go (an empty pool is refused): remove the service.`,
		Example: `  vfctl lb rm vnet3 web 10.0.1.14:8080
  vfctl lb rm vnet3 dns`,
		RunE: a.runE(func(ctx context.Context, args []string) error {
			return a.runEdit(ctx, &e, args, func(f *dlb.File, args []string) (string, error) {
				i, err := findService(f, args[0])
				if err != nil {
					return "", err
				}
				if len(args) == 1 {
					f.Services = slices.Delete(f.Services, i, i+1)
					return fmt.Sprintf("removed service %s", args[0]), nil
				}
				s := &f.Services[i]
				var gone []string
				for _, spec := range args[1:] {
					k, err := findBackend(*s, spec)
					if err != nil {
						return "", err
					}
					if k < 0 {
						return "", &exitError{code: ExitNotFound, msg: fmt.Sprintf("service %s has no backend %s", args[0], spec)}
					}
					gone = append(gone, backendLabel(*s, s.Backends[k]))
					s.Backends = slices.Delete(s.Backends, k, k+1)
				}
				return fmt.Sprintf("service %s: removed %s", args[0], strings.Join(gone, ", ")), nil
			})
		}),
	}
	cmd.Args = e.lbArgs("SERVICE", "[BACKEND]...")
	e.flags(cmd)
	return cmd
}

// setWeight is the body of weight and drain.
func setWeight(f *dlb.File, service, spec string, w int) (string, error) {
	i, err := findService(f, service)
	if err != nil {
		return "", err
	}
	s := &f.Services[i]
	k, err := findBackend(*s, spec)
	if err != nil {
		return "", err
	}
	if k < 0 {
		return "", &exitError{code: ExitNotFound, msg: fmt.Sprintf("service %s has no backend %s", service, spec)}
	}
	prev := 1
	if s.Backends[k].Weight != nil {
		prev = *s.Backends[k].Weight
	}
	s.Backends[k].Weight = &w
	return fmt.Sprintf("service %s: backend %s weight %d -> %d", service, backendLabel(*s, s.Backends[k]), prev, w), nil
}

func (a *app) lbWeightCommand() *cobra.Command {
	var e lbEdit
	cmd := &cobra.Command{
		Use:   "weight [VNIC] SERVICE BACKEND WEIGHT",
		Short: "Set a backend's weight",
		Long: `Weight sets BACKEND's share of SERVICE's new flows (0..65535; 0 drains
it: no new flows, pinned flows stay). Only new flows follow the new
weights; Maglev moves as few of them as it can.`,
		Example: `  vfctl lb weight vnet3 web 10.0.1.12:8080 3`,
		RunE: a.runE(func(ctx context.Context, args []string) error {
			return a.runEdit(ctx, &e, args, func(f *dlb.File, args []string) (string, error) {
				w, err := weightArg(args[2])
				if err != nil {
					return "", err
				}
				return setWeight(f, args[0], args[1], w)
			})
		}),
	}
	cmd.Args = e.lbArgs("SERVICE", "BACKEND", "WEIGHT")
	e.flags(cmd)
	return cmd
}

func (a *app) lbDrainCommand() *cobra.Command {
	var e lbEdit
	cmd := &cobra.Command{
		Use:   "drain [VNIC] SERVICE BACKEND",
		Short: "Stop new flows to a backend; pinned flows stay",
		Long: `Drain sets BACKEND's weight to 0: it takes no new flows while the flows
pinned to it carry on. 'vfctl lb show' counts them (PINNED); remove the
backend with 'vfctl lb rm' once they are gone, or restore it with
'vfctl lb weight'. The last backend with a weight above 0 cannot be
drained (an empty pool is refused).`,
		Example: `  vfctl lb drain vnet3 web 10.0.1.11:8080
  vfctl lb show vnet3   # wait for PINNED to reach 0`,
		RunE: a.runE(func(ctx context.Context, args []string) error {
			return a.runEdit(ctx, &e, args, func(f *dlb.File, args []string) (string, error) {
				what, err := setWeight(f, args[0], args[1], 0)
				return strings.Replace(what, "weight", "drained, weight", 1), err
			})
		}),
	}
	cmd.Args = e.lbArgs("SERVICE", "BACKEND")
	e.flags(cmd)
	return cmd
}
