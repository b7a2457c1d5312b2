package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	fapi "github.com/vnicfilter/vnicfilter/filterd/api"
	mapi "github.com/vnicfilter/vnicfilter/manager/api"
)

// VMName is the VM a vNIC belongs to, from the owner of its chain
// ("libvirt:web01", or "vfagent:web01" for chains the agent created) or,
// without one, the vNIC's own name.
func VMName(l fapi.VNICLabels) string {
	if _, vm, ok := strings.Cut(l.Owner, ":"); ok && vm != "" {
		return vm
	}
	return l.VNIC
}

// Inventory reads what runs on the host from filterd: every vNIC with a
// chain or labels, grouped by VM, with the addresses its labels carry.
func Inventory(ctx context.Context, fd *fapi.Client) (mapi.Inventory, error) {
	ls, err := fd.Labels(ctx)
	if err != nil {
		return mapi.Inventory{}, err
	}
	byVM := map[string]*mapi.VM{}
	for _, l := range ls {
		name := VMName(l)
		vm := byVM[name]
		if vm == nil {
			vm = &mapi.VM{Name: name, VNICs: []mapi.VNIC{}}
			byVM[name] = vm
		}
		vm.VNICs = append(vm.VNICs, mapi.VNIC{Name: l.VNIC, MAC: l.MAC, IPs: l.Addresses})
	}
	inv := mapi.Inventory{VMs: make([]mapi.VM, 0, len(byVM))}
	for _, vm := range byVM {
		inv.VMs = append(inv.VMs, *vm)
	}
	sort.Slice(inv.VMs, func(i, j int) bool { return inv.VMs[i].Name < inv.VMs[j].Name })
	return inv, nil
}

// Tunnel reads the host's encryption tunnel from filterd (GET
// /v1/encrypt/host): its public key, and as endpoint the one on underlay
// (invalid: the only one filterd lists). It returns nil, and why, when
// there is none to report.
func Tunnel(ctx context.Context, fd *fapi.Client, underlay netip.Addr) (*mapi.Tunnel, error) {
	h, err := fd.EncryptHost(ctx)
	if err != nil {
		return nil, err
	}
	var eps []string
	for _, e := range h.Endpoints {
		ap, err := netip.ParseAddrPort(e.Endpoint)
		if err != nil {
			continue
		}
		if !underlay.IsValid() || ap.Addr() == underlay {
			eps = append(eps, e.Endpoint)
		}
	}
	switch {
	case len(eps) == 1:
		return &mapi.Tunnel{PublicKey: h.PublicKey, Endpoint: eps[0], KeyCreated: h.KeyCreated.UTC()}, nil
	case underlay.IsValid():
		return nil, fmt.Errorf("filterd lists no tunnel endpoint on the underlay address %s (it listens on %d addresses)", underlay, len(h.Endpoints))
	default:
		return nil, fmt.Errorf("filterd lists %d tunnel endpoints: start the agent with --underlay to choose", len(h.Endpoints))
	}
}

// ReportInventory reports the inventory now if it changed since the last
// report (or was never reported by this process).
func (a *Agent) ReportInventory(ctx context.Context) error {
	inv, err := Inventory(ctx, a.opts.Filterd)
	if err != nil {
		return err
	}
	if a.opts.Underlay.IsValid() {
		inv.Underlay = a.opts.Underlay.String()
	}
	tun, terr := Tunnel(ctx, a.opts.Filterd, a.opts.Underlay)
	inv.Tunnel = tun
	a.mu.Lock()
	if terr != nil && terr.Error() != a.tunnelErr {
		a.log.Warn("no encryption tunnel to report", "err", terr)
	}
	if terr != nil {
		a.tunnelErr = terr.Error()
	} else {
		a.tunnelErr = ""
	}
	a.mu.Unlock()
	data, _ := json.Marshal(inv)
	a.mu.Lock()
	same := bytes.Equal(data, a.lastInventory)
	a.mu.Unlock()
	if same {
		return nil
	}
	if _, err := a.opts.Manager.PutInventory(ctx, inv); err != nil {
		return err
	}
	a.mu.Lock()
	a.lastInventory = data
	a.mu.Unlock()
	n := 0
	for _, vm := range inv.VMs {
		n += len(vm.VNICs)
	}
	a.log.Info("inventory reported", "vms", len(inv.VMs), "vnics", n)
	return nil
}

func (a *Agent) inventoryLoop(ctx context.Context) {
	t := time.NewTicker(a.opts.InventoryInterval)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, CallTimeout)
		if err := a.ReportInventory(rctx); err != nil && ctx.Err() == nil {
			a.log.Warn("report inventory", "err", err)
		}
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Counters reads every chain's counters from filterd.
func Counters(ctx context.Context, fd *fapi.Client) (mapi.Counters, error) {
	vs, err := fd.VNICs(ctx)
	if err != nil {
		return mapi.Counters{}, err
	}
	out := mapi.Counters{VNICs: make([]mapi.VNICCounters, 0, len(vs))}
	for _, v := range vs {
		d, err := fd.VNIC(ctx, v.Name)
		if err != nil {
			continue // detached in between
		}
		c := mapi.VNICCounters{VNIC: v.Name, Packets: map[string]uint64{}, Bytes: map[string]uint64{}}
		for dir, cc := range d.Chain {
			for what, n := range map[string]fapi.Counter{"entered": cc.Entered, "passed": cc.Passed, "dropped": cc.Dropped} {
				c.Packets[dir+"."+what] = n.Packets
				c.Bytes[dir+"."+what] = n.Bytes
			}
		}
		out.VNICs = append(out.VNICs, c)
	}
	return out, nil
}

func (a *Agent) countersLoop(ctx context.Context) {
	if a.opts.CountersInterval < 0 {
		return
	}
	t := time.NewTicker(a.opts.CountersInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, CallTimeout)
		cs, err := Counters(rctx, a.opts.Filterd)
		if err == nil {
			err = a.opts.Manager.PutCounters(rctx, cs)
		}
		cancel()
		if err != nil && ctx.Err() == nil {
			a.log.Warn("report counters", "err", err)
		}
	}
}
