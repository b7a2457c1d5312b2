package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encap"
	"github.com/vnicfilter/vnicfilter/filters/encap/enclab"
)

// The encap suite (issue 9) measures between two VMs on two hosts: the
// overlay built by the encap filter, against plain routing over the same
// underlay (its baseline: the ceiling) and against the do-it-yourself
// overlay, a Linux bridge with a learning VXLAN device. Each case has its
// own pair of hosts on its own underlay (enclab), built side by side
// before the measurements, so the three are measured in turns like the
// one-host cases and their baselines: routed, encap, routed,
// bridge-vxlan, routed, and again each repetition.
//
// Every pair puts VM A (the client) on host 1 and VM B on host 2, B at
// vmBIPv4 (10.77.0.2) so that the traffic code is the one-host suite's.
// routed: A is 10.77.1.1/24 behind host 1, each host's bridge is the
// gateway of its VM's subnet, the hosts route over the underlay, MTU 1500
// end to end. encap and bridge-vxlan: A and B share 10.77.0.0/24 in
// segment 100, guest MTU 1450 (an IPv4 underlay at 1500, docs/encap.md).
// encap runs a filterd on each host, its forwarding table pushed through
// the API (PUT /v1/encap/fdb), the encap filter on both taps.

// overlayBaseline names the encap suite's baseline in its results.
const overlayBaseline = "routed"

// Underlay addresses of the two hosts of a pair (each pair has its own
// underlay namespace).
var overlayHosts = [2]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")}

const underlayMTU = 1500

// overlayPair is the two-host topology of one case.
type overlayPair struct {
	name    string
	ul      *enclab.Underlay
	hosts   [2]*host
	topo    *topology // a on hosts[0], b on hosts[1]; no host of its own
	daemons [2]*daemon
	// parent is the OS thread the daemons are started from (encap).
	parent *parentThread
}

// parentThread is an OS thread kept for the processes started from it:
// Pdeathsig ends a child when the thread that forked it exits, and Go ends
// a thread when a goroutine locked to it returns. A daemon started from an
// ordinary goroutine dies when its thread is later reused that way, in
// the middle of a run (seen once).
type parentThread struct {
	work chan func()
	done chan struct{}
}

func newParentThread() *parentThread {
	p := &parentThread{work: make(chan func()), done: make(chan struct{})}
	go func() {
		runtime.LockOSThread()
		for f := range p.work {
			f()
		}
		runtime.UnlockOSThread() // the thread lives on
		close(p.done)
	}()
	return p
}

// do runs fn on the thread.
func (p *parentThread) do(fn func()) {
	ran := make(chan struct{})
	p.work <- func() { fn(); close(ran) }
	<-ran
}

// close releases the thread, once the processes started from it are gone.
func (p *parentThread) close() {
	close(p.work)
	<-p.done
}

func (p *overlayPair) Close() error {
	var errs []error
	for i, d := range p.daemons {
		if d != nil {
			errs = append(errs, wrapErr("stop filterd", d.close(false)))
			// The encap receive program and host registry stay
			// attached to vxlan0 after the last instance: remove them.
			h := p.hosts[i]
			errs = append(errs, h.ns.Do(func() error { return encap.DetachDevice(enclab.VXLANDev, encap.DeviceOptions{}) }))
		}
	}
	if p.parent != nil {
		p.parent.close()
	}
	if p.topo != nil {
		for _, v := range []*vm{p.topo.a, p.topo.b} {
			if v != nil {
				errs = append(errs, v.ns.Close())
			}
		}
	}
	for _, h := range p.hosts {
		if h != nil {
			errs = append(errs, h.Close())
		}
	}
	if p.ul != nil {
		errs = append(errs, p.ul.Close())
	}
	return errors.Join(errs...)
}

