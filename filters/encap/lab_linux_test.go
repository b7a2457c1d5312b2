package encap

// Test harness for multi-host overlays: simulated hosts (testkit hosts)
// joined by an underlay bridge in its own namespace, each with its own
// collect-metadata VXLAN device (both from enclab, which filterd's tests
// and vfbench share); VMs re-addressed into segments; the encap filter
// attached to a tap given by name (so a VM moved to another host can be
// attached there); AF_PACKET captures; a pcap writer for tshark.
//
// What could move to sdk/testkit: an AttachFilter that takes (host, tap)
// instead of a VM, VM.Capture, and WritePcap.

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filters/encap/enclab"
	"github.com/vnicfilter/vnicfilter/internal/nsutil"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

const (
	vxlanDev  = enclab.VXLANDev
	vxlanPort = enclab.VXLANPort
)

// underlay is the simulated hosts' network (enclab.Underlay), removed when
// the test ends.
type underlay struct{ *enclab.Underlay }

func newUnderlay(t testing.TB) *underlay {
	t.Helper()
	u, err := enclab.NewUnderlay()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("delete underlay %s: %v", u.Name, err)
		}
	})
	return &underlay{u}
}

// simHost is a hypervisor: a testkit host with an uplink to the underlay
// and a VXLAN device, and its copy of the forwarding table.
type simHost struct {
	*testkit.Host
	Label string
	IP    netip.Addr
	FIB   string // this host's copy of the forwarding table
}

// addHost creates host number i (1-based) with underlay address ip.
func (u *underlay) addHost(t testing.TB, label string, i int, ip netip.Addr, mtu int) *simHost {
	t.Helper()
	h := &simHost{Host: testkit.NewHost(t), Label: label, IP: ip, FIB: filepath.Join(t.TempDir(), "fib-"+label+".json")}
	hns, err := netns.GetFromPath(h.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer hns.Close()
	t.Cleanup(func() {
		if err := h.Do(func() error { return DetachDevice(vxlanDev, DeviceOptions{}) }); err != nil {
			t.Errorf("detach %s on %s: %v", vxlanDev, label, err)
		}
	})
	if err := u.Plug(hns, label, i, ip, mtu); err != nil {
		t.Fatal(err)
	}
	return h
}

func (u *underlay) Do(fn func() error) error { return nsutil.Do(u.NS, u.Name, fn) }

func prefixNet(p netip.Prefix) *net.IPNet { return enclab.PrefixNet(p) }

func waitUp(h *netlink.Handle, name string) error { return enclab.WaitUp(h, name) }

// vmAddr gives a VM its segment identity: MAC, addresses, MTU on ifName.
func setVMAddrs(t testing.TB, h *netlink.Handle, ifName string, mac net.HardwareAddr, v4, v6 netip.Addr, mtu int) {
	t.Helper()
	l, err := h.LinkByName(ifName)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if err := h.AddrDel(l, &a); err != nil {
			t.Fatalf("remove %s: %v", a.IPNet, err)
		}
	}
	if !bytes.Equal(l.Attrs().HardwareAddr, mac) {
		if err := h.LinkSetHardwareAddr(l, mac); err != nil {
			t.Fatalf("set %s %s: %v", ifName, mac, err)
		}
	}
	if err := h.LinkSetMTU(l, mtu); err != nil {
		t.Fatal(err)
	}
	for _, p := range []netip.Prefix{netip.PrefixFrom(v4, 24), netip.PrefixFrom(v6, 64)} {
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(p), Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatalf("add %s: %v", p, err)
		}
	}
}

// attached is one encap instance in front of a tap, with the real
// datapath (as testkit's VM.AttachFilter, but for any tap of a host).
type attached struct {
	host *simHost
	vnic *datapath.VNIC
	fp   *fastPath
	raw  map[string]string
	once sync.Once
}

func attach(t testing.TB, h *simHost, tap string, params map[string]string) *attached {
	t.Helper()
	p, err := sdk.ValidateParams(Descriptor.Params, params)
	if err != nil {
		t.Fatalf("parameters: %v", err)
	}
	name, err := nsutil.RandomName("vftest-")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join("/sys/fs/bpf", name)
	t.Cleanup(func() { _ = os.RemoveAll(root) })
	a := &attached{host: h, raw: params}
	var fp sdk.FastPath
	err = h.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: root})
		if err != nil {
			return err
		}
		a.vnic, err = dp.Create(tap, func(vn *datapath.VNIC) error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: vn.Name, Ifindex: vn.Ifindex}, Directions: Descriptor.Dirs(), FailMode: Descriptor.FailMode, Params: p}
			var err error
			if fp, err = Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, vn.Maps(), vn.SlotDir(0))); err != nil {
				return err
			}
			return vn.SetSlot(0, fp.Program(), datapath.Slot{Dirs: inst.Directions})
		})
		return err
	})
	if err != nil {
		if fp != nil {
			fp.Close()
		}
		t.Fatalf("attach encap to %s on %s: %v", tap, h.Label, err)
	}
	a.fp = fp.(*fastPath)
	t.Cleanup(a.detach)
	return a
}

// detach removes the chain and closes the instance (as filterd does when a
// VM stops).
func (a *attached) detach() {
	a.once.Do(func() {
		_ = a.host.Do(a.vnic.Detach)
		a.fp.Close()
	})
}

// reload re-reads the table, as POST .../reload does.
func (a *attached) reload() error {
	p, err := sdk.ValidateParams(Descriptor.Params, a.raw)
	if err != nil {
		return err
	}
	return a.host.Do(func() error { return a.fp.Reload(p) })
}

