package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestMatchIPv6FlowE2E: VM a pings b over IPv4 and IPv6 and talks TCP to
// it over IPv4 (port 5001) and IPv6 (ports 5001 and 5002) and UDP over
// IPv6 (port 5001); the mirror on a's vNIC, matching only the IPv6 TCP
// conversation with b on port 5001 in both directions, copies exactly the
// frames of that conversation a capture inside a shows (byte-identical),
// and tshark reads them as that conversation.
func TestMatchIPv6FlowE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.Tshark)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	a6, b6 := a.IPv6.IP.String(), b.IPv6.IP.String()
	text := fmt.Sprintf("src=%s,dst=%s/128 proto=tcp,dport=5001,bidir", a6, b6)
	m, err := ParseMatch(text)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "a.pcapng")
	fp := attach(t, host, a, map[string]string{"sink": path, "match": text})
	capA := startCapture(t, a.Do, "eth0")

	traffic(t, a, b) // IPv4: ping, TCP 5001
	if err := a.Ping(t, b.IPv6.IP, 2); err != nil {
		t.Fatal(err)
	}
	for _, port := range []string{"5001", "5002"} {
		echoTCP(t, a, b, net.JoinHostPort(b6, port))
	}
	u, err := b.ListenUDP(net.JoinHostPort(b6, "5001"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	uc, err := a.DialUDP(ctx, net.JoinHostPort(b6, "5001"))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		_, _ = uc.Write([]byte("udp to 5001: not mirrored"))
	}
	uc.Close()
	time.Sleep(300 * time.Millisecond)

	inVM := capA.Stop()
	if err := fp.Close(); err != nil {
		t.Fatal(err)
	}
	var want [][]byte
	var v4, other6 int
	for _, f := range inVM {
		switch {
		case m.Matches(f):
			want = append(want, f)
		case len(f) > 14 && f[12] == 0x08 && f[13] == 0:
			v4++
		case len(f) > 14 && f[12] == 0x86 && f[13] == 0xdd:
			other6++
		}
	}
	if len(want) < 8 || v4 < 8 || other6 < 8 {
		t.Fatalf("capture in a: %d frames of the IPv6 TCP 5001 conversation, %d other IPv4, %d other IPv6: want ≥ 8 of each", len(want), v4, other6)
	}
	mirrored := readPcapngFrames(t, path)
	sameFrames(t, "mirror with match "+text, mirrored, want)

	rows := testkit.TsharkFields(t, path, "frame.interface_name", "ipv6.src", "ipv6.dst", "tcp.srcport", "tcp.dstport", "ip.src")
	if len(rows) != len(mirrored) {
		t.Fatalf("tshark shows %d packets, the file has %d", len(rows), len(mirrored))
	}
	for i, r := range rows {
		fwd := r[1] == a6 && r[2] == b6 && r[4] == "5001"
		rev := r[1] == b6 && r[2] == a6 && r[3] == "5001"
		if r[0] != a.TapName || !fwd && !rev || r[5] != "" {
			t.Errorf("packet %d: tshark reads %q; want %s, the IPv6 TCP conversation %s ↔ %s port 5001 only", i+1, r, a.TapName, a6, b6)
		}
	}
	t.Logf("%d of %d frames at a mirrored (%d other IPv4, %d other IPv6 left out)", len(mirrored), len(inVM), v4, other6)
}

// echoTCP opens a TCP connection from a to addr on b, exchanges a line and
// closes it.
func echoTCP(t *testing.T, a, b *testkit.VM, addr string) {
	t.Helper()
	ln, err := b.ListenTCP(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.CopyN(c, c, 16)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	msg := []byte("sixteen bytes..!")
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, msg); err != nil {
		t.Fatal(err)
	}
}

// TestBadMatchRefused: a bad match text is refused at load with an
// ErrInvalidParam error naming the parameter and the term, before anything
// is loaded; a mirror already running keeps its match.
func TestBadMatchRefused(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	dir := t.TempDir()
	fp := loadTestRun(t, map[string]string{"sink": filepath.Join(dir, "ok.pcapng"), "match": "dst=10.2.0.0/16,dport=53"})
	spec, err := mirrorSpec()
	if err != nil {
		t.Fatal(err)
	}
	for bad, want := range map[string]string{
		"dst=10.2.0.0/16,dport=53-":        `parameter "match": match: dport: "53-" is not a port or range`,
		"dst=10.2.0.1/16":                  `parameter "match": match: dst: 10.2.0.1/16 has bits set past the prefix length (did you mean 10.2.0.0/16?)`,
		"src=fd00::/8,dst=10.2.0.0/16":     `parameter "match": match: dst: 10.2.0.0/16 is IPv4 but src is IPv6`,
		"proto=icmp,dport=53":              `parameter "match": match: dport: ports need proto tcp or udp`,
		"dst=10.2.0.0/16,dport=53,dport=5": `parameter "match": match: dport: given twice`,
	} {
		p, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"sink": filepath.Join(dir, "bad.pcapng"), "match": bad})
		if err != nil {
			t.Fatal(err)
		}
		maps := testkit.VNICMaps(t, spec)
		_, err = loadFastPath(sdk.NewFastPathContext(sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}, Params: p}, false, nil, maps, ""))
		if !errors.Is(err, sdk.ErrInvalidParam) || !strings.Contains(err.Error(), want) {
			t.Errorf("match %q: load error %v, want ErrInvalidParam with %q", bad, err, want)
		}
	}
	for _, c := range []struct {
		frame []byte
		want  bool
	}{{udpFrame(40000, 53, 10), true}, {udpFrame(40000, 54, 10), false}} {
		before := counter(t, fp, "mirrored_packets_total")
		if _, err := fp.Program().Run(&ebpf.RunOptions{Data: c.frame}); err != nil {
			t.Fatal(err)
		}
		if got := counter(t, fp, "mirrored_packets_total") > before; got != c.want {
			t.Errorf("running mirror after refused loads: mirrored %v, want %v", got, c.want)
		}
	}
}
