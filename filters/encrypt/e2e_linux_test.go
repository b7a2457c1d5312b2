package encrypt

import (
	"bytes"
	"context"
	"testing"
	"time"
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
