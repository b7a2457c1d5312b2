package dnsblock

import (
	"net"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestOnTraffic runs the filter's slow path on a VM's real traffic with
// the datapath filterd uses (testkit.AttachSlowPath): queries for blocked
// names never reach the resolver, others do, and other traffic flows.
func TestOnTraffic(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	vm, resolver := host.AddVM(t, "vm"), host.AddVM(t, "resolver")
	b := newBlocker(t, "blocked.example")
	vm.AttachSlowPath(t, b, sdk.DirBoth, sdk.FailClosed)

	var pc net.PacketConn
	if err := resolver.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort(resolver.IPv4.IP.String(), "53"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 512)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			name, _ := questionName(buf[:n])
			got <- name
		}
	}()
	send := func(name string) {
		t.Helper()
		if err := vm.Do(func() error {
			c, err := net.Dial("udp4", net.JoinHostPort(resolver.IPv4.IP.String(), "53"))
			if err != nil {
				return err
			}
			defer c.Close()
			_, err = c.Write(query(name))
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := vm.Ping(t, resolver.IPv4.IP, 2); err != nil {
		t.Fatalf("ping through the slow path: %v", err)
	}
	send("www.blocked.example")
	send("allowed.example")
	select {
	case name := <-got:
		if name != "allowed.example" {
			t.Fatalf("resolver got a query for %q", name)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the allowed query never reached the resolver")
	}
	select {
	case name := <-got:
		t.Fatalf("resolver got a second query, for %q", name)
	case <-time.After(300 * time.Millisecond):
	}
	if b.drops.Load() != 1 || b.queries.Load() != 2 {
		t.Errorf("queries %d, drops %d; want 2 and 1", b.queries.Load(), b.drops.Load())
	}
}
