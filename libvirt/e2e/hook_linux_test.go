package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
)

// TestStartAttachesBeforeFirstFrame boots two guests whose chains are in
// their domain XML. Guest A (count, then punt:verdict=drop) pings B from
// boot and must be denied from its very first frame: the chain saw every
// frame the guest sent (its own tx counter, and the host tap's rx counter)
// and passed none. Guest B (count) pings the host and gets answers.
func TestStartAttachesBeforeFirstFrame(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	fd := startFilterd(t)
	br := testlab.NewBridge(t)
	net := subnet()
	host := hostOnBridge(t, br, net)
	aIP, bIP := net+"5", net+"6"
	tx := "sleep 1; echo VFTX $(cat /sys/class/net/eth0/statistics/tx_packets)"
	a := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-a-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(5)}},
		Metadata: metadata(map[string][]string{mac(5): {"count", "punt:verdict=drop"}}),
		Cmdline:  map[string]string{"ipv6.disable": "1", "vf.ip": aIP + "/24", "vf.cmd": "ping -c 3 -W 1 " + bIP + "; " + tx},
	})
	b := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-b-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(6)}},
		Metadata: metadata(map[string][]string{mac(6): {"count"}}),
		Cmdline:  map[string]string{"ipv6.disable": "1", "vf.ip": bIP + "/24", "vf.cmd": "ping -c 3 " + host + "; " + tx},
	})

	begin := map[string]time.Time{}
	for _, g := range []*testlab.Guest{b, a} {
		begin[g.Name] = time.Now()
		if _, err := l.Virsh("start", g.Name); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: virsh start returned after %v", g.Name, time.Since(begin[g.Name]).Round(time.Millisecond))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, g := range []*testlab.Guest{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = g.WaitConsole(ctx, "VFGUEST READY"); errs[i] == nil {
				t.Logf("%s: guest READY %v after virsh start", g.Name, time.Since(begin[g.Name]).Round(time.Millisecond))
				errs[i] = g.WaitConsole(ctx, "VFTX ")
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	for _, g := range []*testlab.Guest{a, b} {
		ps := phases(t, g.Name)
		pre, ok1 := at(ps, "00-trace", "start begin")
		post, ok2 := at(ps, "zz-trace", "start begin")
		if !ok1 || !ok2 {
			t.Fatalf("%s: trace hooks did not record start begin: %+v", g.Name, ps)
		}
		prep, _ := at(ps, "00-trace", "prepare begin")
		started, _ := at(ps, "00-trace", "started begin")
		t.Logf("%s: phases %q; virsh start → prepare %v → start %v → chain attached (our hook returned) %v → started %v",
			g.Name, ops(ps, "00-trace"), prep.Sub(begin[g.Name]).Round(time.Millisecond), pre.Sub(begin[g.Name]).Round(time.Millisecond),
			post.Sub(begin[g.Name]).Round(time.Millisecond), started.Sub(begin[g.Name]).Round(time.Millisecond))
		if want := []string{"prepare begin", "start begin", "started begin"}; !slices.Equal(ops(ps, "00-trace"), want) {
			t.Errorf("%s: phases %q, want %q", g.Name, ops(ps, "00-trace"), want)
		}
	}

	// A: denied from the first frame.
	tapA := taps(t, a)[0]
	guestTx := consoleInt(t, a, "VFTX ")
	v := fd.vnic(t, tapA)
	if v == nil || v.Owner != "libvirt:"+a.Name || len(v.Slots) != 2 {
		t.Fatalf("%s: chain %+v, want count+punt owned by libvirt:%s", tapA, v, a.Name)
	}
	if got := fd.macOf(t, tapA); got != mac(5) {
		t.Errorf("%s: filterd records guest MAC %q, want the XML's %s", tapA, got, mac(5))
	}
	from := v.Chain["from-vm"]
	hostRx := tapRxPackets(t, tapA)
	t.Logf("%s (%s): guest sent %d frames, host tap received %d, chain entered %d, passed %d, dropped %d; console: %s",
		a.Name, tapA, guestTx, hostRx, from.Entered.Packets, from.Passed.Packets, from.Dropped.Packets, line(a.Console(), "packets transmitted"))
	if guestTx == 0 {
		t.Fatalf("%s sent nothing: the test proves nothing", a.Name)
	}
	if from.Entered.Packets != guestTx || hostRx != guestTx {
		t.Errorf("%s: guest sent %d frames, host tap got %d, the chain saw %d: a frame bypassed the chain", a.Name, guestTx, hostRx, from.Entered.Packets)
	}
	if from.Passed.Packets != 0 {
		t.Errorf("%s: %d frames from the VM passed a deny-all chain", a.Name, from.Passed.Packets)
	}
	if strings.Contains(a.Console(), "bytes from") {
		t.Errorf("%s got a reply through a deny-all chain:\n%s", a.Name, a.Console())
	}

	// B: allowed traffic flows, through its chain.
	tapB := taps(t, b)[0]
	if !strings.Contains(b.Console(), "bytes from "+host) {
		t.Errorf("%s: no reply from the host:\n%s", b.Name, b.Console())
	}
	vb := fd.vnic(t, tapB)
	if vb == nil || vb.Owner != "libvirt:"+b.Name {
		t.Fatalf("%s: chain %+v, want count owned by libvirt:%s", tapB, vb, b.Name)
	}
	bTx := consoleInt(t, b, "VFTX ")
	fb, tb := vb.Chain["from-vm"], vb.Chain["to-vm"]
	t.Logf("%s (%s): guest sent %d, chain from-vm entered %d passed %d, to-vm entered %d passed %d; console: %s",
		b.Name, tapB, bTx, fb.Entered.Packets, fb.Passed.Packets, tb.Entered.Packets, tb.Passed.Packets, line(b.Console(), "packets transmitted"))
	if fb.Entered.Packets < bTx || fb.Passed.Packets != fb.Entered.Packets || tb.Passed.Packets == 0 {
		t.Errorf("%s: guest sent %d, chain from-vm entered %d passed %d, to-vm passed %d", b.Name, bTx, fb.Entered.Packets, fb.Passed.Packets, tb.Passed.Packets)
	}

	// Teardown: destroy removes both chains at stopped/release.
	if err := testlab.DestroyGuests(a, b); err != nil {
		t.Fatal(err)
	}
	for _, tap := range []string{tapA, tapB} {
		if v := fd.vnic(t, tap); v != nil {
			t.Errorf("%s: chain left after destroy: %+v", tap, v)
		}
		if m := fd.macOf(t, tap); m != "" {
			t.Errorf("%s: guest MAC label %s left after destroy", tap, m)
		}
	}
	want := []string{"prepare begin", "start begin", "started begin", "stopped end", "release end"}
	if got := ops(phases(t, a.Name), "00-trace"); !slices.Equal(got, want) {
		t.Errorf("%s: phases %q, want %q", a.Name, got, want)
	}
	for _, op := range []string{"start", "stopped", "release"} {
		x, _ := os.ReadFile(filepath.Join(lab.dir, "xml-00-trace-"+a.Name+"-"+op))
		t.Logf("XML at %s names the tap: %v", op, strings.Contains(string(x), "<target dev='"+tapA+"'"))
	}
}

