package dlb

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const (
	e2eVIP6   = "fd99::c8"
	e2eVIP    = "10.99.0.200"
	e2eVIPMAC = "02:00:00:00:00:c8"
)

func e2eServices(backends []*testkit.VM, weights []int) []byte {
	var bs, bs6 []map[string]any
	for i, b := range backends {
		bs = append(bs, map[string]any{"addr": b.IPv4.IP.String(), "port": 8080, "weight": weights[i], "mac": b.MAC.String()})
		bs6 = append(bs6, map[string]any{"addr": b.IPv6.IP.String(), "port": 8080, "weight": weights[i], "mac": b.MAC.String()})
	}
	data, _ := json.Marshal(map[string]any{"services": []map[string]any{
		{"name": "web", "vip": e2eVIP, "port": 80, "protocol": "tcp", "table_size": 65537, "backends": bs},
		{"name": "web6", "vip": e2eVIP6, "port": 80, "protocol": "tcp", "table_size": 65537, "backends": bs6},
	}})
	return data
}

// serveName answers every connection with the backend's name and a
// newline, then echoes what it reads until the client closes.
func serveName(t *testing.T, vm *testkit.VM) {
	for _, ip := range []net.IP{vm.IPv4.IP, vm.IPv6.IP} {
		l, err := vm.ListenTCP(net.JoinHostPort(ip.String(), "8080"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go accept(l, vm.Label)
	}
}

func accept(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			if _, err := io.WriteString(c, name+"\n"); err != nil {
				return
			}
			_, _ = io.Copy(c, c)
		}()
	}
}

