package testkit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"golang.org/x/sys/unix"
)

// Host is a network namespace playing the hypervisor. It holds a bridge and
// the host-side ends of the VMs' veths; each of those ends plays a VM's tap
// device, the vNIC that filterd protects.
type Host struct {
	// Name is the namespace's name, "vfh-" and 8 random hex digits.
	Name string
	// Path is where the namespace is bind-mounted, /run/netns/<Name>.
	Path string
	// Bridge is the name of the bridge inside the namespace, "br0".
	Bridge string

	ns     netns.NsHandle
	handle *netlink.Handle

	mu    sync.Mutex
	lastK int // number of the last VM added; the next one gets lastK+1
}

// VM is a network namespace playing a guest: one interface "eth0" whose
// veth peer, the tap, is a port of its Host's bridge.
type VM struct {
	// Name is the namespace's name, "vfv-" and 8 random hex digits.
	Name string
	// Label is the name the test gave AddVM, used in messages.
	Label string
	// Path is where the namespace is bind-mounted, /run/netns/<Name>.
	Path string
	// TapName is the host-side veth, "vnet<k>": the device a filter attaches to.
	TapName string
	// TapIndex is TapName's ifindex in the host namespace.
	TapIndex int
	// MAC is eth0's address, 02:76:66:00:00:<k>: locally administered and
	// deterministic so captures and expectations can name it.
	MAC net.HardwareAddr
	// IPv4 is eth0's address, 10.99.0.<k>/24.
	IPv4 net.IPNet
	// IPv6 is eth0's address, fd99::<k>/64, usable at once (no DAD).
	IPv6 net.IPNet

	host   *Host
	ns     netns.NsHandle
	handle *netlink.Handle
}

const (
	bridgeName = "br0"
	vmIfName   = "eth0"
	maxVMs     = 254 // k is the last octet of 10.99.0.<k>
)

// NewHost creates a host namespace with lo and a bridge "br0" up. Everything
// is removed by t.Cleanup, also when the test fails halfway.
//
// IPv6 is off on the bridge and the taps (not in the VMs), so the host side
// never sends router or neighbour solicitations of its own into a capture.
func NewHost(t testing.TB) *Host {
	t.Helper()
	name, err := nsutil.RandomName("vfh-")
	if err != nil {
		t.Fatal(err)
	}
	path, err := nsutil.CreateNamed(name)
	if err != nil {
		t.Fatalf("create host: %v", err)
	}
	t.Cleanup(func() {
		if err := nsutil.DeleteNamed(path); err != nil {
			t.Errorf("delete host %s: %v", name, err)
		}
	})
	h := &Host{Name: name, Path: path, Bridge: bridgeName}

	h.ns, err = netns.GetFromPath(path)
	if err != nil {
		t.Fatalf("open host netns %s: %v", path, err)
	}
	t.Cleanup(func() { h.ns.Close() })
	h.handle, err = netlink.NewHandleAt(h.ns)
	if err != nil {
		t.Fatalf("netlink handle in host %s: %v", name, err)
	}
	t.Cleanup(h.handle.Close)

	err = h.Do(func() error {
		return writeSysctl("net/ipv6/conf/default/disable_ipv6", "1")
	})
	if err != nil {
		t.Fatalf("host %s: %v", name, err)
	}
	if err := linkUp(h.handle, "lo"); err != nil {
		t.Fatalf("host %s: %v", name, err)
	}
	snooping := false // flood multicast: IPv6 neighbour discovery works without a querier
	br := &netlink.Bridge{LinkAttrs: netlink.NewLinkAttrs(), MulticastSnooping: &snooping}
	br.Name = bridgeName
	if err := h.handle.LinkAdd(br); err != nil {
		t.Fatalf("add bridge %s in host %s: %v", bridgeName, name, err)
	}
	// The bridge dies with the namespace; no cleanup of its own.
	if err := linkUp(h.handle, bridgeName); err != nil {
		t.Fatalf("host %s: %v", name, err)
	}
	return h
}

