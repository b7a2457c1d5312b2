package firewall

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// rejectPolicy protects VM b: a may reach tcp/5001; tcp/5002, udp/5003
// and ICMP to b are rejected (to-vm); b's own tcp/6000 and udp/6001 to
// anyone are rejected (from-vm). Both defaults deny.
func rejectPolicy() []byte {
	r := func(name, dir, proto string, port int, action string) map[string]any {
		m := map[string]any{"name": name, "direction": dir, "proto": proto, "action": action}
		if port > 0 {
			m["dst_ports"] = []int{port}
		}
		return m
	}
	b, _ := json.Marshal(map[string]any{
		"version":  1,
		"defaults": map[string]string{"from-vm": "deny", "to-vm": "deny"},
		"rules": []any{
			r("tcp-5001", "to-vm", "tcp", 5001, "allow"),
			r("tcp-5002", "to-vm", "tcp", 5002, "reject"),
			r("udp-5003", "to-vm", "udp", 5003, "reject"),
			r("icmp-in", "to-vm", "icmp", 0, "reject"),
			r("icmp6-in", "to-vm", "icmpv6", 0, "reject"),
			r("tcp-6000", "from-vm", "tcp", 6000, "reject"),
			r("udp-6001", "from-vm", "udp", 6001, "reject"),
		},
	})
	return b
}

// TestRejectE2E sends real traffic through the firewall on b's tap: every
// rejected connection is refused at once (TCP RST: ECONNREFUSED; UDP:
// ICMP port unreachable, ECONNREFUSED on the next read; ping: ICMP
// administratively prohibited), in both directions, IPv4 and IPv6, with
// the senders' checksum offload on (CHECKSUM_PARTIAL frames) and off (the
// receiving stack then verifies every checksum of the answers). tshark
// decodes the answers captured in a and checks their checksums.
func TestRejectE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, rejectPolicy(), 0o644); err != nil {
		t.Fatal(err)
	}
	chain := b.AttachFilter(t, Descriptor, map[string]string{"policy": path, "reject_rate": "1000"})
	fp := chain.FastPath.(*fastPath)
	for _, port := range []string{"5002", "5001"} {
		l, err := b.ListenTCP(net.JoinHostPort("::", port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
	}

	var capture *exec.Cmd
	pcap := filepath.Join(t.TempDir(), "a.pcapng")
	if _, err := exec.LookPath("tshark"); err == nil {
		capture = startCapture(t, a, pcap)
	}

	refused := func(t *testing.T, from *testkit.VM, to net.IP, port string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		start := time.Now()
		c, err := from.DialTCP(ctx, net.JoinHostPort(to.String(), port))
		if err == nil {
			c.Close()
			t.Fatalf("tcp %s:%s from %s: connected", to, port, from.Label)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("tcp %s:%s from %s: %v, want connection refused", to, port, from.Label, err)
		}
		if d := time.Since(start); d > time.Second {
			t.Errorf("tcp %s:%s refused after %v: not by the RST", to, port, d)
		}
	}
	udpRefused := func(t *testing.T, from *testkit.VM, to net.IP, port string) {
		t.Helper()
		c, err := from.DialUDP(context.Background(), net.JoinHostPort(to.String(), port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte("rejected")); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 64)); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("udp %s:%s from %s: read %v, want connection refused (ICMP port unreachable)", to, port, from.Label, err)
		}
	}

	for _, offload := range []bool{true, false} {
		for _, vm := range []*testkit.VM{a, b} {
			if err := setTxChecksum(vm, offload); err != nil {
				t.Fatal(err)
			}
		}
		t.Run(fmt.Sprintf("offload=%v", offload), func(t *testing.T) {
			for _, fam := range []struct {
				name string
				a, b net.IP
			}{{"ipv4", a.IPv4.IP, b.IPv4.IP}, {"ipv6", a.IPv6.IP, b.IPv6.IP}} {
				t.Run(fam.name, func(t *testing.T) {
					refused(t, a, fam.b, "5002")    // to-vm: RST sent to a through b's tap ingress
					refused(t, b, fam.a, "6000")    // from-vm: RST sent to b through b's tap egress
					udpRefused(t, a, fam.b, "5003") // to-vm: port unreachable
					udpRefused(t, b, fam.a, "6001") // from-vm: port unreachable
					if got := echoAnswer(t, a, fam.b); got != "unreachable/admin-prohibited" {
						t.Errorf("ping %s from a: %s, want administratively prohibited", fam.b, got)
					}
					// The allowed port still connects.
					ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					defer cancel()
					c, err := a.DialTCP(ctx, net.JoinHostPort(fam.b.String(), "5001"))
					if err != nil {
						t.Fatalf("tcp/5001: %v", err)
					}
					c.Close()
				})
			}
		})
	}
	st := fp.statsForTest(t)
	if st[StatRejected] < 20 {
		t.Errorf("rejected_total %d, want >= 20", st[StatRejected])
	}
	t.Logf("rejected_total %d, reject_limited_total %d, reject_skipped_total %d", st[StatRejected], st[StatRejectLimited], st[StatRejectSkipped])

	if capture == nil {
		t.Log("no tshark: answers not decoded")
		return
	}
	stopCapture(t, capture)
	checkAnswersWithTshark(t, pcap)
}

