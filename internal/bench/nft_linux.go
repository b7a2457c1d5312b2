package bench

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// nftTable is the one table an nftables case creates in the host
// namespace; it is deleted after the case, and with the namespace at the
// end of the run whatever happens.
const nftTable = "vfbench"

// bridgeIPv4 is given to the host's bridge while nft-dnat runs:
// br_netfilter re-routes a bridged frame whose destination DNAT changed,
// and needs a route (and a neighbour entry) for the backend on the bridge.
var bridgeIPv4 = mustCIDR("10.77.0.254/24")

// setupNft installs bc's nftables rule set in the host namespace.
//
// Where: the bridge family has no connection tracking on this kernel
// (CONFIG_NF_CONNTRACK_BRIDGE is not set), so the rules go where bridged
// IPv4 does cross netfilter with conntrack: br_netfilter (built in,
// bridge-nf-call-iptables = 1 by default in every namespace) passes frames
// between the bridge's ports through the inet hooks of the host namespace
// — prerouting for NAT, forward for filtering. This is the path
// iptables-era tools (libvirt's nwfilter, Docker) use on a bridge.
func (e *runEnv) setupNft(ctx context.Context, bc benchCase) (undo func() error, err error) {
	var rules string
	var br netlink.Link
	switch bc.nft {
	case nftLinearSet, nftCTSet:
		n := cmp.Or(bc.nftRules, 10000)
		rules = nftLinear(nftTable, e.policy(n, n), bc.nft == nftCTSet)
	case nftSetsSet:
		n := cmp.Or(bc.nftRules, 10000)
		if rules, err = nftSets(nftTable, e.policy(n, n), true); err != nil {
			return nil, err
		}
	case nftDNATSet:
		rules = nftDNAT(nftTable, vipIPv4, vipBackends, []string{fmt.Sprintf("tcp dport { %d, %d, %d }", iperfPort, connPort, rrPort), fmt.Sprintf("udp dport %d", udpPort)})
		h := e.topo.host.handle
		if br, err = h.LinkByName(e.topo.host.bridge); err != nil {
			return nil, fmt.Errorf("find bridge: %w", err)
		}
		if err := h.AddrAdd(br, &netlink.Addr{IPNet: bridgeIPv4}); err != nil {
			return nil, fmt.Errorf("add %s to the bridge: %w", bridgeIPv4, err)
		}
		// Without forwarding, br_netfilter drops the DNATed frame (its
		// route lookup fails) instead of bridging it on; the frames are
		// still bridged, not routed.
		if err := e.setForwarding(true); err != nil {
			_ = h.AddrDel(br, &netlink.Addr{IPNet: bridgeIPv4})
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown nftables set %q", bc.nft)
	}
	undo = func() error {
		err := e.nft(context.Background(), "", "delete", "table", "inet", nftTable)
		if br != nil {
			if aerr := e.topo.host.handle.AddrDel(br, &netlink.Addr{IPNet: bridgeIPv4}); aerr != nil && err == nil {
				err = fmt.Errorf("remove %s from the bridge: %w", bridgeIPv4, aerr)
			}
			if ferr := e.setForwarding(false); ferr != nil && err == nil {
				err = ferr
			}
		}
		return err
	}
	t0 := time.Now()
	if err := e.nft(ctx, rules, "-f", "-"); err != nil {
		_ = undo()
		return nil, err
	}
	e.loaded = time.Since(t0)
	return undo, nil
}

// nft runs the nft command in the host namespace with stdin.
func (e *runEnv) nft(ctx context.Context, stdin string, args ...string) error {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + e.topo.host.ns.path, "--", "nft"}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		// nft repeats the whole offending line: its first error is enough.
		msg, _, _ := strings.Cut(strings.TrimSpace(out.String()), "\n")
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, msg)
	}
	return nil
}

// setForwarding sets net.ipv4.ip_forward of the host namespace.
func (e *runEnv) setForwarding(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return e.topo.host.ns.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte(v), 0o644); err != nil {
			return fmt.Errorf("set ip_forward=%s in the host namespace: %w", v, err)
		}
		return nil
	})
}