// Do runs fn on a locked OS thread switched into the host namespace. Sockets
// fn creates stay in the namespace; goroutines fn starts do not run in it.
func (h *Host) Do(fn func() error) error {
	return nsutil.Do(h.ns, h.Name, fn)
}

// Handle returns a netlink handle bound to the host namespace. It is closed
// at cleanup.
func (h *Host) Handle() *netlink.Handle {
	return h.handle
}

// Command returns a command that runs name inside the host namespace through
// `nsenter --net`. Only the network namespace changes: the mount namespace,
// and so /sys/fs/bpf, is the caller's.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsenterCommand(ctx, h.Path, name, args...)
}

// Ifindex returns the index of dev in the host namespace, failing t if there
// is no such device.
func (h *Host) Ifindex(t testing.TB, dev string) int {
	t.Helper()
	l, err := h.handle.LinkByName(dev)
	if err != nil {
		t.Fatalf("ifindex of %s in host %s: %v", dev, h.Name, err)
	}
	return l.Attrs().Index
}

// AddVM creates a VM namespace wired to the host's bridge: the k-th VM of a
// host (k counts from 1) gets tap "vnet<k>", MAC 02:76:66:00:00:<k>,
// 10.99.0.<k>/24 and fd99::<k>/64 on eth0. label only names the VM in
// messages. Everything is removed by t.Cleanup.
func (h *Host) AddVM(t testing.TB, label string) *VM {
	t.Helper()
	h.mu.Lock()
	if h.lastK >= maxVMs {
		h.mu.Unlock()
		t.Fatalf("add vm %q to host %s: already %d VMs, the most a /24 holds", label, h.Name, maxVMs)
	}
	h.lastK++
	k := h.lastK
	h.mu.Unlock()

	name, err := nsutil.RandomName("vfv-")
	if err != nil {
		t.Fatal(err)
	}
	v := &VM{
		Name:    name,
		Label:   label,
		TapName: fmt.Sprintf("vnet%d", k),
		MAC:     net.HardwareAddr{0x02, 0x76, 0x66, 0x00, byte(k >> 8), byte(k)},
		IPv4:    net.IPNet{IP: net.IPv4(10, 99, 0, byte(k)).To4(), Mask: net.CIDRMask(24, 32)},
		IPv6:    net.IPNet{IP: net.ParseIP(fmt.Sprintf("fd99::%x", k)), Mask: net.CIDRMask(64, 128)},
		host:    h,
	}
	fatalf := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("add vm %q (%s) to host %s: %s", label, name, h.Name, fmt.Sprintf(format, args...))
	}

	v.Path, err = nsutil.CreateNamed(name)
	if err != nil {
		fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := nsutil.DeleteNamed(v.Path); err != nil {
			t.Errorf("delete vm %q: %v", label, err)
		}
	})
	v.ns, err = netns.GetFromPath(v.Path)
	if err != nil {
		fatalf("open netns: %v", err)
	}
	t.Cleanup(func() { v.ns.Close() })
	v.handle, err = netlink.NewHandleAt(v.ns)
	if err != nil {
		fatalf("netlink handle: %v", err)
	}
	t.Cleanup(v.handle.Close)

	// Set before eth0 exists so it inherits the defaults: no DAD, so fd99::<k>
	// answers at once, and no router solicitations cluttering captures.
	err = v.Do(func() error {
		for key, val := range map[string]string{
			"net/ipv6/conf/default/accept_dad":           "0",
			"net/ipv6/conf/default/router_solicitations": "0",
		} {
			if err := writeSysctl(key, val); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		fatalf("%v", err)
	}

	// The peer is created straight inside the VM namespace as eth0, so no
	// stray device ever shows up in the host namespace.
	veth := &netlink.Veth{
		LinkAttrs:        netlink.NewLinkAttrs(),
		PeerName:         vmIfName,
		PeerHardwareAddr: v.MAC,
		PeerNamespace:    netlink.NsFd(v.ns),
	}
	veth.Name = v.TapName
	if err := h.handle.LinkAdd(veth); err != nil {
		fatalf("add veth %s/%s: %v", v.TapName, vmIfName, err)
	}
	t.Cleanup(func() {
		// Deleting one end removes both, synchronously, rather than whenever
		// the kernel gets round to tearing down the VM namespace.
		l, err := h.handle.LinkByName(v.TapName)
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return
		}
		if err == nil {
			err = h.handle.LinkDel(l)
		}
		if err != nil {
			t.Errorf("delete tap %s of vm %q in host %s: %v", v.TapName, label, h.Name, err)
		}
	})

	tap, err := h.handle.LinkByName(v.TapName)
	if err != nil {
		fatalf("%v", err)
	}
	v.TapIndex = tap.Attrs().Index
	br, err := h.handle.LinkByName(h.Bridge)
	if err != nil {
		fatalf("%v", err)
	}
	if err := h.handle.LinkSetMasterByIndex(tap, br.Attrs().Index); err != nil {
		fatalf("enslave %s to %s: %v", v.TapName, h.Bridge, err)
	}
	if err := h.handle.LinkSetUp(tap); err != nil {
		fatalf("set %s up: %v", v.TapName, err)
	}

	eth, err := v.handle.LinkByName(vmIfName)
	if err != nil {
		fatalf("%v", err)
	}
	if got := eth.Attrs().HardwareAddr; !bytes.Equal(got, v.MAC) {
		// Kernels that ignore the peer address on creation: set it now.
		if err := v.handle.LinkSetHardwareAddr(eth, v.MAC); err != nil {
			fatalf("set %s address %s: %v", vmIfName, v.MAC, err)
		}
	}
	err = v.Do(func() error {
		return writeSysctl("net/ipv6/conf/"+vmIfName+"/accept_dad", "0")
	})
	if err != nil {
		fatalf("%v", err)
	}
	for _, a := range []*netlink.Addr{
		{IPNet: &v.IPv4},
		{IPNet: &v.IPv6, Flags: unix.IFA_F_NODAD},
	} {
		if err := v.handle.AddrAdd(eth, a); err != nil {
			fatalf("add %s to %s: %v", a.IPNet, vmIfName, err)
		}
	}
	if err := v.handle.LinkSetUp(eth); err != nil {
		fatalf("set %s up: %v", vmIfName, err)
	}
	if err := linkUp(v.handle, "lo"); err != nil {
		fatalf("%v", err)
	}
	// The kernel activates a device's queue and opens the bridge port only
	// when its link watcher runs, up to a second later; until then packets
	// are dropped. Return a VM whose first packet gets through.
	for _, l := range []struct {
		handle *netlink.Handle
		name   string
	}{{h.handle, v.TapName}, {v.handle, vmIfName}} {
		if err := waitOperUp(l.handle, l.name, linkUpTimeout); err != nil {
			fatalf("%v", err)
		}
	}
	return v
}

