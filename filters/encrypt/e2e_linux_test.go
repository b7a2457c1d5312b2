package encrypt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

var (
	secret = []byte("VNICFILTER-PROTECTED-PAYLOAD-4f1c")
	clear  = []byte("VNICFILTER-CLEAR-PAYLOAD-9b2e")
)

func payload(marker []byte, n int) []byte {
	return bytes.Repeat(marker, n)
}

// Two hosts: protected VMs talk through the tunnel, and the underlay
// shows only WireGuard for them and never the payload; unprotected VMs
// talk in clear as before; an unprotected VM's clear packets to a
// protected VM are dropped at the protected VM's vNIC.
func TestTwoHosts(t *testing.T) {
	m := newMesh(t, 2)
	h1, h2 := m.hosts[0], m.hosts[1]
	a := m.addVM(h1, "a")
	c := m.addVM(h1, "c")
	b := m.addVM(h2, "b")
	d := m.addVM(h2, "d")
	fa := m.protect(h1, a, nil)
	fb := m.protect(h2, b, nil)
	waitUp(t, fa, hostName(2))
	waitUp(t, fb, hostName(1))

	cap := m.capture()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exchange(ctx, a, b, 7001, payload(secret, 20000)); err != nil {
		t.Fatalf("protected a -> b: %v", err)
	}
	if err := exchange(ctx, c, d, 7002, payload(clear, 2000)); err != nil {
		t.Fatalf("unprotected c -> d: %v", err)
	}
	cap.stop()
	s := cap.summarize()
	t.Logf("underlay: %d frames, %d WireGuard, %d other %v", s.frames, s.wireguard, s.other, s.clearIPs)
	if cap.contains(secret) {
		t.Fatal("protected payload seen on the underlay")
	}
	if !cap.contains(clear) {
		t.Fatal("unprotected payload not seen on the underlay: the capture does not work or unprotected traffic was changed")
	}
	if s.wireguard == 0 {
		t.Fatal("no WireGuard packets on the underlay")
	}
	for flow := range s.clearIPs {
		for _, ip := range []string{a.IPv4.IP.String(), b.IPv4.IP.String()} {
			if bytes.Contains([]byte(flow), []byte(ip+">")) || bytes.HasSuffix([]byte(flow), []byte(">"+ip)) {
				t.Errorf("protected VM %s in clear on the underlay: %s", ip, flow)
			}
		}
	}
	if n := counter(t, fa, "steered_packets_total", hostName(2)); n == 0 {
		t.Error("a: nothing steered into the tunnel")
	}
	if n := counter(t, fb, "received_packets_total", hostName(1)); n == 0 {
		t.Error("b: nothing received through the tunnel")
	}

	// c is behind host-1, which b's protect=all covers: c's packets to b
	// arrive in clear and must not reach b.
	before := counter(t, fb, "clear_dropped_packets_total", hostName(1))
	if err := c.Ping(t, b.IPv4.IP, 3); err == nil {
		t.Fatal("unprotected c reached protected b in clear")
	}
	if after := counter(t, fb, "clear_dropped_packets_total", hostName(1)); after <= before {
		t.Errorf("clear_dropped did not count c's packets (%v -> %v)", before, after)
	}
}