// newOverlayPair builds case bc's two hosts, their VMs and the case's
// datapath (bin: filterd, for encap).
func newOverlayPair(ctx context.Context, bc benchCase, bin string) (_ *overlayPair, err error) {
	p := &overlayPair{name: bc.name}
	defer func() {
		if err != nil {
			err = errors.Join(err, p.Close())
		}
	}()
	if p.ul, err = enclab.NewUnderlay(); err != nil {
		return nil, err
	}
	suffix := randomHex(3)
	p.topo = &topology{suffix: suffix}
	ipA := vmAIPv4
	if bc.overlay == overlayBaseline {
		ipA = mustCIDR("10.77.1.1/24")
	}
	for i := range p.hosts {
		h, err := newHost(fmt.Sprintf("%d-%s", i+1, suffix))
		if err != nil {
			return nil, err
		}
		p.hosts[i] = h
		if err := p.ul.Plug(h.ns.handle, h.ns.name, i+1, overlayHosts[i], underlayMTU); err != nil {
			return nil, err
		}
		// addVM puts the VM on t.host.
		on := &topology{suffix: suffix, host: h}
		label, tap, ip4, ip6 := "a", "vnetA-"+suffix, ipA, vmAIPv6
		if i == 1 {
			label, tap, ip4, ip6 = "b", "vnetB-"+suffix, vmBIPv4, vmBIPv6
		}
		v, err := on.addVM(label, tap, ip4, ip6)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			p.topo.a = v
		} else {
			p.topo.b = v
		}
	}
	switch bc.overlay {
	case overlayBaseline:
		return p, p.routed()
	case "encap":
		return p, p.encap(ctx, bin)
	case "bridge-vxlan":
		for i, h := range p.hosts {
			if err := enclab.BridgeVXLAN(h.ns.handle, h.ns.name, h.bridge, overlayHosts[i], overlayHosts[1-i], enclab.GuestMTU(overlayHosts[i], underlayMTU)); err != nil {
				return nil, err
			}
		}
		return p, p.guestMTU()
	}
	return nil, fmt.Errorf("unknown overlay case %q", bc.overlay)
}

// routed: each host's bridge is its VM's gateway, the hosts route.
func (p *overlayPair) routed() error {
	subnets := [2]*net.IPNet{p.topo.a.ip4, p.topo.b.ip4}
	for i, h := range p.hosts {
		gw := gateway(subnets[i])
		if err := enclab.Routed(h.ns.handle, h.ns.name, h.bridge, gw, prefixOf(subnets[1-i]), overlayHosts[1-i]); err != nil {
			return err
		}
		v := []*vm{p.topo.a, p.topo.b}[i]
		err := withVMHandle(v, func(vh *netlink.Handle) error {
			eth, err := vh.LinkByName(vmIfName)
			if err != nil {
				return err
			}
			return vh.RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: enclab.PrefixNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw.Addr().AsSlice()})
		})
		if err != nil {
			return fmt.Errorf("default route in %s: %w", v.ns.name, err)
		}
	}
	return nil
}

