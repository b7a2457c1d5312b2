package agent_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	fapi "github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encap"
	"github.com/vnicfilter/vnicfilter/filters/encap/enclab"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	mapi "github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// netHost is one simulated hypervisor of TestManagedNetwork: a cryptlab
// host (underlay 192.168.77.<i>, VM subnet 10.99.<i>.0/24 routed to the
// others) with the overlay's VXLAN device, a real filterd and an agent
// talking to it over its socket.
type netHost struct {
	name    string
	lab     *cryptlab.Host
	dir     string
	filterd *proc
	agent   *proc
	fd      *fapi.Client
	vms     map[string]bool // vNICs registered, for waitNetInSync
}

// TestManagedNetwork: the manager distributes the overlay's forwarding
// table and the encryption mesh's keys, endpoints and policy; nothing is
// configured on a host but its underlay address (vfagent --underlay).
// Three hosts, each with a real filterd and an agent; the manager on its
// own network.
//
//   - Segments red (VNI 100) and blue (VNI 200) with the same MACs and
//     addresses on different hosts: each VM reaches its own segment's peer
//     across hosts, never the other's; moving red2 to another host
//     (re-registered there, gone from its old host) restores it.
//   - Encryption pci <-> pci with a space: protected VMs talk across
//     hosts with nothing but WireGuard on the underlay (no payload), VMs
//     outside the policy talk in clear as before; a key rotation during a
//     TCP transfer reaches the other hosts through the manager and the
//     transfer completes; deleting a host revokes it everywhere and its
//     VM is no longer reachable — dropped, never in clear.
func TestManagedNetwork(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.TCX)
	ctx := context.Background()
	start := time.Now()
	m := startManagement(t)
	mesh := cryptlab.New(t, 3, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
	var hosts []*netHost
	for i, lh := range mesh.Hosts {
		h := &netHost{name: fmt.Sprintf("h%d", i+1), lab: lh, dir: t.TempDir(), vms: map[string]bool{}}
		ns, err := netns.GetFromPath(lh.H.Path)
		if err != nil {
			t.Fatal(err)
		}
		err = enclab.AddVXLAN(ns, h.name)
		ns.Close()
		if err != nil {
			t.Fatal(err)
		}
		// After filterd is gone (cleanups run last-registered first):
		// the overlay's receive program and host registry it pinned.
		t.Cleanup(func() {
			_ = lh.H.Do(func() error { return encap.DetachDevice(enclab.VXLANDev, encap.DeviceOptions{}) })
		})
		h.filterd, h.fd = startFilterd(t, h.name, lh.H, h.dir)
		waitUntilUp(t, h.filterd, func(ctx context.Context) error { _, err := h.fd.Version(ctx); return err })
		hosts = append(hosts, h)
	}
	h1, h2, h3 := hosts[0], hosts[1], hosts[2]

	// The VMs, registered as libvirt's hook does: an empty chain owned by
	// the domain, the guest MAC and addresses as labels.
	register := func(h *netHost, v *testkit.VM, vm, mac string, ips ...string) {
		t.Helper()
		if _, err := h.fd.SetChain(ctx, v.TapName, fapi.ChainRequest{Owner: "libvirt:" + vm, Filters: []fapi.FilterSpec{}, MAC: mac, Addresses: ips}); err != nil {
			t.Fatalf("register %s on %s: %v", vm, h.name, err)
		}
		h.vms[v.TapName] = true
	}
	segVM := func(h *netHost, label, mac, ip string) *testkit.VM {
		t.Helper()
		v := h.lab.H.AddVM(t, label)
		if err := enclab.SegmentIdentity(v, mac, netip.MustParseAddr(ip), enclab.GuestMTU(h.lab.UnderlayIP, cryptlab.UnderlayMTU)); err != nil {
			t.Fatal(err)
		}
		register(h, v, label, mac, ip)
		return v
	}
	const macA, macB = "02:00:00:00:0a:01", "02:00:00:00:0a:02"
	red1, blue1 := segVM(h1, "red1", macA, "10.0.0.1"), segVM(h1, "blue1", macA, "10.0.0.1")
	red2, blue2 := segVM(h2, "red2", macB, "10.0.0.2"), segVM(h3, "blue2", macB, "10.0.0.2")
	cryptVM := func(h *netHost, label string) *testkit.VM {
		t.Helper()
		v := mesh.AddVM(h.lab, label)
		register(h, v, label, v.MAC.String(), v.IPv4.IP.String())
		return v
	}
	pci1, pci2, pci3 := cryptVM(h1, "pci1"), cryptVM(h2, "pci2"), cryptVM(h3, "pci3")
	plain2, plain3 := cryptVM(h2, "plain2"), cryptVM(h3, "plain3")

	for _, h := range hosts {
		m.joinFiles(t, h.name, h.dir)
		h.startAgent(t, m)
	}
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	admin := m.admin
	must(admin.PutGroup(ctx, mapi.Group{Name: "red", NameGlob: "red*"}))
	must(admin.PutGroup(ctx, mapi.Group{Name: "blue", NameGlob: "blue*"}))
	must(admin.PutGroup(ctx, mapi.Group{Name: "pci", NameGlob: "pci*"}))
	must(admin.PutSegment(ctx, mapi.Segment{Name: "red", VNI: 100, Group: "red", GBP: 10}))
	must(admin.PutSegment(ctx, mapi.Segment{Name: "blue", VNI: 200, Group: "blue", GBP: 20}))
	must(admin.PutEncryption(ctx, mapi.Encryption{Name: "pci", From: "pci", To: "pci", Space: []string{"10.99.0.0/16"}}))
	waitNetInSync(t, admin, hosts, 60*time.Second)
	t.Logf("3 hosts, 9 VMs, 2 segments and an encryption in sync %v after start", time.Since(start).Round(time.Millisecond))
	for _, h := range hosts {
		st, _ := admin.Status(ctx, h.name)
		if len(st.Docs) == 0 {
			t.Errorf("%s: no host documents in status: %+v", h.name, st)
		}
	}

	// Segments: the same MAC and address answer in each segment, and
	// only there.
	for _, e := range []struct {
		v   *testkit.VM
		tag string
	}{{red2, "red"}, {blue2, "blue"}} {
		udpEcho(t, e.v, e.tag)
	}
	if err := expectTag(red1, "10.0.0.2:7007", "red", 10*time.Second); err != nil {
		t.Fatalf("red1 -> red2 (h1 -> h2, segment 100): %v", err)
	}
	if err := expectTag(blue1, "10.0.0.2:7007", "blue", 10*time.Second); err != nil {
		t.Fatalf("blue1 -> blue2 (h1 -> h3, segment 200): %v", err)
	}

	// Moving red2 to h3: registered there (the destination's hook), its
	// old chain gone (the source's), the manager updates every table.
	red2new := h3.lab.H.AddVM(t, "red2-moved")
	if err := enclab.SegmentIdentity(red2new, macB, netip.MustParseAddr("10.0.0.2"), enclab.GuestMTU(h3.lab.UnderlayIP, cryptlab.UnderlayMTU)); err != nil {
		t.Fatal(err)
	}
	udpEcho(t, red2new, "red-moved")
	t0 := time.Now()
	if err := h2.fd.Detach(ctx, red2.TapName); err != nil {
		t.Fatal(err)
	}
	delete(h2.vms, red2.TapName)
	register(h3, red2new, "red2", macB, "10.0.0.2")
	if err := expectTag(red1, "10.0.0.2:7007", "red-moved", 15*time.Second); err != nil {
		t.Fatalf("red1 -> red2 after its move to h3: %v", err)
	}
	t.Logf("red2 moved h2 -> h3: red1 reaches it %v after the move (agents report inventory every 1 s)", time.Since(t0).Round(time.Millisecond))
	if err := expectTag(blue1, "10.0.0.2:7007", "blue", 5*time.Second); err != nil {
		t.Errorf("blue1 -> blue2 after red2 moved next to it: %v", err)
	}
	waitNetInSync(t, admin, hosts, 30*time.Second)

	// Encryption: protected VMs talk, the underlay sees WireGuard only.
	secret := []byte("PCI-SECRET-" + randHex(8))
	capt := mesh.Capture()
	for _, p := range []struct{ a, b *testkit.VM }{{pci1, pci2}, {pci1, pci3}, {pci2, pci3}} {
		if err := retry(10*time.Second, func() error {
			ectx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			return cryptlab.Echo(ectx, p.a, p.b, p.b.IPv4.IP, 5000, secret)
		}); err != nil {
			t.Fatalf("%s -> %s protected: %v", p.a.Label, p.b.Label, err)
		}
	}
	plain := []byte("PLAIN-" + randHex(8))
	ectx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := cryptlab.Echo(ectx, plain2, plain3, plain3.IPv4.IP, 5001, plain)
	cancel()
	if err != nil {
		t.Fatalf("plain2 -> plain3 (no policy): %v", err)
	}
	capt.Stop()
	if capt.Contains(secret) {
		t.Fatal("the protected payload crossed the underlay in clear")
	}
	if !capt.Contains(plain) {
		t.Error("the unprotected flow does not cross the underlay in clear: it was changed")
	}
	if !slices.ContainsFunc(capt.Frames(), isWireGuard) {
		t.Error("no WireGuard packet on the underlay")
	}

	// Key rotation on h3 during a transfer pci1 -> pci3: the agent reports
	// the new key, the manager sends it to h1 and h2; no reset.
	before := peerKeys(t, h1)
	tr := startTransfer(t, pci1, pci3, 5002)
	time.Sleep(time.Second)
	if _, _, err := h3.fd.Act(ctx, pci3.TapName, 0, "rotate", nil); err != nil {
		t.Fatalf("rotate h3's key: %v", err)
	}
	t0 = time.Now()
	var newKey string
	if err := retry(20*time.Second, func() error {
		for k := range peerKeys(t, h1) {
			if !before[k] {
				newKey = k
				return nil
			}
		}
		return errors.New("h1 still has the old keys")
	}); err != nil {
		t.Fatalf("h3's new key did not reach h1: %v", err)
	}
	t.Logf("h3 rotated: its new key in h1's peers %v later", time.Since(t0).Round(time.Millisecond))
	if !peerKeys(t, h2)[newKey] {
		// h2 is updated by the same state change; allow it its apply.
		if err := retry(10*time.Second, func() error {
			if peerKeys(t, h2)[newKey] {
				return nil
			}
			return errors.New("not yet")
		}); err != nil {
			t.Errorf("h3's new key did not reach h2")
		}
	}
	time.Sleep(2 * time.Second) // carry on through the new handshake
	sent, got, err := tr.finish()
	if err != nil {
		t.Fatalf("transfer across h3's rotation: %v (sent %d, received %d)", err, sent, got)
	}
	t.Logf("transfer across the rotation: %d bytes, all received", got)

	// Deleting h3 revokes it everywhere; the space keeps its VM's address
	// protected, so pci1's traffic to it is dropped, never in clear.
	h3.agent.stop(syscall.SIGTERM)
	if err := admin.DeleteHost(ctx, h3.name); err != nil {
		t.Fatal(err)
	}
	h3key := newKey
	for _, h := range []*netHost{h1, h2} {
		if err := retry(10*time.Second, func() error {
			if peerKeys(t, h)[h3key] {
				return errors.New("still listed")
			}
			return nil
		}); err != nil {
			t.Fatalf("%s still trusts the deleted h3: %v", h.name, err)
		}
	}
	capt = mesh.Capture()
	ectx, cancel = context.WithTimeout(ctx, 2*time.Second)
	err = cryptlab.Echo(ectx, pci1, pci3, pci3.IPv4.IP, 5003, secret)
	cancel()
	capt.Stop()
	if err == nil {
		t.Error("pci1 still reaches pci3 on the revoked host")
	}
	if capt.Contains(secret) {
		t.Error("with h3 revoked, pci1's payload crossed the underlay in clear")
	}
	if err := retry(5*time.Second, func() error {
		ectx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		return cryptlab.Echo(ectx, pci1, pci2, pci2.IPv4.IP, 5004, secret)
	}); err != nil {
		t.Errorf("pci1 -> pci2 after h3's removal: %v", err)
	}
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// startAgent starts h's agent on the management network (it reaches
// filterd by its socket).
func (h *netHost) startAgent(t *testing.T, m *management) {
	t.Helper()
	server := m.server
	h.agent = startProc(t, "vfagent "+h.name, m.host.Path, "vfagent", "run", "--manager", server, "--host", h.name, "--dir", filepath.Join(h.dir, "agent"),
		"--filterd-socket", filepath.Join(h.dir, "filterd.sock"), "--underlay", h.lab.UnderlayIP.String(),
		"--join-token-file", filepath.Join(h.dir, "join.token"), "--manager-ca", filepath.Join(h.dir, "manager-ca.pem"),
		"--log-format", "json", "--inventory-interval", "1s", "--counters-interval", "0")
}

// waitNetInSync waits until every host reports its desired state
// realized: every vNIC and every host document.
func waitNetInSync(t *testing.T, admin *mapi.Client, hosts []*netHost, timeout time.Duration) {
	t.Helper()
	want, byName := map[string]int{}, map[string]*netHost{}
	for _, h := range hosts {
		want[h.name], byName[h.name] = len(h.vms), h
	}
	waitSynced(t, admin, want, timeout, func(h string) string { return "agent:\n" + tail(byName[h].agent.logs(), 30) })
}

// peerKeys are the public keys in h's peers document.
func peerKeys(t *testing.T, h *netHost) map[string]bool {
	t.Helper()
	p, err := h.fd.EncryptPeers(context.Background())
	if err != nil {
		t.Fatalf("%s: %v", h.name, err)
	}
	out := map[string]bool{}
	if len(p.Document) > 0 && string(p.Document) != "null" {
		doc, err := encrypt.ParsePeers(p.Document)
		if err != nil {
			t.Fatalf("%s's peers document: %v", h.name, err)
		}
		for _, peer := range doc.Peers {
			out[peer.PublicKey.String()] = true
		}
	}
	return out
}

// isWireGuard reports an Ethernet frame carrying IPv4 UDP to or from
// WireGuard's port.
func isWireGuard(f []byte) bool {
	if len(f) < 14+20+8 || f[12] != 0x08 || f[13] != 0x00 || f[14+9] != 17 {
		return false
	}
	ihl := int(f[14]&0x0f) * 4
	if len(f) < 14+ihl+8 {
		return false
	}
	sp, dp := int(f[14+ihl])<<8|int(f[14+ihl+1]), int(f[14+ihl+2])<<8|int(f[14+ihl+3])
	return sp == cryptlab.ListenPort || dp == cryptlab.ListenPort
}

// udpEcho answers every datagram to v's :7007 with tag.
func udpEcho(t *testing.T, v *testkit.VM, tag string) {
	t.Helper()
	c, err := enclab.TagEcho(v, tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
}

// expectTag asks addr from v until it answers; every answer must be want
// (another tag is a frame from the wrong segment).
func expectTag(v *testkit.VM, addr, want string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := v.DialUDP(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 64)
	for ctx.Err() == nil {
		_, _ = c.Write([]byte("?"))
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		if got := string(buf[:n]); got != want {
			return fmt.Errorf("answered by %q, want %q", got, want)
		}
		return nil
	}
	return fmt.Errorf("no answer from %s within %v", addr, timeout)
}

func retry(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// transfer is a TCP stream from a client VM to a sink in a server VM.
type transfer struct {
	sent, got chan int64
	errc      chan error
	stop      chan struct{}
}

// startTransfer sends from client to server's port until finish.
func startTransfer(t *testing.T, client, server *testkit.VM, port int) *transfer {
	t.Helper()
	hp := net.JoinHostPort(server.IPv4.IP.String(), fmt.Sprint(port))
	l, err := server.ListenTCP(hp)
	if err != nil {
		t.Fatal(err)
	}
	tr := &transfer{sent: make(chan int64, 1), got: make(chan int64, 1), errc: make(chan error, 2), stop: make(chan struct{})}
	go func() {
		defer l.Close()
		c, err := l.Accept()
		if err != nil {
			tr.errc <- err
			tr.got <- 0
			return
		}
		defer c.Close()
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			tr.errc <- fmt.Errorf("receiver: %w", err)
		}
		tr.got <- n
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	c, err := client.DialTCP(ctx, hp)
	cancel()
	if err != nil {
		t.Fatalf("transfer %s -> %s: %v", client.Label, server.Label, err)
	}
	go func() {
		defer c.Close()
		buf := bytes.Repeat([]byte("x"), 16<<10)
		var n int64
		for {
			select {
			case <-tr.stop:
				tr.sent <- n
				return
			default:
			}
			_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
			k, err := c.Write(buf)
			n += int64(k)
			if err != nil {
				tr.errc <- fmt.Errorf("sender: %w", err)
				tr.sent <- n
				return
			}
			time.Sleep(2 * time.Millisecond) // a steady stream, not a flood
		}
	}()
	return tr
}

// finish stops the sender and waits for the receiver to drain.
func (tr *transfer) finish() (sent, got int64, err error) {
	close(tr.stop)
	sent = <-tr.sent
	select {
	case got = <-tr.got:
	case <-time.After(60 * time.Second):
		return sent, 0, errors.New("receiver did not finish")
	}
	select {
	case err = <-tr.errc:
	default:
	}
	if err == nil && got != sent {
		err = fmt.Errorf("sent %d bytes, received %d", sent, got)
	}
	return sent, got, err
}