// waitPing pings dst from v until a reply comes or timeout passes, and
// returns how long it took.
func waitPing(t *testing.T, v *testkit.VM, dst net.IP, timeout time.Duration) (time.Duration, error) {
	t.Helper()
	start := time.Now()
	for {
		err := v.Ping(t, dst, 1)
		if err == nil {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout {
			return time.Since(start), err
		}
	}
}

// sendUDP sends marker-bearing datagrams from v to dst for d.
func sendUDP(t *testing.T, v *testkit.VM, dst net.IP, d time.Duration) {
	t.Helper()
	c, err := v.DialUDP(context.Background(), net.JoinHostPort(dst.String(), "7999"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		_, _ = c.Write(payload(secret, 10))
	}
}

// Tunnel down: the peer's WireGuard device stops (as when its process
// dies), then the underlay drops. Each time protected traffic is dropped
// and counted at the sender's vNIC, nothing of it crosses in clear, and it
// flows again once the tunnel is back.
func TestTunnelDown(t *testing.T) {
	m := newMesh(t, 2)
	h1, h2 := m.hosts[0], m.hosts[1]
	a, b := m.addVM(h1, "a"), m.addVM(h2, "b")
	fa, fb := m.protect(h1, a, nil), m.protect(h2, b, nil)
	waitUp(t, fa, hostName(2))
	waitUp(t, fb, hostName(1))
	if _, err := waitPing(t, a, b.IPv4.IP, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	cap := m.capture()

	outage := func(name string, down, up func()) {
		t.Helper()
		before := counter(t, fa, "down_dropped_packets_total", hostName(2))
		down()
		// Past peer_timeout (4s) host-1 must have given the peer up.
		sendUDP(t, a, b.IPv4.IP, 6*time.Second)
		if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
			t.Fatalf("%s: a reached b with the tunnel down", name)
		}
		after := counter(t, fa, "down_dropped_packets_total", hostName(2))
		if after <= before {
			t.Errorf("%s: down_dropped did not grow (%v -> %v)", name, before, after)
		}
		t.Logf("%s: %v protected packets dropped at a's vNIC", name, after-before)
		up()
		took, err := waitPing(t, a, b.IPv4.IP, 30*time.Second)
		if err != nil {
			t.Fatalf("%s: no recovery: %v", name, err)
		}
		t.Logf("%s: traffic back %v after the tunnel came back", name, took.Round(time.Millisecond))
	}
	outage("peer device stopped", fb.tunnel.Stop, func() {
		if err := fb.tunnel.Start(); err != nil {
			t.Fatal(err)
		}
	})
	ul := func(up bool) func() {
		return func() {
			l, err := h2.h.Handle().LinkByName("ul0")
			if err == nil {
				if up {
					err = h2.h.Handle().LinkSetUp(l)
				} else {
					err = h2.h.Handle().LinkSetDown(l)
				}
			}
			if err != nil {
				t.Fatal(err)
			}
			if up { // the link-down removed the routes through ul0
				for _, o := range m.hosts {
					if o != h2 {
						_, dst, _ := net.ParseCIDR(fmt.Sprintf("10.99.%d.0/24", o.i))
						_ = h2.h.Handle().RouteAdd(&netlink.Route{Dst: dst, Gw: net.IP(o.ul.AsSlice())})
					}
				}
			}
		}
	}
	outage("underlay down", ul(false), ul(true))
	// The host's own tunnel process dies (kill -9 of filterd): nothing
	// renews the leases or touches the maps any more, the TUN device goes
	// with the process. Within the lease (1 s) a's protected packets are
	// dropped at its vNIC.
	outage("own tunnel process killed", func() { crashForTest(fa.tunnel) }, func() {
		if err := restartForTest(fa.tunnel); err != nil {
			t.Fatal(err)
		}
	})

	cap.stop()
	s := cap.summarize()
	t.Logf("underlay: %d frames, %d WireGuard, other %v", s.frames, s.wireguard, s.clearIPs)
	if cap.contains(secret) {
		t.Fatal("protected payload seen on the underlay")
	}
	for flow := range s.clearIPs {
		if strings.Contains(flow, "10.99.") {
			t.Errorf("VM traffic in clear on the underlay: %s", flow)
		}
	}
}

// crashForTest stops t as a killed process would: the monitor stops, the
// device closes, the fast path's maps are left as they were.
func crashForTest(t *Tunnel) {
	t.stopTick()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.dev.Close()
	t.dev, t.tdev, t.ifindex, t.running = nil, nil, 0, false
}

// restartForTest brings a crashed tunnel back as a restarted filterd does.
func restartForTest(t *Tunnel) error {
	if err := t.Start(); err != nil {
		return err
	}
	t.stopTick = sdk.Periodic(tickInterval, t.tick)
	return nil
}

// Three hosts: every pair of protected VMs talks through the tunnels;
// then host-3 is removed from the others' peers files: its VMs become
// unreachable (counted as no_peer drops) and nothing goes to them in
// clear.
func TestThreeHostsAndRevocation(t *testing.T) {
	m := newMesh(t, 3)
	h1, h2, h3 := m.hosts[0], m.hosts[1], m.hosts[2]
	a, b, c := m.addVM(h1, "a"), m.addVM(h2, "b"), m.addVM(h3, "c")
	fa, fb, fc := m.protect(h1, a, nil), m.protect(h2, b, nil), m.protect(h3, c, nil)
	waitUp(t, fa, hostName(2), hostName(3))
	waitUp(t, fb, hostName(1), hostName(3))
	waitUp(t, fc, hostName(1), hostName(2))

	cap := m.capture()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, p := range []struct{ from, to *testkit.VM }{{a, b}, {a, c}, {b, c}, {c, a}} {
		if err := exchange(ctx, p.from, p.to, 7100+i, payload(secret, 5000)); err != nil {
			t.Fatalf("%s -> %s: %v", p.from.Label, p.to.Label, err)
		}
	}

	// Revoke host-3.
	m.writePeers(h1, []*simHost{h1, h2})
	m.writePeers(h2, []*simHost{h1, h2})
	if err := m.reload(h1, fa, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.reload(h2, fb, nil); err != nil {
		t.Fatal(err)
	}
	before := counter(t, fa, "no_peer_dropped_packets_total", "")
	if err := a.Ping(t, c.IPv4.IP, 3); err == nil {
		t.Fatal("a still reaches c on revoked host-3")
	}
	if err := c.Ping(t, b.IPv4.IP, 3); err == nil {
		t.Fatal("c on revoked host-3 still reaches b")
	}
	if after := counter(t, fa, "no_peer_dropped_packets_total", ""); after <= before {
		t.Errorf("no_peer_dropped did not grow (%v -> %v)", before, after)
	}
	if _, err := waitPing(t, a, b.IPv4.IP, 5*time.Second); err != nil {
		t.Fatalf("a -> b after revoking host-3: %v", err)
	}
	cap.stop()
	s := cap.summarize()
	t.Logf("underlay: %d frames, %d WireGuard, other %v", s.frames, s.wireguard, s.clearIPs)
	if cap.contains(secret) {
		t.Fatal("protected payload seen on the underlay")
	}
	for flow := range s.clearIPs {
		if strings.Contains(flow, "10.99.") {
			t.Errorf("VM traffic in clear on the underlay: %s", flow)
		}
	}
	for _, p := range fa.tunnel.Status().Peers {
		if p.Name == hostName(3) {
			t.Errorf("host-1 still lists revoked %s", p.Name)
		}
	}
}

// rekeyed waits until fp's tunnel has a handshake with peer newer than
// since, and returns how long after since it came.
func rekeyed(t *testing.T, fp *fastPath, peer string, since time.Time) time.Duration {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		for _, p := range fp.tunnel.Status().Peers {
			if p.Name == peer && p.HandshakeAgeSeconds >= 0 && p.Up {
				at := time.Now().Add(-time.Duration(p.HandshakeAgeSeconds * float64(time.Second)))
				if at.After(since) {
					return at.Sub(since)
				}
			}
		}
	}
	t.Fatalf("%s: no handshake with %s after the key rotation", fp.tunnel.cfg.Name, peer)
	return 0
}

// Key rotation on both hosts, one after the other, while a TCP transfer
// runs between their protected VMs: the transfer completes with every
// byte and no reset; the longest stall is logged.
func TestKeyRotationDuringTransfer(t *testing.T) {
	m := newMesh(t, 2)
	h1, h2 := m.hosts[0], m.hosts[1]
	a, b := m.addVM(h1, "a"), m.addVM(h2, "b")
	fa, fb := m.protect(h1, a, nil), m.protect(h2, b, nil)
	waitUp(t, fa, hostName(2))
	waitUp(t, fb, hostName(1))

	cap := m.capture()
	addr := net.JoinHostPort(b.IPv4.IP.String(), "7200")
	l, err := b.ListenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type result struct {
		n      int64
		maxGap time.Duration
		err    error
	}
	done := make(chan result, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		var r result
		buf := make([]byte, 1<<16)
		last := time.Now()
		for {
			n, err := c.Read(buf)
			now := time.Now()
			if n > 0 {
				r.maxGap = max(r.maxGap, now.Sub(last))
				last = now
				r.n += int64(n)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				r.err = err
				break
			}
		}
		done <- r
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, err := a.DialTCP(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	rotate := func(sh *simHost, fp *fastPath, other *simHost, otherFP *fastPath) {
		oldPub := sh.pub
		start := time.Now()
		pub, err := fp.tunnel.Rotate()
		if err != nil {
			t.Error(err)
			return
		}
		sh.pub = pub
		// The control plane pushes the new public key to the peer.
		m.writePeers(other, m.hosts)
		if err := m.reload(other, otherFP, nil); err != nil {
			t.Error(err)
			return
		}
		took := rekeyed(t, otherFP, hostName(sh.i), start)
		t.Logf("host-%d rotated %s -> %s: new session %v after the rotation", sh.i, oldPub, pub, took.Round(time.Millisecond))
		st, err := os.Stat(KeyStore{Dir: sh.keyDir, Name: DefaultTunnel}.Path())
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("key file after rotation: %v %v", st, err)
		}
		if k, err := (KeyStore{Dir: sh.keyDir, Name: DefaultTunnel}).LoadOrCreate(); err != nil || k.Public() != pub {
			t.Errorf("stored key is not the new one (%v)", err)
		}
	}
	var written int64
	chunk := payload(secret, 2000)
	start := time.Now()
	rotated := 0
	for time.Since(start) < 9*time.Second {
		conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		n, err := conn.Write(chunk)
		written += int64(n)
		if err != nil {
			t.Fatalf("write after %d bytes: %v", written, err)
		}
		switch {
		case rotated == 0 && time.Since(start) > 2*time.Second:
			rotated++
			go rotate(h1, fa, h2, fb)
		case rotated == 1 && time.Since(start) > 5*time.Second:
			rotated++
			go rotate(h2, fb, h1, fa)
		}
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		t.Fatal("receiver did not finish")
	}
	if r.err != nil {
		t.Fatalf("receiver: %v after %d bytes", r.err, r.n)
	}
	if r.n != written {
		t.Fatalf("received %d of %d bytes", r.n, written)
	}
	cap.stop()
	if cap.contains(secret) {
		t.Error("protected payload seen on the underlay during the rotations")
	}
	if s := cap.summarize(); len(s.clearIPs) > 0 {
		t.Errorf("non-WireGuard traffic on the underlay during the rotations: %v", s.clearIPs)
	}
	el := time.Since(start)
	t.Logf("transferred %d MB in %v (%.2f Gb/s) across two key rotations; longest stall at the receiver %v",
		written>>20, el.Round(time.Millisecond), float64(written)*8/el.Seconds()/1e9, r.maxGap.Round(time.Millisecond))
}

// Bad input: at attach, a policy naming an unknown peer, a malformed key,
// a peer holding this host's own key and a second vNIC disagreeing on the
// tunnel's parameters are refused with an error naming the problem, and
// no tunnel device is left behind. At reload, a bad file is refused and
// the running configuration keeps protecting traffic.
func TestBadInput(t *testing.T) {
	m := newMesh(t, 2)
	h1, h2 := m.hosts[0], m.hosts[1]
	a, b := m.addVM(h1, "a"), m.addVM(h2, "b")

	load := func(params map[string]string) error {
		p, err := sdk.ValidateParams(Descriptor.Params, params)
		if err != nil {
			return err
		}
		return h1.h.Do(func() error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: a.TapName, Ifindex: a.TapIndex}, Directions: sdk.DirBoth, Params: p}
			fp, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, nil, ""))
			if err == nil {
				fp.Close()
				return errors.New("loaded")
			}
			return err
		})
	}
	noTunnel := func() {
		t.Helper()
		if _, err := h1.h.Handle().LinkByName(DefaultTunnel); err == nil {
			t.Fatal("a failed load left the tunnel device behind")
		}
	}
	good, _ := os.ReadFile(h1.peers)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	badKey := write("badkey.json", strings.Replace(string(good), h2.pub.String(), "not-a-key", 1))
	ownKey := write("ownkey.json", strings.Replace(string(good), h2.pub.String(), h1.pub.String(), 1))
	unknownPeer := write("unknown.json", `{"vnics": {"`+a.TapName+`": ["peer:host-9"]}}`)
	for _, tc := range []struct {
		name   string
		params map[string]string
		want   string
	}{
		{"malformed key", m.params(h1, map[string]string{"peers": badKey}), badKey + ":9:21: peers[0].public_key: malformed"},
		{"own key", m.params(h1, map[string]string{"peers": ownKey}), `peer "host-2" has this host's own public key`},
		{"unknown peer", m.params(h1, map[string]string{"policy": unknownPeer}), unknownPeer + `:1:22: vnics.vnet1[0]: unknown peer "host-9" (known: host-2)`},
		{"missing peers file", m.params(h1, map[string]string{"peers": filepath.Join(dir, "nope.json")}), "no such file"},
		{"keepalive not whole seconds", m.params(h1, map[string]string{"keepalive": "1500ms"}), "want whole seconds"},
		{"timeout below keepalive", m.params(h1, map[string]string{"peer_timeout": "1s"}), "must be longer than keepalive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := load(tc.params)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, sdk.ErrInvalidParam) {
				t.Errorf("%v does not wrap sdk.ErrInvalidParam", err)
			}
			noTunnel()
		})
	}

	// Reverse-path filtering on for all devices would drop every decrypted
	// packet: refused with the fix.
	sysctl := func(v string) {
		t.Helper()
		if err := h1.h.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/conf/all/rp_filter", []byte(v), 0o644) }); err != nil {
			t.Fatal(err)
		}
	}
	sysctl("1")
	if err := load(m.params(h1, nil)); err == nil || !strings.Contains(err.Error(), "net.ipv4.conf.all.rp_filter is 1") {
		t.Errorf("all.rp_filter=1: %v", err)
	}
	noTunnel()
	sysctl("0")

	fa, fb := m.protect(h1, a, nil), m.protect(h2, b, nil)
	waitUp(t, fa, hostName(2))
	waitUp(t, fb, hostName(1))
	if err := load(m.params(h1, map[string]string{"peer_timeout": "9s"})); err == nil || !strings.Contains(err.Error(), "every vNIC of a host must give it the same") {
		t.Errorf("second vNIC with other tunnel parameters: %v", err)
	}

	cap := m.capture()
	if err := os.WriteFile(h1.peers, []byte(strings.Replace(string(good), h2.pub.String(), "not-a-key", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.reload(h1, fa, nil); err == nil || !strings.Contains(err.Error(), h1.peers+":9:21: peers[0].public_key: malformed") || !errors.Is(err, sdk.ErrInvalidParam) {
		t.Fatalf("reload with a malformed key: %v", err)
	}
	m.writePolicy(h1, map[string][]string{a.TapName: {"peer:host-9"}})
	if err := os.WriteFile(h1.peers, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := m.reload(h1, fa, nil); err == nil || !strings.Contains(err.Error(), `unknown peer "host-9"`) {
		t.Fatalf("reload with a policy naming an unknown peer: %v", err)
	}
	// The running configuration still protects a's traffic.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exchange(ctx, a, b, 7300, payload(secret, 5000)); err != nil {
		t.Fatalf("a -> b while the files are bad: %v", err)
	}
	cap.stop()
	if cap.contains(secret) {
		t.Fatal("protected payload seen on the underlay while the configuration was invalid")
	}
	if s := cap.summarize(); s.wireguard == 0 {
		t.Fatal("no WireGuard packets: did the exchange go through the tunnel?")
	}
	m.writePolicy(h1, nil)
	if err := m.reload(h1, fa, nil); err != nil {
		t.Fatalf("reload with the files fixed: %v", err)
	}
}

// protect=policy: only the destinations the policy file lists for the
// vNIC are protected; a's traffic to b goes through the tunnel, to d in
// clear. Inspect shows the tunnel, the peers and the vNIC's routes.
func TestPolicyMode(t *testing.T) {
	m := newMesh(t, 2)
	h1, h2 := m.hosts[0], m.hosts[1]
	a := m.addVM(h1, "a")
	b, d := m.addVM(h2, "b"), m.addVM(h2, "d")
	m.writePolicy(h1, map[string][]string{a.TapName: {b.IPv4.IP.String()}})
	m.writePolicy(h2, map[string][]string{b.TapName: {"peer:" + hostName(1)}})
	fa := m.protect(h1, a, map[string]string{"protect": "policy"})
	fb := m.protect(h2, b, map[string]string{"protect": "policy"})
	waitUp(t, fa, hostName(2))
	waitUp(t, fb, hostName(1))

	cap := m.capture()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := exchange(ctx, a, b, 7400, payload(secret, 5000)); err != nil {
		t.Fatalf("a -> b: %v", err)
	}
	if err := exchange(ctx, a, d, 7401, payload(clear, 5000)); err != nil {
		t.Fatalf("a -> d: %v", err)
	}
	cap.stop()
	if cap.contains(secret) {
		t.Fatal("protected payload seen on the underlay")
	}
	if !cap.contains(clear) {
		t.Fatal("a -> d is not protected by the policy but did not cross in clear")
	}

	res, err := fa.Inspect(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	in := res.(Inspection)
	js, _ := json.MarshalIndent(in, "", "  ")
	t.Logf("inspect:\n%s", js)
	if in.Protect != ProtectPolicy || len(in.Tunnel.Peers) != 1 || !in.Tunnel.Peers[0].Up || in.Tunnel.Peers[0].HandshakeAgeSeconds < 0 || in.Tunnel.Peers[0].TxBytes == 0 {
		t.Errorf("tunnel state: %+v", in.Tunnel)
	}
	var found bool
	for _, r := range in.Routes {
		if r.Prefix == b.IPv4.IP.String()+"/32" {
			found = r.Protected && r.Peer == hostName(2)
		}
	}
	if !found {
		t.Errorf("no protected route to b via %s: %+v", hostName(2), in.Routes)
	}
	if in.Counters[0].SteeredPackets == 0 {
		t.Errorf("counters: %+v", in.Counters)
	}
	if _, err := fa.Inspect(context.Background(), map[string]string{"limit": "1"}); !errors.Is(err, sdk.ErrInvalidParam) {
		t.Errorf("unknown query parameter: %v", err)
	}
}