// setTxChecksum turns the VM's eth0 transmit checksum offload on or off
// (ETHTOOL_STXCSUM): off, its frames are CHECKSUM_NONE and carry their
// whole checksums; on, they are CHECKSUM_PARTIAL.
func setTxChecksum(vm *testkit.VM, on bool) error {
	return vm.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		const ethtoolSTxCsum = 0x17
		val := struct{ Cmd, Data uint32 }{ethtoolSTxCsum, 0}
		if on {
			val.Data = 1
		}
		var ifr [40]byte
		copy(ifr[:], "eth0")
		*(*uintptr)(unsafe.Pointer(&ifr[16])) = uintptr(unsafe.Pointer(&val))
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return fmt.Errorf("vm %s: ethtool tx checksum %v: %w", vm.Label, on, e)
		}
		return nil
	})
}

// echoAnswer pings dst from vm over a raw socket and says what came back:
// "reply", "unreachable/admin-prohibited", another "type/code", or
// "nothing".
func echoAnswer(t *testing.T, vm *testkit.VM, dst net.IP) string {
	t.Helper()
	v6 := dst.To4() == nil
	network, req, unreach, prohib := "ip4:icmp", byte(8), byte(3), byte(13)
	if v6 {
		network, req, unreach, prohib = "ip6:ipv6-icmp", 128, 1, 1
	}
	var conn net.PacketConn
	if err := vm.Do(func() (err error) {
		conn, err = net.ListenPacket(network, "")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id := uint16(time.Now().UnixNano())
	msg := []byte{req, 0, 0, 0, byte(id >> 8), byte(id), 0, 1, 'f', 'w'}
	if !v6 {
		binary.BigEndian.PutUint16(msg[2:], ^fold16(uint64(onesSum(msg))))
	}
	if _, err := conn.WriteTo(msg, &net.IPAddr{IP: dst}); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			return "nothing"
		}
		m := buf[:n]
		// The quote: IPv4 header (20 bytes here) or IPv6 header, then our
		// echo request with its identifier.
		off := 8 + 20
		if v6 {
			off = 8 + 40
		}
		switch {
		case len(m) >= off+6 && m[0] == unreach && bytes.Equal(m[off+4:off+6], msg[4:6]):
			if m[1] == prohib {
				return "unreachable/admin-prohibited"
			}
			return fmt.Sprintf("%d/%d", m[0], m[1])
		case len(m) >= 6 && (m[0] == 0 || m[0] == 129) && bytes.Equal(m[4:6], msg[4:6]):
			return "reply"
		}
	}
}

