package filterd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encap"
	"github.com/vnicfilter/vnicfilter/filters/encap/enclab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// encapHost is a simulated hypervisor of the encap lab with its filterd.
type encapHost struct {
	*testkit.Host
	ip netip.Addr
	d  *daemon
}

const (
	macRed1 = "02:00:00:00:01:01" // red1, and blue1 in the other segment
	macRed2 = "02:00:00:00:01:02"
)

// encapTable is the lab's table with red1 on host red1At.
func encapTable(gen uint64, hosts []*encapHost, red1At int) string {
	return fmt.Sprintf(`{"generation": %d,
 "segments": [{"vni": 100, "hosts": ["%s", "%s", "%s"]},
              {"vni": 200, "hosts": ["%s"]}],
 "entries": [{"vni": 100, "mac": "%s", "host": "%s", "ips": ["10.0.0.1"]},
             {"vni": 100, "mac": "%s", "host": "%s", "ips": ["10.0.0.2"]},
             {"vni": 200, "mac": "%s", "host": "%s", "ips": ["10.0.0.1"]}]}`,
		gen, hosts[0].ip, hosts[1].ip, hosts[2].ip, hosts[1].ip,
		macRed1, hosts[red1At].ip, macRed2, hosts[1].ip, macRed1, hosts[1].ip)
}