// TestDLBE2E: a client VM with chain [dlb] on its tap reaches a VIP
// (IPv4 and IPv6) served by 3 backend VMs; 10,000 connections (3,000 over
// IPv6) spread by the weights (the 10,000 within ±5 % of each weight
// share, relative, as issue 8 asks; the 3,000, where sampling noise alone
// is ±2.7 % at one sigma, within ±5 percentage points); then a reload that
// removes one backend leaves established connections (to every backend)
// working, and new connections avoid the removed one.
func TestDLBE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	client := host.AddVM(t, "client")
	backends := []*testkit.VM{host.AddVM(t, "b1"), host.AddVM(t, "b2"), host.AddVM(t, "b3")}
	weights := []int{1, 1, 2}
	for _, b := range backends {
		serveName(t, b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, vip := range []string{e2eVIP, e2eVIP6} {
		if out, err := client.Command(ctx, "ip", "neigh", "replace", vip, "lladdr", e2eVIPMAC, "dev", "eth0", "nud", "permanent").CombinedOutput(); err != nil {
			t.Fatalf("static neighbour for the VIP %s: %v: %s", vip, err, out)
		}
	}

	path := filepath.Join(t.TempDir(), "services.json")
	if err := os.WriteFile(path, e2eServices(backends, weights), 0o644); err != nil {
		t.Fatal(err)
	}
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"services": path, "conntrack_size": "16384"})
	if err != nil {
		t.Fatal(err)
	}
	chain := client.AttachFilter(t, Descriptor, params.Map())
	fp := chain.FastPath

	// dialVIP connects to a VIP and returns the connection and the name of
	// the backend that answered.
	dialVIP := func(vip string) (net.Conn, *bufio.Reader, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := client.DialTCP(ctx, net.JoinHostPort(vip, "80"))
		if err != nil {
			return nil, nil, "", err
		}
		if ra := c.RemoteAddr().(*net.TCPAddr); ra.IP.String() != vip {
			c.Close()
			return nil, nil, "", fmt.Errorf("connected to %v, not the VIP", ra)
		}
		c.SetDeadline(time.Now().Add(3 * time.Second))
		r := bufio.NewReader(c)
		name, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, "", fmt.Errorf("read backend name: %w", err)
		}
		return c, r, strings.TrimSpace(name), nil
	}

	dial := func() (net.Conn, *bufio.Reader, string, error) { return dialVIP(e2eVIP) }
	spread(t, dialVIP, e2eVIP, 10000, backends, weights, true)
	spread(t, dialVIP, e2eVIP6, 3000, backends, weights, false)

	// Established connections, then a reload without b1.
	type open struct {
		c    net.Conn
		r    *bufio.Reader
		name string
	}
	var live []open
	per := map[string]int{}
	for len(live) < 60 {
		c, r, name, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, open{c, r, name})
		per[name]++
	}
	defer func() {
		for _, o := range live {
			o.c.Close()
		}
	}()
	byAddr := map[string]string{}
	for _, b := range backends {
		byAddr[net.JoinHostPort(b.IPv4.IP.String(), "8080")] = b.Label
	}
	// webCounters reads a counter of service web per backend name.
	webCounters := func(name string) map[string]int {
		counters, err := fp.Counters()
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, c := range counters {
			if c.Name == name && c.Labels["service"] == "web" {
				out[byAddr[c.Labels["backend"]]] = int(c.Value)
			}
		}
		return out
	}
	// Pinned flows: at least the open connections, at most the new flows
	// (closed flows stay pinned until their close timeout).
	newBefore, pinned := webCounters("backend_new_flows_total"), webCounters("backend_pinned_flows")
	for _, b := range backends {
		if p := pinned[b.Label]; p < per[b.Label] || p > newBefore[b.Label] {
			t.Errorf("%s: %d pinned flows, want between %d open and %d new", b.Label, p, per[b.Label], newBefore[b.Label])
		}
	}
	t.Logf("before the reload: pinned flows %v, new flows %v", pinned, newBefore)
	if err := os.WriteFile(path, e2eServices(backends[1:], weights[1:]), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fp.(sdk.Reloader).Reload(params); err != nil {
		t.Fatal(err)
	}
	// A bad file is refused and changes nothing.
	if err := os.WriteFile(path, []byte(`{"services": [{"vip": "`+e2eVIP+`", "port": 80, "protocol": "tcp", "backends": []}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fp.(sdk.Reloader).Reload(params); err == nil {
		t.Fatal("reload with an empty pool accepted")
	} else {
		t.Logf("bad reload refused: %v", err)
	}
	for i, o := range live {
		o.c.SetDeadline(time.Now().Add(3 * time.Second))
		msg := fmt.Sprintf("still %s %d\n", o.name, i)
		if _, err := io.WriteString(o.c, msg); err != nil {
			t.Fatalf("connection %d to %s after reload: %v", i, o.name, err)
		}
		got, err := o.r.ReadString('\n')
		if err != nil || got != msg {
			t.Fatalf("connection %d to %s after reload: echo %q, %v", i, o.name, got, err)
		}
	}
	t.Logf("%d established connections (per backend %v) kept their backend across a reload removing b1", len(live), per)
	before := webCounters("backend_new_flows_total")
	after := map[string]int{}
	for range 300 {
		c, _, name, err := dial()
		if err != nil {
			t.Fatalf("after reload: %v", err)
		}
		c.Close()
		after[name]++
	}
	if after["b1"] != 0 {
		t.Errorf("new connections reached removed backend b1: %v", after)
	}
	t.Logf("300 new connections after the reload: %v", after)
	// New flows per backend count on across the reload: exactly the 300
	// more, and 10,360 in all.
	now := webCounters("backend_new_flows_total")
	delta := map[string]int{}
	total := 0
	for name, n := range now {
		if d := n - before[name]; d != 0 {
			delta[name] = d
		}
		total += n
	}
	// b1 left the file with the reload: it is counted no more.
	if fmt.Sprint(delta) != fmt.Sprint(after) || total+newBefore["b1"] != 10000+len(live)+300 {
		t.Errorf("backend_new_flows_total went from %v to %v (%d in all, %d on b1 before), want +%v and %d", before, now, total, newBefore["b1"], after, 10000+len(live)+300)
	}
	counters, err := fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	traffic := map[string]float64{}
	for _, c := range counters {
		if c.Labels["service"] == "web" && c.Labels["direction"] != "" {
			traffic[c.Name+" "+c.Labels["direction"]] = c.Value
		}
	}
	conns := float64(total + newBefore["b1"])
	if traffic["service_packets_total from-vm"] < 3*conns || traffic["service_packets_total to-vm"] < 2*conns ||
		traffic["service_bytes_total from-vm"] < 54*traffic["service_packets_total from-vm"] {
		t.Errorf("service web traffic %v for %v connections", traffic, conns)
	}
	t.Logf("service web: %v; new flows %v", traffic, now)
}

// spread makes conns connections to vip and checks each backend's share
// against its weight share: within ±5 % of it (relative), or ±5
// percentage points when !relative.
func spread(t *testing.T, dial func(string) (net.Conn, *bufio.Reader, string, error), vip string, conns int, backends []*testkit.VM, weights []int, relative bool) {
	t.Helper()
	counts := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	work := make(chan struct{}, conns)
	for range conns {
		work <- struct{}{}
	}
	close(work)
	start := time.Now()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				c, _, name, err := dial(vip)
				if err != nil {
					errs <- err
					continue
				}
				c.Close()
				mu.Lock()
				counts[name]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("connection through %s: %v", vip, err)
	}
	total := 0
	for _, w := range weights {
		total += w
	}
	for i, b := range backends {
		want := float64(weights[i]) / float64(total)
		got := float64(counts[b.Label]) / float64(conns)
		t.Logf("%s: %s (weight %d): %d of %d connections = %.2f%% (want %.2f%%, %+.2f points, %+.1f%% relative)", vip, b.Label, weights[i], counts[b.Label], conns, 100*got, 100*want, 100*(got-want), 100*(got-want)/want)
		switch {
		case relative && math.Abs(got-want) > 0.05*want:
			t.Errorf("%s: share %.4f, want %.4f ± 5 %%", b.Label, got, want)
		case !relative && math.Abs(got-want) > 0.05:
			t.Errorf("%s: share %.3f, want %.3f ± 0.05", b.Label, got, want)
		}
	}
	t.Logf("%s: %d connections in %v", vip, conns, time.Since(start).Round(time.Millisecond))

}
