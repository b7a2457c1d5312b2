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
	"syscall"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/libvirt/domainxml"
	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
)

// setMetadata is `virsh metadata DOMAIN NS --key vnicfilter --live --set
// VALUE` with chains written as for metadata().
func setMetadata(t *testing.T, l *testlab.Libvirtd, domain string, chains map[string][]string) {
	t.Helper()
	// virsh wants the value without prefixes (docs/domain-xml.md).
	v := metadata(chains)
	v = strings.ReplaceAll(v, "vnicfilter:", "")
	v = strings.Replace(v, ` xmlns:filters="`+domainxml.Namespace+`"`, "", 1)
	v = strings.Replace(v, ` xmlns:vnicfilter="`+domainxml.Namespace+`"`, "", 1)
	if _, err := l.Virsh("metadata", domain, domainxml.Namespace, "--key", "vnicfilter", "--live", "--set", v); err != nil {
		t.Fatal(err)
	}
}

// filtersOf renders a chain's filters in slot order as "name" or
// "name:param=value".
func filtersOf(v *api.VNIC) []string {
	if v == nil {
		return nil
	}
	slots := slices.Clone(v.Slots)
	slices.SortFunc(slots, func(a, b api.Slot) int { return a.Slot - b.Slot })
	var out []string
	for _, s := range slots {
		f := s.Filter
		if s.Params["verdict"] == "drop" {
			f += ":verdict=drop"
		}
		out = append(out, f)
	}
	return out
}

var seqRE = regexp.MustCompile(`seq=(\d+)`)

// replySeqs returns the ping sequence numbers answered so far.
func replySeqs(console string) []int {
	var out []int
	for _, m := range seqRE.FindAllStringSubmatch(console, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// TestWatcherAppliesLiveChanges: with filterd's libvirt watcher, a changed
// filter configuration of a running domain applies live without losing a
// frame of a flow both chains allow, a hot-plugged NIC is filtered, and
// unplugging it removes its chain.
func TestWatcherAppliesLiveChanges(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	fd := startFilterd(t, "--libvirt-uri", l.URI())
	br := testlab.NewBridge(t)
	net := subnet()
	host := hostOnBridge(t, br, net)
	g := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-live-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(30)}},
		Metadata: metadata(map[string][]string{mac(30): {"count"}}),
		Cmdline:  map[string]string{"ipv6.disable": "1", "vf.ip": net + "30/24", "vf.cmd": "ping -i 0.02 -c 1500 " + host},
	})
	if _, err := l.Virsh("start", g.Name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := g.WaitConsole(ctx, "bytes from "+host); err != nil {
		t.Fatal(err)
	}
	tap := taps(t, g)[0]

	// Metadata change: count → count, punt (pass), and a pending entry for
	// the NIC plugged below.
	time.Sleep(500 * time.Millisecond)
	seqsBefore := replySeqs(g.Console())
	begin := time.Now()
	setMetadata(t, l, g.Name, map[string][]string{mac(30): {"count", "punt"}, mac(31): {"count"}})
	returned := time.Since(begin)
	waitFor(t, 5*time.Second, "new chain on "+tap, func() bool {
		return slices.Equal(filtersOf(fd.vnic(t, tap)), []string{"count", "punt"})
	})
	t.Logf("virsh metadata --live: new chain on %s %v after the command was sent (virsh returned after %v); slots %+v",
		tap, time.Since(begin).Round(time.Millisecond), returned.Round(time.Millisecond), slotNumbers(fd.vnic(t, tap)))
	time.Sleep(1500 * time.Millisecond)
	seqs := replySeqs(g.Console())
	if len(seqs) <= len(seqsBefore)+5 {
		t.Fatalf("pings stopped after the change: %d replies before, %d after", len(seqsBefore), len(seqs))
	}
	for i, s := range seqs {
		if s != seqs[0]+i {
			t.Errorf("ping reply seq=%d where %d was due: a frame of an allowed flow was lost during the change", s, seqs[0]+i)
			break
		}
	}
	t.Logf("ping replies seq=%d…%d without a gap across the change (%d during it)", seqs[0], seqs[len(seqs)-1], len(seqs)-len(seqsBefore))
	if v := fd.vnic(t, tap); v.Slots[1].SlowPathState != "running" {
		t.Errorf("punt slow path %q after the live change", v.Slots[1].SlowPathState)
	}

	// Hot-plug: the pending entry now matches.
	nic := filepath.Join(t.TempDir(), "nic.xml")
	nicXML := fmt.Sprintf("<interface type='bridge'><mac address='%s'/><source bridge='%s'/><model type='virtio'/></interface>", mac(31), br)
	if err := os.WriteFile(nic, []byte(nicXML), 0o644); err != nil {
		t.Fatal(err)
	}
	before := fd.vnics(t)
	begin = time.Now()
	if _, err := l.Virsh("attach-device", g.Name, nic, "--live"); err != nil {
		t.Fatal(err)
	}
	returned = time.Since(begin)
	var hot string
	waitFor(t, 5*time.Second, "chain on the hot-plugged NIC", func() bool {
		for _, v := range fd.vnics(t) {
			if !slices.ContainsFunc(before, func(b api.VNIC) bool { return b.Name == v.Name }) && v.Owner == "libvirt:"+g.Name {
				hot = v.Name
				return true
			}
		}
		return false
	})
	t.Logf("virsh attach-device: chain on %s %v after the command was sent (command returned after %v)", hot, time.Since(begin).Round(time.Millisecond), returned.Round(time.Millisecond))
	if got := taps(t, g); len(got) != 2 || got[1] != hot {
		t.Errorf("taps %v, want the chain on the second one (%s)", got, hot)
	}
	if got := filtersOf(fd.vnic(t, hot)); !slices.Equal(got, []string{"count"}) {
		t.Errorf("hot-plugged %s: chain %q, want count", hot, got)
	}
	// The watcher records each interface's guest MAC with the chain.
	if got, got30 := fd.macOf(t, hot), fd.macOf(t, tap); got != mac(31) || got30 != mac(30) {
		t.Errorf("guest MACs recorded: %s %q, %s %q; want %s, %s", hot, got, tap, got30, mac(31), mac(30))
	}

	// Unplug: the chain goes (the guest's ACPI hot-plug driver answers the
	// unplug request; libvirt then reports DEVICE_REMOVED).
	begin = time.Now()
	if _, err := l.Virsh("detach-device", g.Name, nic, "--live"); err != nil {
		t.Fatal(err)
	}
	returned = time.Since(begin)
	waitFor(t, 15*time.Second, "chain of the unplugged NIC removed", func() bool { return fd.vnic(t, hot) == nil })
	t.Logf("virsh detach-device: chain on %s removed %v after the command was sent (command returned after %v)", hot, time.Since(begin).Round(time.Millisecond), returned.Round(time.Millisecond))
	if v := fd.vnic(t, tap); v == nil {
		t.Errorf("%s lost its chain when the other NIC was unplugged", tap)
	}
}

