package dlb

import (
	crand "crypto/rand"
	"encoding/hex"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

func ctLen(t *testing.T, f *fastPath) int {
	t.Helper()
	var k dlbDlbCtKey
	var v dlbDlbCtVal
	n := 0
	it := f.objs.DlbCt.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestGCExpiresIdleFlows: pinned flows (forward and reverse entries)
// survive a sweep while fresh and go once idle past their protocol's
// timeout; a flow then re-pins to the same backend; after a FIN the short
// close timeout applies.
func TestGCExpiresIdleFlows(t *testing.T) {
	cfg := []byte(`{"services": [
	  {"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251, "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.2"}]},
	  {"vip": "10.0.0.1", "port": 53, "protocol": "udp", "table_size": 251, "backends": [{"addr": "10.1.0.3"}]}]}`)
	fp, _ := testInstance(t, cfg, "64", "4096")
	rng := rand.New(rand.NewPCG(1, 1))
	client, vip := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.0.0.1")
	tcp := frame(rng, client, vip, 40000, 80, ProtoTCP)
	udp := frame(rng, client, vip, 40001, 53, ProtoUDP)
	for _, f := range [][]byte{tcp, udp} {
		if ret, _, _ := runFrame(t, fp.Program(), f, 0); ret != tcActOK {
			t.Fatalf("tc action %d", ret)
		}
	}
	if n := ctLen(t, fp); n != 4 {
		t.Fatalf("%d entries after two new flows, want 4", n)
	}
	now := sdk.KtimeNow()
	if n, err := fp.gc(now); err != nil || n != 0 {
		t.Fatalf("fresh sweep deleted %d (%v)", n, err)
	}
	if n, err := fp.gc(now + uint64(2*time.Minute+2*time.Second)); err != nil || n != 1 || ctLen(t, fp) != 2 {
		t.Fatalf("UDP timeout sweep deleted %d flows (%v), %d entries left; want 1 and 2", n, err, ctLen(t, fp))
	}
	if n, err := fp.gc(now + uint64(time.Hour+2*time.Second)); err != nil || n != 1 || ctLen(t, fp) != 0 {
		t.Fatalf("TCP timeout sweep deleted %d flows (%v), %d entries left; want 1 and 0", n, err, ctLen(t, fp))
	}
	_, out1, _ := runFrame(t, fp.Program(), tcp, 0)
	if n := ctLen(t, fp); n != 2 {
		t.Fatalf("%d entries after the flow came back, want 2", n)
	}
	m := NewModel(128)
	c, _ := ParseConfig(cfg)
	tab, _ := Compile(c, 1, 4096)
	m.SetTables(tab)
	want := append([]byte(nil), tcp...)
	m.Process(want, 0)
	if string(out1) != string(want) {
		t.Fatalf("re-pinned flow rewritten to %x, model %x", out1, want)
	}
	// A FIN marks the flow closing: tcp_close_timeout (30 s) applies.
	fin := append([]byte(nil), tcp...)
	fin[14+int(fin[14]&0xf)*4+13] = 0x11 // FIN|ACK (checksum left stale: only the flags matter here)
	runFrame(t, fp.Program(), fin, 0)
	now = sdk.KtimeNow()
	if n, _ := fp.gc(now + uint64(10*time.Second)); n != 0 {
		t.Fatalf("closing flow swept after 10 s")
	}
	if n, _ := fp.gc(now + uint64(32*time.Second)); n != 1 || ctLen(t, fp) != 0 {
		t.Fatalf("closing flow not swept after 32 s: %d deleted, %d entries left", n, ctLen(t, fp))
	}
}

// TestAdoptKeepsFlows: an instance re-opened from its pins (filterd
// restart) keeps its pinned flows and re-installs the services.
func TestAdoptKeepsFlows(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	cfg := []byte(`{"services": [{"name": "web", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251, "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.2"}]}]}`)
	spec, err := dlbSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	var rb [4]byte
	_, _ = crand.Read(rb[:])
	pin := filepath.Join("/sys/fs/bpf", "vftest-"+hex.EncodeToString(rb[:]))
	t.Cleanup(func() { _ = os.RemoveAll(pin) })
	path := filepath.Join(t.TempDir(), "services.json")
	if err := os.WriteFile(path, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"services": path, "conntrack_size": "64", "table_entries": "4096"})
	if err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}, Directions: sdk.DirBoth, Params: params}
	a, err := loadFastPath(sdk.NewFastPathContext(inst, false, nil, maps, pin))
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(3, 3))
	f := frame(rng, netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.0.0.1"), 40000, 80, ProtoTCP)
	_, out1, _ := runFrame(t, a.Program(), f, 0)
	a.Close()
	// filterd comes back with a service added before the old one: the
	// old one keeps its id (read back from dlb_services), so its pinned
	// flow counts where it did.
	cfg2 := []byte(`{"services": [{"name": "new", "vip": "10.0.0.2", "port": 80, "protocol": "tcp", "table_size": 251, "backends": [{"addr": "10.1.0.3"}]},
	  {"name": "web", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251, "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.2"}]}]}`)
	if err := os.WriteFile(path, cfg2, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := loadFastPath(sdk.NewFastPathContext(inst, true, nil, maps, pin))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if n := ctLen(t, b.(*fastPath)); n != 2 {
		t.Fatalf("adopted instance holds %d flow entries, want 2", n)
	}
	_, out2, _ := runFrame(t, b.Program(), f, 0)
	if string(out1) != string(out2) {
		t.Fatalf("adopted instance rewrote %x, first %x", out2, out1)
	}
	st, _ := b.(*fastPath).stats()
	if st[1] != 1 {
		t.Fatalf("second packet not seen as established: %v", st)
	}
	state, err := b.(*fastPath).state()
	if err != nil {
		t.Fatal(err)
	}
	if n, w := state.Services[0], state.Services[1]; n.FromVM.Packets != 0 || w.FromVM.Packets != 2 || w.Backends[0].PinnedFlows+w.Backends[1].PinnedFlows != 1 {
		t.Errorf("after adoption: new %+v, web %+v", n, w)
	}
}
