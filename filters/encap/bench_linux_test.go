package encap

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vnicfilter/vnicfilter/filters/encap/enclab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// BenchmarkOverlay compares, between two VMs on two hosts of the same
// underlay, TCP throughput (iperf3, one stream) and the rate of 64-byte UDP
// datagrams received, for:
//
//	routed        no overlay: each VM in its host's subnet, hosts route (the ceiling)
//	encap         the encap filter on both taps (VXLAN-GBP, collect-metadata device)
//	bridge-vxlan  the do-it-yourself setup: a VXLAN device (VNI 100, learning,
//	              flooding to the other host) on each host's bridge with the tap
//
// The three topologies are built side by side and measured in turns
// (routed, encap, bridge-vxlan, routed, …) so that the load of a shared
// machine falls on all of them alike; the figures are medians over the
// turns, and the ratios are what to compare across runs:
//
//	go test -run '^$' -bench Overlay -benchtime 3x ./filters/encap/
func BenchmarkOverlay(b *testing.B) {
	testkit.Need(b, testkit.Root, testkit.BPF, testkit.TCX, testkit.Iperf3)
	cases := []string{"routed", "encap", "bridge-vxlan"}
	type pair struct {
		client, server *testkit.VM
		ip             string
	}
	topo := map[string]pair{}
	for _, c := range cases {
		client, server, ip := benchTopology(b, c)
		server.Iperf3Server(b, 5201)
		topo[c] = pair{client, server, ip}
	}
	tcp, pps := map[string][]float64{}, map[string][]float64{}
	b.ResetTimer()
	for range b.N {
		for _, c := range cases {
			p := topo[c]
			gbps, err := iperfTCP(p.client, p.ip, 2*time.Second)
			if err != nil {
				b.Fatalf("%s: %v", c, err)
			}
			rate, err := udp64(p.client, p.server, p.ip, 2*time.Second)
			if err != nil {
				b.Fatalf("%s: %v", c, err)
			}
			tcp[c] = append(tcp[c], gbps)
			pps[c] = append(pps[c], rate)
		}
	}
	b.StopTimer()
	for _, c := range cases {
		b.ReportMetric(median(tcp[c]), c+"-Gb/s")
		b.ReportMetric(median(pps[c]), c+"-pps")
		b.Logf("%s: TCP %v Gb/s, UDP 64 B %v pps", c, tcp[c], pps[c])
	}
	for _, c := range []string{"routed", "bridge-vxlan"} {
		b.ReportMetric(median(tcp["encap"])/median(tcp[c]), "encap/"+c+"-tcp")
		b.ReportMetric(median(pps["encap"])/median(pps[c]), "encap/"+c+"-pps")
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// benchTopology builds two hosts on an underlay and one VM on each, wired
// as case c; it returns the client VM, the server VM and its address.
func benchTopology(b *testing.B, c string) (*testkit.VM, *testkit.VM, string) {
	ul := newUnderlay(b)
	h1 := ul.addHost(b, c+"-h1", 1, netip.MustParseAddr("192.0.2.1"), underlayMTU)
	h2 := ul.addHost(b, c+"-h2", 2, netip.MustParseAddr("192.0.2.2"), underlayMTU)
	hosts := []*simHost{h1, h2}
	va, vb := h1.AddVM(b, "client"), h2.AddVM(b, "server")
	macA, macB := net.HardwareAddr(mustMAC("02:00:00:00:00:0a")), net.HardwareAddr(mustMAC("02:00:00:00:00:0b"))
	switch c {
	case "routed":
		// 10.1.0.0/24 behind h1, 10.2.0.0/24 behind h2, the bridge as
		// gateway; MTU 1500 end to end.
		for i, h := range hosts {
			gw := netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("10.%d.0.1", i+1)), 24)
			other := netip.PrefixFrom(netip.MustParseAddr(fmt.Sprintf("10.%d.0.0", 2-i)), 24)
			if err := withNS(h, func(ns netns.NsHandle) error { return enclab.Routed(ns, h.Label, h.Bridge, gw, other, hosts[1-i].IP) }); err != nil {
				b.Fatal(err)
			}
		}
		for i, v := range []*testkit.VM{va, vb} {
			mac := []net.HardwareAddr{macA, macB}[i]
			ip := netip.MustParseAddr(fmt.Sprintf("10.%d.0.2", i+1))
			setVMAddrs(b, v.Handle(), "eth0", mac, ip, netip.MustParseAddr(fmt.Sprintf("fd0%d::2", i+1)), underlayMTU)
			eth, err := v.Handle().LinkByName("eth0")
			if err != nil {
				b.Fatal(err)
			}
			gw := net.IPv4(10, byte(i+1), 0, 1)
			if err := v.Handle().RouteAdd(&netlink.Route{LinkIndex: eth.Attrs().Index, Dst: prefixNet(netip.MustParsePrefix("0.0.0.0/0")), Gw: gw}); err != nil {
				b.Fatal(err)
			}
		}
		return va, vb, "10.2.0.2"
	case "encap":
		path := h1.FIB
		raw := fmt.Sprintf(`{"segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]}],
 "entries": [{"vni": 100, "mac": "%s", "host": "192.0.2.1", "ips": ["10.0.0.1"]},
             {"vni": 100, "mac": "%s", "host": "192.0.2.2", "ips": ["10.0.0.2"]}]}`, macA, macB)
		if err := os.WriteFile(path, []byte(raw), 0o644); err != nil {
			b.Fatal(err)
		}
		for i, v := range []*testkit.VM{va, vb} {
			mac := []net.HardwareAddr{macA, macB}[i]
			attach(b, hosts[i], v.TapName, map[string]string{
				ParamVNI: "100", ParamGroup: "10", ParamMAC: mac.String(), ParamFIB: path,
				ParamVXLANDev: vxlanDev, ParamLocalIP: hosts[i].IP.String(),
			})
			setVMAddrs(b, v.Handle(), "eth0", mac, netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i+1)), netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1)), guestMTU(hosts[i]))
		}
		return va, vb, "10.0.0.2"
	case "bridge-vxlan":
		for i, h := range hosts {
			if err := withNS(h, func(ns netns.NsHandle) error {
				return enclab.BridgeVXLAN(ns, h.Label, h.Bridge, h.IP, hosts[1-i].IP, guestMTU(h))
			}); err != nil {
				b.Fatal(err)
			}
		}
		for i, v := range []*testkit.VM{va, vb} {
			mac := []net.HardwareAddr{macA, macB}[i]
			setVMAddrs(b, v.Handle(), "eth0", mac, netip.MustParseAddr(fmt.Sprintf("10.0.0.%d", i+1)), netip.MustParseAddr(fmt.Sprintf("fd00::%d", i+1)), guestMTU(hosts[i]))
		}
		return va, vb, "10.0.0.2"
	}
	b.Fatalf("unknown case %s", c)
	return nil, nil, ""
}

