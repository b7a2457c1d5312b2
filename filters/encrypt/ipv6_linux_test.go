package encrypt_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// sendRaw6 sends one IPv6/UDP packet from v's eth0 to the gateway MAC
// gw: src -> dst, with a segment routing header listing segs when there
// are any, carrying payload.
func sendRaw6(v *testkit.VM, gw net.HardwareAddr, dst net.IP, segs []net.IP, payload []byte) error {
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40000)
	binary.BigEndian.PutUint16(udp[2:], 9)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	udp = append(udp, payload...)
	var ext []byte
	next := byte(unix.IPPROTO_UDP)
	if len(segs) > 0 {
		ext = []byte{unix.IPPROTO_UDP, byte(2 * len(segs)), 4, byte(len(segs) - 1), byte(len(segs) - 1), 0, 0, 0}
		for _, s := range segs {
			ext = append(ext, s.To16()...)
		}
		next = 43
	}
	ip := make([]byte, 40)
	ip[0], ip[6], ip[7] = 0x60, next, 64
	binary.BigEndian.PutUint16(ip[4:], uint16(len(ext)+len(udp)))
	copy(ip[8:], v.IPv6.IP.To16())
	copy(ip[24:], dst.To16())
	frame := append(append(append(append(append([]byte{}, gw...), v.MAC...), 0x86, 0xdd), ip...), ext...)
	frame = append(frame, udp...)
	return v.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Sendto(fd, frame, 0, &unix.SockaddrLinklayer{Ifindex: l.Attrs().Index, Halen: 6})
	})
}

func addr(n net.IPNet) netip.Addr { a, _ := netip.AddrFromSlice(n.IP); return a.Unmap() }