// linkUpTimeout bounds the wait for a new veth to carry traffic; the kernel
// usually needs well under a second.
const linkUpTimeout = 5 * time.Second

// waitOperUp polls until the device's operational state is up.
func waitOperUp(h *netlink.Handle, name string, timeout time.Duration) error {
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		l, err := h.LinkByName(name)
		if err != nil {
			return err
		}
		state := l.Attrs().OperState
		if state == netlink.OperUp {
			return nil
		}
		if time.Since(start) > timeout {
			return fmt.Errorf("%s still %s after %v", name, state, timeout)
		}
	}
}

// Do runs fn on a locked OS thread switched into the VM namespace. Sockets
// fn creates stay in the namespace; goroutines fn starts do not run in it.
func (v *VM) Do(fn func() error) error {
	return nsutil.Do(v.ns, v.Name, fn)
}

// Handle returns a netlink handle bound to the VM namespace. It is closed at
// cleanup.
func (v *VM) Handle() *netlink.Handle {
	return v.handle
}

// Host returns the host the VM is plugged into.
func (v *VM) Host() *Host {
	return v.host
}

// Command returns a command that runs name inside the VM namespace through
// `nsenter --net`.
func (v *VM) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return nsenterCommand(ctx, v.Path, name, args...)
}

// DialTCP connects to addr from inside the VM. The socket is created in the
// VM namespace; the connection may then be used from any goroutine.
func (v *VM) DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var c net.Conn
	err := v.Do(func() (err error) {
		var d net.Dialer
		d.SetMultipathTCP(false) // plain TCP, whatever Go's default becomes
		c, err = d.DialContext(ctx, "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Label, err)
	}
	return c, nil
}

// ListenTCP listens on addr inside the VM. The listener speaks plain TCP,
// not MPTCP, so filters see the segments a guest would send.
func (v *VM) ListenTCP(addr string) (net.Listener, error) {
	var l net.Listener
	err := v.Do(func() (err error) {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false)
		l, err = lc.Listen(context.Background(), "tcp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Label, err)
	}
	return l, nil
}

// ServeTCP listens on port of the VM's IPv4 address until t ends and runs
// handle on each connection in its own goroutine, closing it after;
// handle nil closes each connection at once (a port that accepts).
func (v *VM) ServeTCP(t testing.TB, port int, handle func(net.Conn)) {
	t.Helper()
	l, err := v.ListenTCP(net.JoinHostPort(v.IPv4.IP.String(), strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if handle != nil {
					handle(c)
				}
			}()
		}
	}()
}

// ListenUDP binds a UDP socket to addr inside the VM.
func (v *VM) ListenUDP(addr string) (*net.UDPConn, error) {
	var c net.PacketConn
	err := v.Do(func() (err error) {
		c, err = net.ListenPacket("udp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Label, err)
	}
	return c.(*net.UDPConn), nil
}

// DialUDP returns a UDP socket inside the VM connected to addr.
func (v *VM) DialUDP(ctx context.Context, addr string) (*net.UDPConn, error) {
	var c net.Conn
	err := v.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, "udp", addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", v.Label, err)
	}
	return c.(*net.UDPConn), nil
}

// pingInterval spaces echo requests; pingLinger is how long Ping waits for a
// reply after the last request.
const (
	pingInterval = 200 * time.Millisecond
	pingLinger   = time.Second
)

// Ping sends count ICMP (or ICMPv6) echo requests from inside the VM to dst,
// pingInterval apart, and returns nil as soon as one reply arrives, or an
// error naming source and destination when none does within pingLinger of
// the last request. It uses a raw socket, so it needs root but no ping binary.
func (v *VM) Ping(t testing.TB, dst net.IP, count int) error {
	t.Helper()
	if count < 1 {
		count = 1
	}
	v6 := dst.To4() == nil
	network, src, reqType, replyType := "ip4:icmp", v.IPv4.IP, byte(8), byte(0)
	if v6 {
		network, src, reqType, replyType = "ip6:ipv6-icmp", v.IPv6.IP, 128, 129
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("ping %s from %s (vm %q): %s", dst, src, v.Label, fmt.Sprintf(format, args...))
	}

	var conn net.PacketConn
	if err := v.Do(func() (err error) {
		conn, err = net.ListenPacket(network, "")
		return err
	}); err != nil {
		return fail("open raw socket: %v", err)
	}
	defer conn.Close()

	// A raw socket sees every ICMP packet of the namespace: the random id and
	// token pick out the replies to this call.
	var token [10]byte
	if _, err := rand.Read(token[:]); err != nil {
		return fail("%v", err)
	}
	id := binary.BigEndian.Uint16(token[:2])
	payload := token[2:]
	to := &net.IPAddr{IP: dst}
	if v6 && dst.IsLinkLocalUnicast() {
		to.Zone = vmIfName
	}

	buf := make([]byte, 1500)
	deadline := time.Now().Add(time.Duration(count-1)*pingInterval + pingLinger)
	var next time.Time
	for seq := 0; ; {
		now := time.Now()
		if seq < count && !now.Before(next) {
			msg := echoRequest(reqType, id, uint16(seq), payload, !v6)
			if _, err := conn.WriteTo(msg, to); err != nil {
				return fail("send echo request: %v", err)
			}
			seq++
			next = now.Add(pingInterval)
		}
		wait := deadline
		if seq < count && next.Before(wait) {
			wait = next
		}
		if !now.Before(deadline) {
			return fail("no echo reply to %d request(s)", count)
		}
		conn.SetReadDeadline(wait)
		n, _, err := conn.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return fail("receive: %v", err)
		}
		// Go strips the IPv4 header; IPv6 raw sockets never deliver it.
		m := buf[:n]
		if len(m) >= 8+len(payload) && m[0] == replyType && m[1] == 0 &&
			binary.BigEndian.Uint16(m[4:6]) == id && bytes.Equal(m[8:8+len(payload)], payload) {
			return nil
		}
	}
}

// echoRequest builds an ICMP echo request. ICMPv4 needs its checksum filled
// in; the kernel computes ICMPv6's, which covers a pseudo-header.
func echoRequest(typ byte, id, seq uint16, payload []byte, withChecksum bool) []byte {
	b := make([]byte, 8+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], payload)
	if withChecksum {
		binary.BigEndian.PutUint16(b[2:], inetChecksum(b))
	}
	return b
}