// TestInvalidConfigRefusesStart: an unknown filter, a bad parameter or a
// vnicfilter element the schema refuses makes `virsh start` fail with our
// message; the domain does not run, no tap is left and other chains are
// untouched.
func TestInvalidConfigRefusesStart(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	fd := startFilterd(t)
	br := testlab.NewBridge(t)

	// A running guest whose chain must survive the failed starts.
	keep := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-keep-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(10)}},
		Metadata: metadata(map[string][]string{mac(10): {"count"}}),
	})
	if _, err := l.Virsh("start", keep.Name); err != nil {
		t.Fatal(err)
	}
	before := summary(fd.vnics(t))
	portsBefore, _ := testlab.BridgePorts(br)
	if len(before) != 1 {
		t.Fatalf("chains before: %q, want the one of %s", before, keep.Name)
	}

	ns := `xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1"`
	for i, tc := range []struct {
		name, meta string
		want       *regexp.Regexp
	}{
		{"unknown filter", metadata(map[string][]string{mac(11): {"nosuch"}}), regexp.MustCompile(`unknown filter "nosuch"`)},
		{"bad parameter", metadata(map[string][]string{mac(12): {"punt:verdict=maybe"}}), regexp.MustCompile(`parameter "verdict"`)},
		{"unknown element", `<vnicfilter:filters ` + ns + `><vnicfilter:interface mac="` + mac(13) + `"><vnicfilter:filtre name="count"/></vnicfilter:interface></vnicfilter:filters>`, regexp.MustCompile(`filtre`)},
		{"bad mac", `<vnicfilter:filters ` + ns + `><vnicfilter:interface mac="52:54:00:zz:00:01"><vnicfilter:filter name="count"/></vnicfilter:interface></vnicfilter:filters>`, regexp.MustCompile(`52:54:00:zz:00:01`)},
		{"no such interface", metadata(map[string][]string{"52:54:00:77:ff:ff": {"count"}}), regexp.MustCompile(`no interface with this mac`)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := l.DefineGuest(t, img, testlab.GuestSpec{
				Name:     fmt.Sprintf("vfe-bad%d-%s", i, randHex(2)),
				NICs:     []testlab.NIC{{Bridge: br, MAC: mac(11 + i)}},
				Metadata: tc.meta,
			})
			_, err := l.Virsh("start", g.Name)
			if err == nil {
				t.Fatalf("virsh start %s succeeded with an invalid configuration", g.Name)
			}
			msg := err.Error()
			if !strings.Contains(msg, "vnicfilter: domain "+g.Name+":") || !tc.want.MatchString(msg) {
				t.Errorf("virsh start error does not show our message (want %q):\n%s", tc.want, msg)
			}
			t.Logf("virsh start: %s", msg[strings.Index(msg, "vnicfilter: domain"):])
			if st := domState(t, l, g.Name); st != "shut off" {
				t.Errorf("domain state %q, want shut off", st)
			}
		})
	}
	if after := summary(fd.vnics(t)); !slices.Equal(after, before) {
		t.Errorf("chains changed by refused starts:\nbefore %q\nafter  %q", before, after)
	}
	if ports, _ := testlab.BridgePorts(br); !slices.Equal(ports, portsBefore) {
		t.Errorf("bridge ports %v after refused starts, were %v", ports, portsBefore)
	}
}