// pseudoSum is the folded (not complemented) pseudo-header sum of an
// IPv4 or IPv6 segment of length n.
func pseudoSum(t *testing.T, src, dst string, proto uint8, n int) uint16 {
	s, err1 := netip.ParseAddr(src)
	d, err2 := netip.ParseAddr(dst)
	if err1 != nil || err2 != nil {
		t.Fatalf("addresses %q %q", src, dst)
	}
	b := append(append([]byte{}, s.AsSlice()...), d.AsSlice()...)
	b = append(b, 0, proto, byte(n>>8), byte(n))
	return fold16(uint64(onesSum(b)))
}

func first(list string) string {
	s, _, _ := strings.Cut(list, ",")
	return s
}

// startCapture runs tshark on a's eth0 until stopCapture.
func startCapture(t *testing.T, vm *testkit.VM, file string) *exec.Cmd {
	t.Helper()
	cmd := vm.Command(context.Background(), "tshark", "-q", "-i", "eth0", "-w", file)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(stderr.String(), "Capturing on") {
		if time.Now().After(deadline) {
			t.Fatalf("tshark did not start: %s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	return cmd
}

func stopCapture(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	time.Sleep(300 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGINT)
	_ = cmd.Wait()
}

// checkAnswersWithTshark decodes the answers a received: every RST and
// ICMP unreachable from b's addresses must have good IP and ICMP
// checksums; the RSTs that answered CHECKSUM_NONE segments carry whole,
// good TCP checksums (those that answered CHECKSUM_PARTIAL ones carry the
// pseudo-header sum, as any offloaded frame does).
func checkAnswersWithTshark(t *testing.T, file string) {
	t.Helper()
	out, err := exec.Command("tshark", "-r", file, "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
		"-Y", "tcp.flags.reset == 1 || icmp.type == 3 || icmpv6.type == 1", "-T", "fields", "-E", "separator=|",
		"-e", "frame.number", "-e", "ip.checksum.status", "-e", "tcp.checksum.status", "-e", "icmp.checksum.status", "-e", "icmp.type", "-e", "icmp.code",
		"-e", "icmpv6.type", "-e", "icmpv6.code", "-e", "icmpv6.checksum.status", "-e", "_ws.col.Info",
		"-e", "tcp.checksum", "-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst").CombinedOutput()
	if err != nil {
		t.Fatalf("tshark -r: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	rst, icmp, goodTCP, partialTCP := 0, 0, 0, 0
	for _, l := range lines {
		f := strings.Split(l, "|")
		if len(f) < 15 {
			continue
		}
		if first(f[1]) == "0" {
			t.Errorf("bad IPv4 header checksum: %s", l)
		}
		switch {
		case f[4] != "" || f[6] != "":
			icmp++
			// Several values: the answer's, then the quoted packet's.
			if first(f[3]) != "1" && first(f[8]) != "1" {
				t.Errorf("bad ICMP checksum: %s", l)
			}
		default:
			rst++
			if f[2] == "1" {
				goodTCP++
				continue
			}
			// Not a whole checksum: it must be the pseudo-header sum
			// (what the kernel writes into an offloaded segment), so
			// that completing it gives the right checksum.
			src, dst := f[11]+f[13], f[12]+f[14]
			want := pseudoSum(t, src, dst, ProtoTCP, 20)
			if got := f[10]; got != fmt.Sprintf("0x%04x", want) {
				t.Errorf("RST with checksum %s, neither whole nor the pseudo-header sum 0x%04x: %s", got, want, l)
			} else {
				partialTCP++
			}
		}
	}
	t.Logf("tshark: %d RSTs (%d with a whole good checksum, %d with the pseudo-header sum of an offloaded segment), %d ICMP unreachables decoded", rst, goodTCP, partialTCP, icmp)
	if rst < 4 || icmp < 6 || goodTCP < 2 || partialTCP < 2 {
		t.Errorf("tshark saw %d RSTs (%d good), %d ICMP unreachables:\n%s", rst, goodTCP, icmp, out)
	}
}