// encap: a filterd per host, the table pushed through its API, the encap
// filter on both taps.
func (p *overlayPair) encap(ctx context.Context, bin string) error {
	if err := p.guestMTU(); err != nil {
		return err
	}
	vms := []*vm{p.topo.a, p.topo.b}
	var macs [2]string
	for i, v := range vms {
		err := withVMHandle(v, func(vh *netlink.Handle) error {
			eth, err := vh.LinkByName(vmIfName)
			if err == nil {
				macs[i] = eth.Attrs().HardwareAddr.String()
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	table := api.EncapFDB{
		Segments: []api.EncapFDBSegment{{VNI: 100, Hosts: []string{overlayHosts[0].String(), overlayHosts[1].String()}}},
	}
	for i, v := range vms {
		table.Entries = append(table.Entries, api.EncapFDBEntry{VNI: 100, MAC: macs[i], Host: overlayHosts[i].String(), IPs: []string{v.ip4.IP.String()}})
	}
	body, err := json.Marshal(table)
	if err != nil {
		return err
	}
	p.parent = newParentThread()
	for i, h := range p.hosts {
		var d *daemon
		var err error
		p.parent.do(func() { d, err = startDaemon(ctx, bin, h) })
		if err != nil {
			return err
		}
		p.daemons[i] = d
		if _, err := d.client.SetEncapFDB(ctx, body, 0); err != nil {
			return d.wrap("push the forwarding table", err)
		}
		err = d.setChain(ctx, vms[i].tap, []api.FilterSpec{{Name: encap.Name, Params: map[string]string{
			encap.ParamVNI: "100", encap.ParamGroup: "10", encap.ParamMAC: macs[i], encap.ParamLocalIP: overlayHosts[i].String(),
		}}})
		if err != nil {
			return err
		}
	}
	return nil
}

// guestMTU gives both VMs the MTU that fits the underlay once wrapped.
func (p *overlayPair) guestMTU() error {
	for _, v := range []*vm{p.topo.a, p.topo.b} {
		err := withVMHandle(v, func(vh *netlink.Handle) error {
			eth, err := vh.LinkByName(vmIfName)
			if err != nil {
				return err
			}
			return vh.LinkSetMTU(eth, enclab.GuestMTU(overlayHosts[0], underlayMTU))
		})
		if err != nil {
			return fmt.Errorf("guest MTU in %s: %w", v.ns.name, err)
		}
	}
	return nil
}

func withVMHandle(v *vm, fn func(*netlink.Handle) error) error {
	vh, err := netlink.NewHandleAt(v.ns.handle)
	if err != nil {
		return err
	}
	defer vh.Close()
	return fn(vh)
}

// gateway is the .254 of n, with n's prefix.
func gateway(n *net.IPNet) netip.Prefix {
	p := prefixOf(n)
	b := p.Masked().Addr().As4()
	b[3] = 254
	return netip.PrefixFrom(netip.AddrFrom4(b), p.Bits())
}

func prefixOf(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP.To4())
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones)
}

// runOverlay builds the encap suite's pairs, measures them in turns and
// prints the results: the encap cases against routed (the baseline
// column), and encap against bridge-vxlan.
func runOverlay(ctx context.Context, o Options, cs []benchCase) (err error) {
	if err := preflight(encapMetrics, cs); err != nil {
		return err
	}
	var bin string
	for _, bc := range cs {
		if bc.overlay == "encap" {
			if bin, err = findFilterd(o.Filterd); err != nil {
				return err
			}
		}
	}
	base := benchCase{name: overlayBaseline, overlay: overlayBaseline, metrics: encapMetrics}
	pairs := map[string]*overlayPair{}
	defer func() {
		for _, p := range pairs {
			err = errors.Join(err, wrapErr("remove "+p.name+" topology", p.Close()))
		}
	}()
	c := newCollected()
	for _, bc := range append([]benchCase{base}, cs...) {
		t0 := time.Now()
		p, err := newOverlayPair(ctx, bc, bin)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if bc.name == overlayBaseline {
				return fmt.Errorf("build the routed topology: %w", err)
			}
			c.skipped[bc.name] = fmt.Sprintf("set up: %v", err)
			logf(o.Log, "NOTE: %s skipped: %s", bc.name, c.skipped[bc.name])
			continue
		}
		pairs[bc.name] = p
		logf(o.Log, "%s: host 1 %s, host 2 %s, underlay %s (built in %.1f s)", bc.name, p.hosts[0].ns.name, p.hosts[1].ns.name, p.ul.Name, time.Since(t0).Seconds())
		for i, d := range p.daemons {
			if d != nil {
				logf(o.Log, "%s: filterd on host %d: bpffs %s, files %s", bc.name, i+1, d.bpffs, d.tmp)
			}
		}
	}
	envs := map[string]*runEnv{}
	for name, p := range pairs {
		e, err := newRunEnv(o, p.topo, p.daemons[0])
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, e.close()) }()
		envs[name] = e
	}
	for rep := range o.Reps {
		c.base = append(c.base, nil)
		for k := 0; k <= len(cs); k++ {
			s, err := measureAll(ctx, o, envs[overlayBaseline], caseMetrics(base, o.Metrics), rep, base, c)
			if err != nil {
				return err
			}
			c.base[rep] = append(c.base[rep], s)
			if k == len(cs) {
				break
			}
			bc := cs[k]
			if _, ok := c.skipped[bc.name]; ok {
				continue
			}
			if c.cases[bc.name] == nil {
				c.cases[bc.name] = make([]sample, o.Reps)
			}
			if c.cases[bc.name][rep], err = measureAll(ctx, o, envs[bc.name], caseMetrics(bc, o.Metrics), rep, bc, c); err != nil {
				return err
			}
		}
	}
	var mcs []measuredCase
	for _, bc := range cs {
		mcs = append(mcs, measuredCase{bc.name, reported(caseMetrics(bc, o.Metrics))})
	}
	rs := summarize(c, reported(caseMetrics(base, o.Metrics)), mcs)
	for i := range rs {
		if rs[i].Case == baselineCase {
			rs[i].Case = overlayBaseline
		}
	}
	title := fmt.Sprintf("vfbench %s, encap suite: %d rep(s) x %v per measurement\n"+
		"two VMs on two hosts; values are medians; the baseline is plain routing over the same underlay (routed),\n"+
		"measured just before and after each case; \"encap vs bridge-vxlan\" compares the two overlays",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), o.Reps, o.Duration)
	return printResults(o, title, rs, nil)
}

// splitOverlay separates the encap suite's cases from the one-host ones
// (baseline first, as selectedCases returns them).
func splitOverlay(sel []benchCase) (oneHost, overlay []benchCase) {
	for _, c := range sel {
		if c.overlay != "" {
			overlay = append(overlay, c)
		} else {
			oneHost = append(oneHost, c)
		}
	}
	return oneHost, overlay
}