// TestEncapFDBAPI runs the encap forwarding table through filterd's API on
// three simulated hosts, each with its own filterd: the instances take the
// pushed table (no file at all), a VM moved by changing its entry through
// the API (not a file) answers again within the bound, bad
// changes are refused with the live maps read back unchanged, the table
// survives a restart, and vfctl encap fdb drives it.
func TestEncapFDBAPI(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.TCX)
	ctx := context.Background()
	ul, err := enclab.NewUnderlay()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ul.Close() })
	var hosts []*encapHost
	for i := 1; i <= 3; i++ {
		h := &encapHost{Host: testkit.NewHost(t), ip: netip.MustParseAddr(fmt.Sprintf("192.0.2.%d", i))}
		ns, err := netns.GetFromPath(h.Path)
		if err != nil {
			t.Fatal(err)
		}
		err = ul.Plug(ns, fmt.Sprintf("h%d", i), i, h.ip, 1500)
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
		// After filterd's own cleanup (LIFO): the receive program and
		// the host registry go last.
		t.Cleanup(func() {
			_ = h.Do(func() error { return encap.DetachDevice(enclab.VXLANDev, encap.DeviceOptions{}) })
		})
		h.d = newDaemon(t, h.Host)
		hosts = append(hosts, h)
	}
	// No table yet: GET says so, and an instance without a fib file is
	// refused.
	if _, err := hosts[0].d.client.EncapFDB(ctx, 0); !api.IsCode(err, api.CodeNoTable) {
		t.Fatalf("GET before any table: %v, want %s", err, api.CodeNoTable)
	}
	red1 := addSegVM(t, hosts[0], "red1", macRed1, "10.0.0.1")
	red2 := addSegVM(t, hosts[1], "red2", macRed2, "10.0.0.2")
	blue1 := addSegVM(t, hosts[1], "blue1", macRed1, "10.0.0.1")
	red1new := addSegVM(t, hosts[2], "red1-moved", macRed1, "10.0.0.1") // where red1 will run

	_, err = hosts[1].d.client.SetChain(ctx, red2.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "encap", Params: map[string]string{
		"vni": "100", "mac": macRed2, "local_ip": hosts[1].ip.String()}}}})
	if !api.IsCode(err, api.CodeInvalidParam) || !strings.Contains(err.Error(), "no forwarding table") {
		t.Fatalf("encap with neither a fib file nor a pushed table: %v", err)
	}
	// blue1 starts from a file, before any push: the first push must
	// reach it too.
	fib := filepath.Join(t.TempDir(), "fib.json")
	if err := os.WriteFile(fib, []byte(`{"segments": [{"vni": 200, "hosts": ["192.0.2.2"]}], "entries": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	attachEncap(t, hosts[1], blue1, macRed1, 200, 20, "fib", fib)
	if got := liveTables(t, hosts[1].d, blue1.TapName); len(got.Neighbors) != 0 {
		t.Fatalf("blue1 from its file: %+v", got)
	}
	for _, h := range hosts {
		ch, err := h.d.client.SetEncapFDB(ctx, []byte(encapTable(0, hosts, 0)), 0)
		if err != nil {
			t.Fatalf("PUT table on %s: %v", h.ip, err)
		}
		if ch.Generation != 1 {
			t.Fatalf("first table has generation %d, want 1", ch.Generation)
		}
		if h == hosts[1] && !reflect.DeepEqual(ch.Updated, []string{blue1.TapName + " (segment 200)"}) {
			t.Errorf("first push on h2 updated %q, want blue1's instance", ch.Updated)
		}
	}
	if got := liveTables(t, hosts[1].d, blue1.TapName); len(got.Neighbors) != 1 || got.Neighbors[0].IP != "10.0.0.1" {
		t.Errorf("blue1 after the first push: %+v, want the pushed table's 10.0.0.1", got.Neighbors)
	}
	attachEncap(t, hosts[0], red1, macRed1, 100, 10)
	attachEncap(t, hosts[1], red2, macRed2, 100, 10)

	// UDP echo in red1 ("old"), its moved self ("new") and blue1 ("blue").
	for _, e := range []struct {
		vm  *testkit.VM
		tag string
	}{{red1, "old"}, {red1new, "new"}, {blue1, "blue"}} {
		echo(t, e.vm, e.tag)
	}
	p := startProbe(t, red2, "10.0.0.1:7007")
	if err := p.wait("old", 5*time.Second); err != nil {
		t.Fatalf("red2 -> red1 across hosts before the move: %v", err)
	}

	t.Run("move", func(t *testing.T) {
		start := time.Now()
		if err := hosts[0].d.client.Detach(ctx, red1.TapName); err != nil {
			t.Fatal(err)
		}
		attachEncap(t, hosts[2], red1new, macRed1, 100, 10)
		move := api.EncapFDB{Entries: []api.EncapFDBEntry{{VNI: 100, MAC: macRed1, Host: hosts[2].ip.String(), IPs: []string{"10.0.0.1"}}}}
		var wg sync.WaitGroup
		errs := make([]error, len(hosts))
		for i, h := range hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ch, err := h.d.client.AddEncapFDB(ctx, move, 1)
				if err == nil && ch.Generation != 2 {
					err = fmt.Errorf("generation %d after the move, want 2", ch.Generation)
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		control := time.Since(start)
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if err := p.wait("new", 2*time.Second); err != nil {
			t.Fatalf("red1 on h3 after the move: %v", err)
		}
		restored := p.first("new").Sub(start)
		t.Logf("move: detach + attach + 3 API updates took %v; first reply from h3 %v after the move began", control, restored)
		if restored > time.Second {
			t.Errorf("connectivity restored after %v, want < 1 s (issue 9)", restored)
		}
		if p.saw("blue") {
			t.Error("red2 got an answer from blue1, in the other segment")
		}
	})

	t.Run("bad changes leave the maps untouched", func(t *testing.T) {
		d := hosts[1].d
		before := liveTables(t, d, red2.TapName)
		beforeBlue := liveTables(t, d, blue1.TapName)
		tbl, err := d.client.EncapFDB(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		gen := tbl.Generation
		bad := []struct {
			name string
			do   func() error
			code string
			want string
		}{
			{"VNI out of range", func() error {
				_, err := d.client.SetEncapFDB(ctx, []byte(`{"segments": [{"vni": 16777216, "hosts": ["192.0.2.1"]}], "entries": []}`), 0)
				return err
			}, api.CodeInvalidParam, "request body:1:23: segments[0].vni: VNI 16777216 out of range 1-16777215"},
			{"unknown host", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Entries: []api.EncapFDBEntry{{VNI: 200, MAC: "02:00:00:00:02:09", Host: "192.0.2.1"}}}, 0)
				return err
			}, api.CodeInvalidParam, "entries[0].host: unknown host 192.0.2.1: not a member of segment 200 (hosts: 192.0.2.2)"},
			{"same MAC to two hosts", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Entries: []api.EncapFDBEntry{
					{VNI: 100, MAC: "02:00:00:00:01:09", Host: "192.0.2.1"},
					{VNI: 100, MAC: "02:00:00:00:01:09", Host: "192.0.2.3"}}}, 0)
				return err
			}, api.CodeInvalidParam, "entries[1].mac: conflicting entries: 02:00:00:00:01:09 in segment 100 is also placed by entries[0].mac"},
			{"address claimed twice", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Entries: []api.EncapFDBEntry{{VNI: 100, MAC: "02:00:00:00:01:09", Host: "192.0.2.1", IPs: []string{"10.0.0.2"}}}}, 0)
				return err
			}, api.CodeInvalidParam, "conflicting entries: 10.0.0.2 in segment 100 is also claimed by"},
			{"bad MAC", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Entries: []api.EncapFDBEntry{{VNI: 100, MAC: "02:00:00:00:01", Host: "192.0.2.1"}}}, 0)
				return err
			}, api.CodeInvalidParam, `entries[0].mac: invalid Ethernet address "02:00:00:00:01"`},
			{"segment dropping a host its entries are on", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Segments: []api.EncapFDBSegment{{VNI: 200, Hosts: []string{"192.0.2.3"}}}}, 0)
				return err
			}, api.CodeInvalidParam, "entry (vni 200, mac 02:00:00:00:01:01).host: unknown host 192.0.2.2: not a member of segment 200 (hosts: 192.0.2.3)"},
			{"a local vNIC cannot take the table", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Segments: []api.EncapFDBSegment{{VNI: 100, Hosts: []string{"192.0.2.1", "192.0.2.2", "192.0.2.3", "2001:db8::4"}}}}, 0)
				return err
			}, api.CodeInvalidParam, "vNIC " + red2.TapName + " (segment 100): segment 100: host 2001:db8::4 is not of the address family of local_ip 192.0.2.2"},
			{"stale generation (PUT)", func() error {
				_, err := d.client.SetEncapFDB(ctx, []byte(encapTable(gen, hosts, 2)), 0)
				return err
			}, api.CodeStaleGeneration, fmt.Sprintf("table generation %d is not above the live generation %d", gen, gen)},
			{"stale if_generation (PUT)", func() error {
				_, err := d.client.SetEncapFDB(ctx, []byte(encapTable(0, hosts, 2)), gen-1)
				return err
			}, api.CodeStaleGeneration, fmt.Sprintf("made against generation %d, the live one is %d", gen-1, gen)},
			{"stale generation (POST)", func() error {
				_, err := d.client.AddEncapFDB(ctx, api.EncapFDB{Entries: []api.EncapFDBEntry{{VNI: 100, MAC: "02:00:00:00:01:09", Host: "192.0.2.1"}}}, gen-1)
				return err
			}, api.CodeStaleGeneration, "made against generation"},
			{"no such entry", func() error {
				_, err := d.client.DeleteEncapFDBEntry(ctx, 100, "02:00:00:00:01:77", 0)
				return err
			}, api.CodeNoEntry, "no entry for 02:00:00:00:01:77 in segment 100"},
			{"segment with entries", func() error {
				_, err := d.client.DeleteEncapFDBSegment(ctx, 200, 0)
				return err
			}, api.CodeInvalidParam, "segment 200 still has 1 entries"},
		}
		for _, b := range bad {
			err := b.do()
			if !api.IsCode(err, b.code) || !strings.Contains(fmt.Sprint(err), b.want) {
				t.Errorf("%s: got %v, want %s containing %q", b.name, err, b.code, b.want)
			}
		}
		after, err := d.client.EncapFDB(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(tbl, after) {
			t.Errorf("the table changed under refused requests:\nbefore %+v\nafter  %+v", tbl, after)
		}
		if got := liveTables(t, d, red2.TapName); !reflect.DeepEqual(before, got) {
			t.Errorf("red2's maps changed under refused requests:\nbefore %+v\nafter  %+v", before, got)
		}
		if got := liveTables(t, d, blue1.TapName); !reflect.DeepEqual(beforeBlue, got) {
			t.Errorf("blue1's maps changed under refused requests:\nbefore %+v\nafter  %+v", beforeBlue, got)
		}
		// And red2 still reaches red1 on h3.
		p.reset()
		if err := p.wait("new", 2*time.Second); err != nil {
			t.Errorf("red2 -> red1 after the refused changes: %v", err)
		}
	})

	t.Run("restart keeps the table", func(t *testing.T) {
		d := hosts[1].d
		before, err := d.client.EncapFDB(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		maps := liveTables(t, d, red2.TapName)
		d.kill()
		d.start()
		after, err := d.client.EncapFDB(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Errorf("table after a restart:\n%+v\nwant\n%+v", after, before)
		}
		got := liveTables(t, d, red2.TapName)
		maps.Generation, got.Generation = 0, 0 // the adopted instance re-wrote it into the other half
		if !reflect.DeepEqual(maps, got) {
			t.Errorf("red2's maps after a restart:\n%+v\nwant\n%+v", got, maps)
		}
		p.reset()
		if err := p.wait("new", 2*time.Second); err != nil {
			t.Errorf("red2 -> red1 after filterd restarted: %v", err)
		}
	})

	t.Run("vfctl", func(t *testing.T) {
		d := hosts[1].d
		run := func(wantExit int, args ...string) string {
			t.Helper()
			out, err := d.vfctl(args...)
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatalf("vfctl %s: %v", strings.Join(args, " "), err)
			}
			if code != wantExit {
				t.Fatalf("vfctl %s: exit %d, want %d:\n%s", strings.Join(args, " "), code, wantExit, out)
			}
			return out
		}
		var shown api.EncapFDB
		if err := json.Unmarshal([]byte(run(0, "-o", "json", "encap", "fdb", "show")), &shown); err != nil {
			t.Fatal(err)
		}
		if shown.Generation != 2 || len(shown.Entries) != 3 {
			t.Fatalf("vfctl encap fdb show: %+v, want generation 2 with 3 entries", shown)
		}
		if out := run(0, "encap", "fdb", "show", "--vni", "200"); !strings.Contains(out, macRed1) || strings.Contains(out, macRed2) {
			t.Errorf("show --vni 200:\n%s", out)
		}
		run(4, "encap", "fdb", "show", "--vni", "300")
		out := run(0, "encap", "fdb", "add", "--vni", "100", "--mac", "02:00:00:00:01:09", "--host", "192.0.2.1", "--ip", "10.0.0.9")
		if !strings.Contains(out, "generation 3;") || !strings.Contains(out, red2.TapName+" (segment 100)") {
			t.Errorf("add:\n%s", out)
		}
		if got := liveTables(t, d, red2.TapName); !hasRemote(got.Remote, "02:00:00:00:01:09 192.0.2.1") {
			t.Errorf("red2's maps after vfctl encap fdb add: %+v", got.Remote)
		}
		if out := run(5, "encap", "fdb", "add", "--vni", "100", "--mac", "02:00:00:00:01:0a", "--host", "192.0.2.9"); !strings.Contains(out, "unknown host 192.0.2.9") {
			t.Errorf("add with an unknown host:\n%s", out)
		}
		run(5, "encap", "fdb", "add", "--if-generation", "2", "--vni", "100", "--mac", "02:00:00:00:01:0a", "--host", "192.0.2.1")
		run(0, "encap", "fdb", "del", "100", "02:00:00:00:01:09")
		if got := liveTables(t, d, red2.TapName); hasRemote(got.Remote, "02:00:00:00:01:09 192.0.2.1") {
			t.Errorf("red2's maps after vfctl encap fdb del: %+v", got.Remote)
		}
		run(4, "encap", "fdb", "del", "100", "02:00:00:00:01:09")
		dir := t.TempDir()
		badFile := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(badFile, []byte("{\"segments\": [{\"vni\": 100, \"hosts\": [\"192.0.2.1\"]}],\n \"entries\": [{\"vni\": 100, \"mac\": \"02:00:00:00:01:01\", \"host\": \"192.0.2.7\"}]}"), 0o644); err != nil {
			t.Fatal(err)
		}
		if out := run(5, "encap", "fdb", "set", badFile); !strings.Contains(out, badFile+":2:") || !strings.Contains(out, "entries[0].host: unknown host 192.0.2.7") {
			t.Errorf("set with a bad file:\n%s", out)
		}
		good := filepath.Join(dir, "fib.json")
		if err := os.WriteFile(good, []byte(encapTable(0, hosts, 2)), 0o644); err != nil {
			t.Fatal(err)
		}
		run(5, "encap", "fdb", "set", "--if-generation", "3", good)
		if out := run(0, "encap", "fdb", "set", "--if-generation", "4", good); !strings.Contains(out, "generation 5;") {
			t.Errorf("set:\n%s", out)
		}
		run(4, "encap", "fdb", "del", "--segment", "300")
	})

	t.Run("drop back to the files", func(t *testing.T) {
		d := hosts[1].d
		before := liveTables(t, d, red2.TapName)
		// red2 was attached with no file: the drop is refused.
		_, err := d.client.DropEncapFDB(ctx, 0)
		if !api.IsCode(err, api.CodeInvalidParam) || !strings.Contains(err.Error(), "vNIC "+red2.TapName+" (segment 100) cannot go back to a file") {
			t.Fatalf("drop with red2 on no file: %v", err)
		}
		if _, err := d.client.EncapFDB(ctx, 0); err != nil {
			t.Errorf("the table after a refused drop: %v", err)
		}
		if got := liveTables(t, d, red2.TapName); !reflect.DeepEqual(before, got) {
			t.Errorf("red2's maps changed under a refused drop:\n%+v\n%+v", before, got)
		}
		if err := d.client.Detach(ctx, red2.TapName); err != nil {
			t.Fatal(err)
		}
		out, err := d.vfctl("encap", "fdb", "drop")
		if err != nil || !strings.Contains(out, "pushed table dropped; 1 encap instance(s) back on their files") {
			t.Fatalf("vfctl encap fdb drop: %v\n%s", err, out)
		}
		if _, err := d.client.EncapFDB(ctx, 0); !api.IsCode(err, api.CodeNoTable) {
			t.Errorf("GET after the drop: %v, want %s", err, api.CodeNoTable)
		}
		if _, err := os.Stat(filepath.Join(d.dir, "state", "encap-fdb.json")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("encap-fdb.json after the drop: %v", err)
		}
		// blue1 is back on its file, which answers for no address.
		if got := liveTables(t, d, blue1.TapName); len(got.Neighbors) != 0 {
			t.Errorf("blue1 after the drop: %+v, want its file's empty table", got.Neighbors)
		}
	})
}

func hasRemote(rs []encap.Remote, want string) bool {
	for _, r := range rs {
		if r.MAC+" "+r.Host == want {
			return true
		}
	}
	return false
}

// addSegVM adds a VM to h with the segment identity mac, ip4 (/24) and the
// guest MTU of an IPv4 underlay at 1500.
func addSegVM(t *testing.T, h *encapHost, label, mac, ip4 string) *testkit.VM {
	t.Helper()
	v := h.AddVM(t, label)
	if err := enclab.SegmentIdentity(v, mac, netip.MustParseAddr(ip4), enclab.GuestMTU(h.ip, 1500)); err != nil {
		t.Fatalf("%s: %v", label, err)
	}
	return v
}

func attachEncap(t *testing.T, h *encapHost, v *testkit.VM, mac string, vni, group int, extra ...string) {
	t.Helper()
	params := map[string]string{"vni": fmt.Sprint(vni), "group": fmt.Sprint(group), "mac": mac, "local_ip": h.ip.String()}
	for i := 0; i+1 < len(extra); i += 2 {
		params[extra[i]] = extra[i+1]
	}
	_, err := h.d.client.SetChain(context.Background(), v.TapName, api.ChainRequest{Filters: []api.FilterSpec{{Name: "encap", Params: params}}})
	if err != nil {
		t.Fatalf("attach encap to %s on %s: %v", v.TapName, h.ip, err)
	}
}

// liveTables reads an instance's table back from its maps.
func liveTables(t *testing.T, d *daemon, vnic string) encap.State {
	t.Helper()
	_, raw, err := d.client.Inspect(context.Background(), vnic, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	var st encap.State
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatalf("inspect %s: %v\n%s", vnic, err, raw)
	}
	st.Host = encap.HostState{} // counters move with the probes
	return st
}

// echo answers every UDP datagram on :7007 in v with tag.
func echo(t *testing.T, v *testkit.VM, tag string) {
	t.Helper()
	c, err := enclab.TagEcho(v, tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
}

// probe sends a datagram every 5 ms and records when each tag first
// answered.
type probe struct {
	mu      sync.Mutex
	firstAt map[string]time.Time
}

func startProbe(t *testing.T, v *testkit.VM, dst string) *probe {
	t.Helper()
	c, err := v.DialUDP(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	p := &probe{firstAt: map[string]time.Time{}}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); c.Close() })
	go func() {
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				_, _ = c.Write([]byte("ping"))
			}
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // ECONNREFUSED while nothing answers
			}
			tag := string(bytes.TrimSpace(buf[:n]))
			p.mu.Lock()
			if _, ok := p.firstAt[tag]; !ok {
				p.firstAt[tag] = time.Now()
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *probe) first(tag string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.firstAt[tag]
}

func (p *probe) saw(tag string) bool { return !p.first(tag).IsZero() }

func (p *probe) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.firstAt = map[string]time.Time{}
}

func (p *probe) wait(tag string, d time.Duration) error {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
		if p.saw(tag) {
			return nil
		}
	}
	return fmt.Errorf("no answer from %q in %v", tag, d)
}