func (a *attached) counter(t testing.TB, name string) uint64 {
	t.Helper()
	cs, err := a.fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name {
			return uint64(c.Value)
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// snapLen is how much of each frame a capture keeps: every header and
// marker the tests look for.
const snapLen = 256

// frame is one captured frame.
type frame struct {
	at      time.Time
	ifindex int
	length  int    // on the wire
	data    []byte // the first snapLen bytes at most
}

// capture records every frame a namespace receives (AF_PACKET, all
// devices but lo, outgoing frames skipped).
type capture struct {
	fd     int
	ifname string // only this device when set
	mu     sync.Mutex
	frames []frame
	drops  uint32
	stop   chan struct{}
	done   chan struct{}
}

func startCapture(t testing.TB, do func(func() error) error, ifname string) *capture {
	t.Helper()
	c := &capture{stop: make(chan struct{}), done: make(chan struct{}), ifname: ifname}
	err := do(func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		if ifname != "" {
			l, err := netlink.LinkByName(ifname)
			if err != nil {
				unix.Close(fd)
				return err
			}
			if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: l.Attrs().Index}); err != nil {
				unix.Close(fd)
				return err
			}
		}
		// Large enough for the backlog of a bulk TCP test (64 KiB GRO
		// frames count whole); losses are reported by dropped().
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 64<<20); err != nil {
			unix.Close(fd)
			return err
		}
		tv := unix.Timeval{Usec: 50000}
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return err
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		t.Fatalf("capture: %v", err)
	}
	go func() {
		defer close(c.done)
		buf := make([]byte, snapLen)
		for {
			select {
			case <-c.stop:
				return
			default:
			}
			n, from, err := unix.Recvfrom(c.fd, buf, unix.MSG_TRUNC)
			if err != nil {
				continue
			}
			ll, ok := from.(*unix.SockaddrLinklayer)
			if !ok || ll.Ifindex == 1 || ll.Pkttype == unix.PACKET_OUTGOING {
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, frame{at: time.Now(), ifindex: ll.Ifindex, length: n, data: append([]byte(nil), buf[:min(n, snapLen)]...)})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(c.close)
	return c
}

func (c *capture) close() {
	select {
	case <-c.done:
		return
	default:
	}
	close(c.stop)
	<-c.done
	unix.Close(c.fd)
}

// dropped returns how many frames the kernel could not queue to the
// capture so far: a capture that lost frames proves nothing.
func (c *capture) dropped() (uint32, error) {
	st, err := unix.GetsockoptTpacketStats(c.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
	if err != nil {
		return 0, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.drops += st.Drops // the kernel resets its counters on every read
	return c.drops, nil
}

func (c *capture) snapshot() []frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]frame(nil), c.frames...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// writePcap writes frames as a classic pcap file (Ethernet link type).
func writePcap(path string, frames []frame) error {
	var b bytes.Buffer
	hdr := make([]byte, 24)
	binary.LittleEndian.PutUint32(hdr[0:], 0xa1b2c3d4)
	binary.LittleEndian.PutUint16(hdr[4:], 2)
	binary.LittleEndian.PutUint16(hdr[6:], 4)
	binary.LittleEndian.PutUint32(hdr[16:], snapLen)
	binary.LittleEndian.PutUint32(hdr[20:], 1) // LINKTYPE_ETHERNET
	b.Write(hdr)
	for _, f := range frames {
		rec := make([]byte, 16)
		binary.LittleEndian.PutUint32(rec[0:], uint32(f.at.Unix()))
		binary.LittleEndian.PutUint32(rec[4:], uint32(f.at.Nanosecond()/1000))
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(f.data)))
		binary.LittleEndian.PutUint32(rec[12:], uint32(f.length))
		b.Write(rec)
		b.Write(f.data)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// markSpy is a tcx program put at the head of a tap's egress, before the
// chain's dispatcher: it records every skb->mark it sees (the mark the
// encap programs set, ENCAP_MARK | the sender's group) and lets the frame
// go on to the chain.
type markSpy struct {
	marks *ebpf.Map
}

func attachMarkSpy(t testing.TB, h *simHost, tapIndex int) *markSpy {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 4, MaxEntries: 256})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	const markOff = 8 // offsetof(struct __sk_buff, mark)
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.SchedCLS,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.LoadMem(asm.R2, asm.R1, markOff, asm.Word),
			asm.StoreMem(asm.RFP, -4, asm.R2, asm.Word), // key: the mark
			asm.StoreImm(asm.RFP, -8, 1, asm.Word),      // value
			asm.LoadMapPtr(asm.R1, m.FD()),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -4),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, -8),
			asm.Mov.Imm(asm.R4, 0),
			asm.FnMapUpdateElem.Call(),
			asm.Mov.Imm(asm.R0, -1), // TCX_NEXT: on to the chain
			asm.Return(),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prog.Close() })
	err = h.Do(func() error {
		l, err := link.AttachTCX(link.TCXOptions{Interface: tapIndex, Program: prog, Attach: ebpf.AttachTCXEgress, Anchor: link.Head()})
		if err != nil {
			return err
		}
		t.Cleanup(func() { l.Close() })
		return nil
	})
	if err != nil {
		t.Fatalf("attach mark spy: %v", err)
	}
	return &markSpy{marks: m}
}

// groups returns the senders' groups of the frames delivered by encap.
func (s *markSpy) groups(t testing.TB) map[uint16]bool {
	t.Helper()
	out := map[uint16]bool{}
	var k, v uint32
	it := s.marks.Iterate()
	for it.Next(&k, &v) {
		if k&0xffff0000 == 0x7e6c0000 {
			out[uint16(k)] = true
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