// TestIPv6EndToEnd: protected IPv6 between VMs on two hosts crosses the
// underlay only as WireGuard (no payload, no inner packet in clear),
// unprotected IPv6 crosses in clear; with the underlay down, protected
// IPv6 is dropped and counted, never sent in clear, and flows again when
// the underlay is back.
func TestIPv6EndToEnd(t *testing.T) {
	m := cryptlab.New(t, 2, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
	h1, h2 := m.Hosts[0], m.Hosts[1]
	for _, h := range m.Hosts {
		m.WritePolicy(h, map[string]any{"space": []string{"10.99.0.0/16", "fd99::/16"}})
	}
	pa, ua := m.AddVM(h1, "protected-a"), m.AddVM(h1, "clear-a")
	pb, ub := m.AddVM(h2, "protected-b"), m.AddVM(h2, "clear-b")
	fa := m.Protect(h1, pa, nil)
	fb := m.Protect(h2, pb, nil)
	cryptlab.WaitUp(t, fa, h2.Name())
	cryptlab.WaitUp(t, fb, h1.Name())

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	secret := []byte("IPV6-PROTECTED-PAYLOAD-7f3a")
	clear := []byte("IPV6-CLEAR-PAYLOAD-c41d")
	capt := m.Capture()
	steered0 := cryptlab.Counter(t, fa, "steered_packets_total", h2.Name())
	if err := cryptlab.Echo(ctx, pa, pb, pb.IPv6.IP, 7001, bytes.Repeat(secret, 200)); err != nil {
		t.Fatalf("protected IPv6 exchange: %v", err)
	}
	if err := cryptlab.Echo(ctx, ua, ub, ub.IPv6.IP, 7002, bytes.Repeat(clear, 200)); err != nil {
		t.Fatalf("unprotected IPv6 exchange: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	capt.Stop()
	if capt.Contains(secret) {
		t.Error("the protected IPv6 payload is visible on the underlay")
	}
	if !capt.Contains(clear) {
		t.Error("the unprotected IPv6 payload is not on the underlay: the capture sees nothing?")
	}
	s := capt.Summarize(addr(pa.IPv6), addr(pb.IPv6))
	if s.Between != 0 || s.WireGuard == 0 {
		t.Errorf("underlay: %+v: want WireGuard frames and no clear packet between the protected VMs", s)
	}
	if got := cryptlab.Counter(t, fa, "steered_packets_total", h2.Name()) - steered0; got == 0 {
		t.Error("nothing steered into the tunnel")
	}
	if got := cryptlab.Counter(t, fb, "received_packets_total", h1.Name()); got == 0 {
		t.Error("nothing received from the tunnel on host-2")
	}
	t.Logf("underlay: %+v", s)

	// A routing header cannot take protected traffic past the policy:
	// host-1 routes 2001:db8::/64 over the underlay to host-2, so a packet
	// to it crosses in clear. pa sends one plain (it crosses: the path
	// exists) and one whose segment routing header ends at pb (its
	// destination address is only the first segment): dropped at pa's
	// vNIC and counted, never on the underlay.
	_, outside, _ := net.ParseCIDR("2001:db8::/64")
	if err := h1.H.Handle().RouteAdd(&netlink.Route{Dst: outside, Gw: net.ParseIP("fd77::2")}); err != nil {
		t.Fatal(err)
	}
	br, err := h1.H.Handle().LinkByName(h1.H.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	gw := br.Attrs().HardwareAddr
	plain, smuggled := []byte("IPV6-PLAIN-OUTSIDE-55e1"), []byte("IPV6-SRH-SMUGGLED-0b7c")
	unsafe0 := cryptlab.Counter(t, fa, "unsafe_dropped_packets_total", "")
	capt = m.Capture()
	for range 3 {
		if err := sendRaw6(pa, gw, net.ParseIP("2001:db8::1"), nil, plain); err != nil {
			t.Fatal(err)
		}
		if err := sendRaw6(pa, gw, net.ParseIP("2001:db8::1"), []net.IP{pb.IPv6.IP, net.ParseIP("2001:db8::1")}, smuggled); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	capt.Stop()
	if !capt.Contains(plain) {
		t.Error("the plain IPv6 packet to 2001:db8::1 did not cross the underlay: the smuggling check proves nothing")
	}
	if capt.Contains(smuggled) {
		t.Error("an IPv6 packet routed (segment routing) to a protected VM crossed the underlay in clear")
	}
	if got := cryptlab.Counter(t, fa, "unsafe_dropped_packets_total", "") - unsafe0; got != 3 {
		t.Errorf("unsafe_dropped grew by %v, want 3", got)
	}

	// The underlay goes down at host-2: after peer_timeout host-1 drops.
	ul, err := h2.H.Handle().LinkByName("ul0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.H.Handle().LinkSetDown(ul); err != nil {
		t.Fatal(err)
	}
	downSince := time.Now()
	for cryptlab.Counter(t, fa, "peer_up", h2.Name()) != 0 {
		if time.Since(downSince) > 20*time.Second {
			t.Fatal("host-2 still up 20 s after its underlay went down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	capt = m.Capture()
	dropped0 := cryptlab.Counter(t, fa, "down_dropped_packets_total", h2.Name())
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	if err := cryptlab.Echo(short, pa, pb, pb.IPv6.IP, 7003, secret); err == nil {
		t.Error("protected IPv6 exchange succeeded with the underlay down")
	}
	cancelShort()
	capt.Stop()
	if got := cryptlab.Counter(t, fa, "down_dropped_packets_total", h2.Name()) - dropped0; got == 0 {
		t.Error("tunnel down: no protected IPv6 packet counted as dropped")
	}
	if capt.Contains(secret) || capt.Summarize(addr(pa.IPv6), addr(pb.IPv6)).Between != 0 {
		t.Error("tunnel down: protected IPv6 traffic on the underlay in clear")
	}

	if err := h2.H.Handle().LinkSetUp(ul); err != nil {
		t.Fatal(err)
	}
	cryptlab.WaitUp(t, fa, h2.Name())
	capt = m.Capture()
	if err := cryptlab.Echo(ctx, pa, pb, pb.IPv6.IP, 7004, bytes.Repeat(secret, 50)); err != nil {
		t.Fatalf("protected IPv6 after the underlay came back: %v", err)
	}
	capt.Stop()
	if capt.Contains(secret) {
		t.Error("after recovery: the protected IPv6 payload is visible on the underlay")
	}
}