func slotNumbers(v *api.VNIC) []string {
	var out []string
	for _, s := range v.Slots {
		out = append(out, fmt.Sprintf("%d:%s", s.Slot, s.Filter))
	}
	return out
}

// TestWatcherReconcilesAtRestart: kill filterd; meanwhile a domain is
// destroyed (its chain stays behind), another's configuration changes, a
// third loses its chain (drift), and a fourth starts (behind the hook's
// drop-all guard). Restarted, filterd leaves exactly the right chains, and
// no guard, within a second.
func TestWatcherReconcilesAtRestart(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	fd := startFilterd(t, "--libvirt-uri", l.URI())
	br := testlab.NewBridge(t)
	var gs []*testlab.Guest
	for i, name := range []string{"gone", "changed", "drift", "same"} {
		g := l.DefineGuest(t, img, testlab.GuestSpec{
			Name:     "vfe-" + name + "-" + randHex(2),
			NICs:     []testlab.NIC{{Bridge: br, MAC: mac(40 + i)}},
			Metadata: metadata(map[string][]string{mac(40 + i): {"count"}}),
		})
		if _, err := l.Virsh("start", g.Name); err != nil {
			t.Fatal(err)
		}
		gs = append(gs, g)
	}
	gone, changed, drift, same := gs[0], gs[1], gs[2], gs[3]
	late := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-late-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(44)}},
		Metadata: metadata(map[string][]string{mac(44): {"count"}}),
	})
	tap := map[*testlab.Guest]string{}
	for _, g := range gs {
		tap[g] = taps(t, g)[0]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := fd.client.Detach(ctx, tap[drift]); err != nil {
		t.Fatal(err)
	}
	fd.stop(syscall.SIGKILL)

	if err := testlab.DestroyGuests(gone); err != nil {
		t.Fatal(err)
	}
	setMetadata(t, l, changed.Name, map[string][]string{mac(41): {"count", "punt:verdict=drop"}})
	if err := writeHookConf("bpffs-root=" + fd.root + "\n"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = writeHookConf("") })
	if _, err := l.Virsh("start", late.Name); err != nil {
		t.Fatalf("start %s with filterd down: %v", late.Name, err)
	}
	tap[late] = taps(t, late)[0]
	if !datapath.HasGuard(fd.root, tap[late]) {
		t.Fatalf("%s: started with filterd down but no guard pinned", tap[late])
	}

	want := []string{
		fmt.Sprintf("%s libvirt:%s [count]", tap[drift], drift.Name),
		fmt.Sprintf("%s libvirt:%s [count punt:verdict=drop]", tap[changed], changed.Name),
		fmt.Sprintf("%s libvirt:%s [count]", tap[same], same.Name),
		fmt.Sprintf("%s libvirt:%s [count]", tap[late], late.Name),
	}
	slices.Sort(want)
	got := func() []string {
		var out []string
		for _, v := range fd.vnics(t) {
			full := fd.vnic(t, v.Name)
			out = append(out, fmt.Sprintf("%s %s [%s]", v.Name, v.Owner, strings.Join(filtersOf(full), " ")))
		}
		slices.Sort(out)
		return out
	}
	begin := time.Now()
	up := fd.start()
	waitFor(t, 5*time.Second, "reconciled chains, guard gone", func() bool {
		return slices.Equal(got(), want) && !datapath.HasGuard(fd.root, tap[late])
	})
	total := time.Since(begin)
	t.Logf("filterd restarted: API up after %v, exactly the right chains %v after start: %q", up.Round(time.Millisecond), total.Round(time.Millisecond), want)
	if total > time.Second {
		t.Errorf("reconcile took %v after filterd started, want ≤ 1s", total)
	}
	if _, err := os.Stat(filepath.Join(fd.root, tap[gone])); !os.IsNotExist(err) {
		t.Errorf("pins of the destroyed domain's %s left (%v)", tap[gone], err)
	}
}
