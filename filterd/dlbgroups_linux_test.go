package filterd_test

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestDLBPoolFromTag: a VIP whose pool is the host group tag:web. The
// client's connections reach only the VMs tagged web; tagging a second VM
// adds it to the pool, untagging removes it, and the dlb follows without
// its services file being touched.
func TestDLBPoolFromTag(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	client, web1, web2 := host.AddVM(t, "client"), host.AddVM(t, "web1"), host.AddVM(t, "web2")
	d := newDaemon(t, host)
	ctx := context.Background()
	for _, vm := range []*testkit.VM{web1, web2} {
		l, err := vm.ListenTCP(net.JoinHostPort(vm.IPv4.IP.String(), "8080"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		name := vm.Label
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, name+"\n")
				c.Close()
			}
		}()
	}
	// A routed VIP, as in production: the host routes between the VMs
	// (10.99.0.254 on its bridge) and the client reaches the VIP through
	// it. The dlb rewrites the destination at the client's vNIC; the host
	// forwards the frame to the backend; the backend answers the client
	// directly and the dlb restores the VIP on the way in.
	vip := "10.200.0.10"
	if err := host.Do(func() error {
		for _, args := range [][]string{
			{"ip", "addr", "add", "10.99.0.254/24", "dev", host.Bridge},
			{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
		} {
			if out, err := host.Command(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%v: %v %s", args, err, out)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if out, err := client.Command(ctx, "ip", "route", "add", "10.200.0.0/24", "via", "10.99.0.254").CombinedOutput(); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	services := filepath.Join(t.TempDir(), "lb.json")
	if err := os.WriteFile(services, []byte(`{"services": [{"name": "web", "vip": "`+vip+`", "port": 80, "protocol": "tcp",
		"pool_group": "tag:web", "pool_port": 8080, "backends": []}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetLabels(ctx, web1.TapName, api.Labels{Tags: []string{"web"}, Addresses: []string{web1.IPv4.IP.String()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := d.client.SetChain(ctx, client.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "dlb", Params: map[string]string{"services": services}}}}); err != nil {
		t.Fatal(err)
	}
	hits := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			c, err := client.DialTCP(cctx, net.JoinHostPort(vip, "80"))
			cancel()
			if err != nil {
				got["error"]++
				continue
			}
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			b, _ := io.ReadAll(c)
			c.Close()
			got[strings.TrimSpace(string(b))]++
		}
		return got
	}
	if got := hits(20); got["web1"] != 20 {
		t.Fatalf("pool tag:web = {web1}: connections went %v", got)
	}
	if _, err := d.client.SetLabels(ctx, web2.TapName, api.Labels{Tags: []string{"web"}, Addresses: []string{web2.IPv4.IP.String()}}); err != nil {
		t.Fatal(err)
	}
	if got := hits(60); got["web1"] == 0 || got["web2"] == 0 || got["error"] != 0 {
		t.Fatalf("pool tag:web = {web1, web2}: connections went %v", got)
	}
	if _, err := d.client.SetLabels(ctx, web1.TapName, api.Labels{}); err != nil {
		t.Fatal(err)
	}
	if got := hits(20); got["web2"] != 20 {
		t.Fatalf("pool tag:web = {web2}: connections went %v", got)
	}
	// An empty pool: new connections to the VIP fail (dropped, counted).
	if _, err := d.client.SetLabels(ctx, web2.TapName, api.Labels{}); err != nil {
		t.Fatal(err)
	}
	if got := hits(2); got["error"] != 2 {
		t.Fatalf("empty pool: connections went %v", got)
	}
	v, err := d.client.VNIC(ctx, client.TapName)
	if err != nil {
		t.Fatal(err)
	}
	var noBackend float64
	for _, c := range v.Slots[0].Counters {
		if c.Name == "no_backend_total" {
			noBackend += c.Value
		}
	}
	if noBackend == 0 {
		t.Errorf("an empty pool dropped new flows without counting them (counters %+v)", v.Slots[0].Counters)
	}
}