// withNS runs fn with a handle of h's namespace.
func withNS(h *simHost, fn func(netns.NsHandle) error) error {
	ns, err := netns.GetFromPath(h.Path)
	if err != nil {
		return err
	}
	defer ns.Close()
	return fn(ns)
}

func iperfTCP(client *testkit.VM, server string, d time.Duration) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d+20*time.Second)
	defer cancel()
	out, err := client.Command(ctx, "iperf3", "-c", server, "-p", "5201", "-t", strconv.Itoa(int(d.Seconds())), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3: %w\n%s", err, out)
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("iperf3 output: %w", err)
	}
	if r.End.SumReceived.BitsPerSecond == 0 {
		return 0, errors.New("iperf3 received nothing")
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

// udp64 sends 64-byte datagrams from client to server for d and returns
// how many per second the server received.
func udp64(client, server *testkit.VM, serverIP string, d time.Duration) (float64, error) {
	rx, err := server.ListenUDP(":9000")
	if err != nil {
		return 0, err
	}
	defer rx.Close()
	_ = rx.SetReadBuffer(4 << 20)
	tx, err := client.DialUDP(context.Background(), serverIP+":9000")
	if err != nil {
		return 0, err
	}
	defer tx.Close()
	got := make(chan int)
	go func() {
		buf := make([]byte, 2048)
		n := 0
		for {
			_ = rx.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := rx.Read(buf); err != nil {
				got <- n
				return
			}
			n++
		}
	}()
	payload := make([]byte, 64)
	// Warm up (ARP, first packets), then count.
	for range 100 {
		_, _ = tx.Write(payload)
	}
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	for time.Since(start) < d {
		for range 256 {
			_, _ = tx.Write(payload)
		}
	}
	n := <-got
	return float64(n-100) / d.Seconds(), nil
}