// inetChecksum is the RFC 1071 one's complement checksum.
func inetChecksum(b []byte) uint16 {
	var sum uint32
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Iperf3Server starts `iperf3 -s -p port` inside the VM and returns once the
// port is listening. The server is killed by pid at cleanup; if it exits
// early, t fails with its output.
func (v *VM) Iperf3Server(t testing.TB, port int) {
	t.Helper()
	cmd := v.Command(context.Background(), "iperf3", "-s", "-p", strconv.Itoa(port))
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start iperf3 server in vm %q: %v", v.Label, err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill() // an error means it already exited
		<-exited
	})

	const startTimeout = 5 * time.Second
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-exited:
			t.Fatalf("iperf3 server in vm %q exited: %v\n%s", v.Label, waitErr, out)
		default:
		}
		var listening bool
		err := v.Do(func() (err error) {
			listening, err = tcpListening(port)
			return err
		})
		if err != nil {
			t.Fatalf("iperf3 server in vm %q: %v", v.Label, err)
		}
		if listening {
			return
		}
		if time.Since(start) > startTimeout {
			t.Fatalf("iperf3 server in vm %q: port %d not listening after %v\n%s", v.Label, port, startTimeout, out)
		}
	}
}

// tcpListening reports whether a TCP socket listens on port in the calling
// thread's network namespace. Reading /proc rather than connecting keeps
// iperf3 from logging a bogus client.
func tcpListening(port int) (bool, error) {
	suffix := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"} {
		data, err := os.ReadFile(f)
		if err != nil {
			return false, fmt.Errorf("read listening sockets: %w", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			const tcpListen = "0A"
			if len(fields) > 3 && strings.HasSuffix(fields[1], suffix) && fields[3] == tcpListen {
				return true, nil
			}
		}
	}
	return false, nil
}

