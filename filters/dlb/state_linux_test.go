package dlb

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
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

// TestPinsFollowVM moves a client VM with open connections to a VIP to a
// new vNIC whose dlb has a different pool: b3 is gone and b4 has joined
// with a large weight, so Maglev would now send many flows elsewhere. The
// pins move with the VM: a connection to b1 or b2 keeps its backend and
// goes on; a pin to b3 is dropped at import and counted
// (state_pins_dropped_total), and its connection does not reach b3 again.
// Without the import (the control) some kept connections break, which
// shows the pins are what keeps them.
func TestPinsFollowVM(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	for _, move := range []bool{true, false} {
		t.Run(map[bool]string{true: "with-pins", false: "without-pins"}[move], func(t *testing.T) {
			pinsFollow(t, move)
		})
	}
}

func pinsFollow(t *testing.T, move bool) {
	host := testkit.NewHost(t)
	client := host.AddVM(t, "client")
	b := []*testkit.VM{host.AddVM(t, "b1"), host.AddVM(t, "b2"), host.AddVM(t, "b3"), host.AddVM(t, "b4")}
	for _, vm := range b {
		serveName(t, vm)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vipNeighbour := func() {
		if out, err := client.Command(ctx, "ip", "neigh", "replace", e2eVIP, "lladdr", e2eVIPMAC, "dev", "eth0", "nud", "permanent").CombinedOutput(); err != nil {
			t.Fatalf("static neighbour for the VIP: %v: %s", err, out)
		}
	}
	vipNeighbour()
	dir := t.TempDir()
	params := func(name string, pool []*testkit.VM, weights []int) map[string]string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, e2eServices(pool, weights), 0o644); err != nil {
			t.Fatal(err)
		}
		return map[string]string{"services": path, "conntrack_size": "4096"}
	}
	src := client.AttachFilter(t, Descriptor, params("src.json", b[:3], []int{1, 1, 1}))

	type conn struct {
		c    net.Conn
		r    *bufio.Reader
		name string
	}
	var conns []conn
	per := map[string]int{}
	for len(conns) < 60 {
		dctx, dcancel := context.WithTimeout(ctx, 3*time.Second)
		c, err := client.DialTCP(dctx, net.JoinHostPort(e2eVIP, "80"))
		dcancel()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := bufio.NewReader(c)
		c.SetDeadline(time.Now().Add(3 * time.Second))
		name, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn{c, r, strings.TrimSpace(name)})
		per[strings.TrimSpace(name)]++
	}
	if per["b3"] == 0 {
		t.Fatalf("no connection went to b3 (%v): nothing to drop", per)
	}

	// The destination vNIC: b3 gone, b4 in with weight 8.
	newTap := client.Replug(t)
	oldTap := client.TapName
	client.TapName = newTap
	dst := client.AttachFilter(t, Descriptor, params("dst.json", []*testkit.VM{b[0], b[1], b[3]}, []int{1, 1, 8}))
	client.TapName = oldTap
	if move {
		var buf bytes.Buffer
		if err := src.FastPath.(sdk.StateMover).ExportState(&buf); err != nil {
			t.Fatal(err)
		}
		n, err := dst.FastPath.(sdk.StateMover).ImportState(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		kept := 2 * (per["b1"] + per["b2"]) // forward and reverse entries
		if n != kept {
			t.Errorf("imported %d entries, want %d (the pins to b1 and b2, both ways)", n, kept)
		}
		if got := counter(t, dst.FastPath, "state_pins_dropped_total"); got != per["b3"] {
			t.Errorf("state_pins_dropped_total %d, want %d (the pins to b3)", got, per["b3"])
		}
		t.Logf("%d bytes, %d entries imported, %d pins to b3 dropped", buf.Len(), n, per["b3"])
		// The final push's delta: everything touched within an hour is all
		// of it; within a nanosecond, nothing.
		for _, tc := range []struct {
			age  time.Duration
			want uint64
		}{{time.Hour, binary.LittleEndian.Uint64(buf.Bytes()[8:])}, {time.Nanosecond, 0}} {
			var d bytes.Buffer
			if err := src.FastPath.(sdk.StateDeltaExporter).ExportStateSince(&d, tc.age); err != nil {
				t.Fatal(err)
			}
			if got := binary.LittleEndian.Uint64(d.Bytes()[8:]); got != tc.want {
				t.Errorf("pins touched within %v: %d, want %d", tc.age, got, tc.want)
			}
		}
		// A damaged payload is refused and changes nothing.
		if _, err := dst.FastPath.(sdk.StateMover).ImportState(bytes.NewReader(buf.Bytes()[:buf.Len()-5])); err == nil {
			t.Error("truncated payload accepted")
		}
	}
	client.Cutover(t)
	vipNeighbour() // went with the old eth0

	// Every connection echoes a line, all at once (a dead one waits out
	// its deadline).
	var mu sync.Mutex
	var wg sync.WaitGroup
	alive := map[string]int{}
	for i, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.c.SetDeadline(time.Now().Add(3 * time.Second))
			msg := fmt.Sprintf("still %d\n", i)
			if _, err := io.WriteString(c.c, msg); err != nil {
				return
			}
			if got, err := c.r.ReadString('\n'); err == nil && got == msg {
				mu.Lock()
				alive[c.name]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	t.Logf("before the move %v; echoing after it %v", per, alive)
	if alive["b3"] != 0 {
		t.Errorf("%d connections still reach b3, which the destination does not have", alive["b3"])
	}
	kept := per["b1"] + per["b2"]
	switch {
	case move && alive["b1"]+alive["b2"] != kept:
		t.Errorf("with the pins moved, %d of %d connections to b1 and b2 went on", alive["b1"]+alive["b2"], kept)
	case !move && alive["b1"]+alive["b2"] == kept:
		t.Errorf("without the pins all %d connections to b1 and b2 went on: the test cannot tell the difference", kept)
	}
}

// counter reads an unlabelled counter of a dlb instance.
func counter(t *testing.T, fp sdk.FastPath, name string) int {
	t.Helper()
	cs, err := fp.(interface{ Counters() ([]sdk.Counter, error) }).Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name && len(c.Labels) == 0 {
			return int(c.Value)
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}