// TestFilterdDownStartsBehindGuard: with filterd down a protected domain
// starts behind a drop-all guard the hook pins on its tap (fail-closed):
// the guest, which pings the host from boot, gets no reply, and none of
// its frames reaches the bridge (its MAC is never learned). Destroyed in
// that state, the hook's teardown removes the guard of the gone tap.
// Started again and then filterd (with its libvirt watcher): within a
// second the chain is attached, the guard is gone and the pings are
// answered. Destroy then removes the chain.
func TestFilterdDownStartsBehindGuard(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	fd := startFilterd(t, "--libvirt-uri", l.URI())
	br := testlab.NewBridge(t)
	net := subnet()
	host := hostOnBridge(t, br, net)
	g := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-down-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(20)}},
		Metadata: metadata(map[string][]string{mac(20): {"count"}}),
		Cmdline:  map[string]string{"ipv6.disable": "1", "vf.ip": net + "20/24", "vf.cmd": "ping -i 0.1 -c 3000 " + host},
	})
	fd.stop(syscall.SIGKILL)
	// The hook pins its guards under filterd's bpffs root.
	if err := writeHookConf("bpffs-root=" + fd.root + "\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writeHookConf("") })

	// Started and destroyed while filterd is down: the guard goes with the tap.
	if _, err := l.Virsh("start", g.Name); err != nil {
		t.Fatalf("virsh start with filterd down: %v", err)
	}
	tap := taps(t, g)[0]
	if !datapath.HasGuard(fd.root, tap) {
		t.Fatalf("%s: no drop-all guard pinned under %s", tap, fd.root)
	}
	if _, err := l.Virsh("destroy", g.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(datapath.GuardDir(fd.root, tap)); !os.IsNotExist(err) {
		t.Errorf("guard of the destroyed domain's %s left (%v)", tap, err)
	}

	// Started again: the guest boots behind the guard.
	begin := time.Now()
	if _, err := l.Virsh("start", g.Name); err != nil {
		t.Fatalf("virsh start with filterd down: %v", err)
	}
	t.Logf("filterd down: virsh start returned after %v", time.Since(begin).Round(time.Millisecond))
	tap = taps(t, g)[0]
	if !datapath.HasGuard(fd.root, tap) {
		t.Fatalf("%s: no drop-all guard pinned under %s", tap, fd.root)
	}
	if st := domState(t, l, g.Name); st != "running" {
		t.Fatalf("domain state %q, want running", st)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := g.WaitConsole(ctx, "VFGUEST READY"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the guest sending", func() bool { return tapRxPackets(t, tap) >= 5 })
	time.Sleep(500 * time.Millisecond)
	sent := tapRxPackets(t, tap)
	if strings.Contains(g.Console(), "bytes from") {
		t.Errorf("%s got a reply through the drop-all guard:\n%s", g.Name, g.Console())
	}
	if learned(t, tap, mac(20)) {
		t.Errorf("the bridge learned %s on %s: a frame passed the drop-all guard", mac(20), tap)
	}
	t.Logf("%s behind the guard: host tap received %d frames from the guest, none reached the bridge, no reply", tap, sent)

	// filterd comes back: its watcher attaches the chain, which replaces
	// the guard.
	begin = time.Now()
	up := fd.start()
	waitFor(t, 5*time.Second, "chain on "+tap+" and guard gone", func() bool {
		v := fd.vnic(t, tap)
		return v != nil && v.Owner == "libvirt:"+g.Name && !datapath.HasGuard(fd.root, tap)
	})
	total := time.Since(begin)
	if err := g.WaitConsole(ctx, "bytes from "+host); err != nil {
		t.Fatalf("no reply once filterd attached the chain: %v\n%s", err, g.Console())
	}
	flowing := time.Since(begin)
	t.Logf("filterd started: API up after %v, chain attached and guard gone %v after start, first reply %v after start",
		up.Round(time.Millisecond), total.Round(time.Millisecond), flowing.Round(time.Millisecond))
	if !learned(t, tap, mac(20)) {
		t.Errorf("the bridge did not learn %s on %s with the chain passing its frames (the probe above proves nothing)", mac(20), tap)
	}
	if total > time.Second {
		t.Errorf("chain replaced the guard %v after filterd started, want ≤ 1s", total)
	}
	if _, err := os.Stat(datapath.GuardDir(fd.root, tap)); !os.IsNotExist(err) {
		t.Errorf("guard directory of %s left (%v)", tap, err)
	}
	v := fd.vnic(t, tap)
	if len(v.Slots) != 1 || v.Slots[0].Filter != "count" || v.Chain["from-vm"].Passed.Packets == 0 {
		t.Errorf("%s: chain %+v, want count passing the guest's frames", tap, v)
	}

	// Teardown at stopped/release: the chain and its pins go.
	if _, err := l.Virsh("destroy", g.Name); err != nil {
		t.Fatal(err)
	}
	if v := fd.vnic(t, tap); v != nil {
		t.Errorf("%s: chain left after virsh destroy: %+v", tap, v)
	}
	if _, err := os.Stat(filepath.Join(fd.root, tap)); !os.IsNotExist(err) {
		t.Errorf("pins of %s left after destroy (%v)", tap, err)
	}
	all := ops(phases(t, g.Name), "00-trace")
	want := []string{"prepare begin", "start begin", "started begin", "stopped end", "release end"}
	if got := all; !slices.Equal(got, append(slices.Clone(want), want...)) {
		t.Errorf("phases %q, want %q twice", got, want)
	}
}

// learned reports whether the bridge learned mac on its port tap: a frame
// from mac entered the bridge there.
func learned(t *testing.T, tap, mac string) bool {
	t.Helper()
	link, err := netlink.LinkByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	fdb, err := netlink.NeighList(link.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fdb {
		if strings.EqualFold(n.HardwareAddr.String(), mac) {
			return true
		}
	}
	return false
}

// taps returns the guest's taps, failing t if it has none.
func taps(t *testing.T, g *testlab.Guest) []string {
	t.Helper()
	ts, err := g.Taps()
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// consoleInt reads the number after marker on the guest's console.
func consoleInt(t *testing.T, g *testlab.Guest, marker string) uint64 {
	t.Helper()
	l := line(g.Console(), marker)
	n, err := strconv.ParseUint(strings.TrimSpace(strings.TrimPrefix(l[strings.Index(l, marker):], marker)), 10, 64)
	if err != nil {
		t.Fatalf("%s: console line %q: %v", g.Name, l, err)
	}
	return n
}

// line returns the first console line containing s.
func line(console, s string) string {
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, s) {
			return strings.TrimSpace(l)
		}
	}
	return ""
}