// syncBuffer collects a child's output, written by exec's copying goroutine
// and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func nsenterCommand(ctx context.Context, nsPath, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + nsPath, "--", name}, args...)...)
}

func linkUp(h *netlink.Handle, name string) error {
	l, err := h.LinkByName(name)
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	return nil
}

// writeSysctl sets /proc/sys/<key>. Under /proc/sys/net the value belongs to
// the network namespace of the calling thread, so call it from Do.
func writeSysctl(key, value string) error {
	if err := os.WriteFile("/proc/sys/"+key, []byte(value), 0o644); err != nil {
		return fmt.Errorf("set sysctl %s=%s: %w", strings.ReplaceAll(key, "/", "."), value, err)
	}
	return nil
}

// probe returns why r is unmet, or "" when it is met.
func probe(r Requirement) string {
	switch r {
	case Root:
		if euid := os.Geteuid(); euid != 0 {
			return fmt.Sprintf("needs root, running as euid %d", euid)
		}
	case BPF:
		return probeBPF()
	case TCX:
		return probeTCX()
	case Iperf3, Tshark, Nft:
		if _, err := exec.LookPath(r.String()); err != nil {
			return fmt.Sprintf("%v (install it with scripts/deps.sh)", err)
		}
	default:
		return "unknown requirement"
	}
	return ""
}

const bpffsPath = "/sys/fs/bpf"

// probeBPF runs once per test binary: mounting is not something to race on.
var probeBPF = sync.OnceValue(func() string {
	if err := ensureBPFFS(); err != nil {
		return err.Error()
	}
	if err := features.HaveProgramType(ebpf.SchedCLS); err != nil {
		return fmt.Sprintf("bpf() cannot load a sched_cls program: %v", err)
	}
	return ""
})

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// ensureBPFFS mounts bpffs at /sys/fs/bpf when root and it is missing. A
// flock keeps parallel test binaries from stacking two mounts, which would
// hide whatever the first one pinned.
func ensureBPFFS() error {
	if isBPFFS(bpffsPath) {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("bpffs is not mounted at %s and only root can mount it", bpffsPath)
	}
	if err := os.MkdirAll(bpffsPath, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", bpffsPath, err)
	}
	dir, err := os.Open(bpffsPath)
	if err != nil {
		return fmt.Errorf("open %s: %w", bpffsPath, err)
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", bpffsPath, err)
	}
	defer unix.Flock(int(dir.Fd()), unix.LOCK_UN)
	if isBPFFS(bpffsPath) {
		return nil
	}
	if err := unix.Mount("bpf", bpffsPath, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs at %s: %w", bpffsPath, err)
	}
	return nil
}

// probeTCX attaches a real program through a tcx link to a veth in
// a throwaway namespace: proof that attaching works, not only that the
// syscall exists.
var probeTCX = sync.OnceValue(func() string {
	if os.Geteuid() != 0 {
		return "probing tcx needs root"
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SchedCLS,
		License:      "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
	})
	if err != nil {
		return fmt.Sprintf("load a sched_cls program: %v", err)
	}
	defer prog.Close()

	ns, err := nsutil.CreateAnonymous()
	if err != nil {
		return err.Error()
	}
	defer ns.Close()
	err = nsutil.Do(ns, "tcx-probe", func() error {
		// A veth, not a dummy: this kernel builds veth in, not dummy.
		veth := &netlink.Veth{LinkAttrs: netlink.NewLinkAttrs(), PeerName: "probe1"}
		veth.Name = "probe0"
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("add probe veth: %w", err)
		}
		l, err := netlink.LinkByName(veth.Name)
		if err != nil {
			return err
		}
		tcx, err := link.AttachTCX(link.TCXOptions{
			Interface: l.Attrs().Index,
			Program:   prog,
			Attach:    ebpf.AttachTCXIngress,
		})
		if err != nil {
			return fmt.Errorf("attach tcx to probe veth: %w", err)
		}
		return tcx.Close()
	})
	if errors.Is(err, ebpf.ErrNotSupported) {
		return fmt.Sprintf("kernel lacks tcx links (Linux 6.6+): %v", err)
	}
	if err != nil {
		return err.Error()
	}
	return ""
})
