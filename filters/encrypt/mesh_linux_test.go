package encrypt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// A mesh is cryptlab's simulated hypervisors (hosts in namespaces on an
// underlay, routed VM subnets 10.99.<i>.0/24, each host's key pair), seen
// through the fields these tests were written with. The peers files list
// the IPv4 subnets only (TestBadInput's positions depend on it).
type mesh struct {
	t        testing.TB
	lab      *cryptlab.Mesh
	underlay *testkit.Host
	hosts    []*simHost
	dir      string
}

type simHost struct {
	i      int
	h      *testkit.Host
	ul     netip.Addr
	keyDir string
	peers  string // peers file
	policy string // policy file
	pub    Key
	lab    *cryptlab.Host
}

func newMesh(t testing.TB, n int) *mesh {
	t.Helper()
	lab := cryptlab.New(t, n, cryptlab.Filter{Descriptor: Descriptor, HostKey: HostPublicKey})
	m := &mesh{t: t, lab: lab, underlay: lab.Underlay, dir: lab.Dir}
	for _, h := range lab.Hosts {
		pub, err := ParseKey(h.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		m.hosts = append(m.hosts, &simHost{i: h.I, h: h.H, ul: h.UnderlayIP, keyDir: h.KeyDir, peers: h.PeersFile, policy: h.PolicyFile, pub: pub, lab: h})
	}
	for _, sh := range m.hosts {
		m.writePeers(sh, m.hosts)
		m.writePolicy(sh, nil)
	}
	return m
}

type peersJSON struct {
	ListenPort int        `json:"listen_port"`
	Prefixes   []string   `json:"prefixes"`
	Peers      []peerJSON `json:"peers"`
}

type peerJSON struct {
	Name      string   `json:"name"`
	PublicKey string   `json:"public_key"`
	Endpoint  string   `json:"endpoint"`
	Prefixes  []string `json:"prefixes"`
}

func hostName(i int) string { return fmt.Sprintf("host-%d", i) }

// writePeers writes sh's peers file listing the hosts of others (sh
// itself skipped), as the control plane would.
func (m *mesh) writePeers(sh *simHost, others []*simHost) {
	m.t.Helper()
	pf := peersJSON{ListenPort: DefaultListenPort, Prefixes: []string{fmt.Sprintf("10.99.%d.0/24", sh.i)}}
	for _, o := range others {
		if o == sh {
			continue
		}
		pf.Peers = append(pf.Peers, peerJSON{Name: hostName(o.i), PublicKey: o.pub.String(),
			Endpoint: netip.AddrPortFrom(o.ul, DefaultListenPort).String(), Prefixes: []string{fmt.Sprintf("10.99.%d.0/24", o.i)}})
	}
	m.writeJSON(sh.peers, pf)
}

// writePolicy writes sh's policy: the whole VM space is protected for
// protect=all vNICs; vnics adds per-vNIC destinations.
func (m *mesh) writePolicy(sh *simHost, vnics map[string][]string) {
	m.t.Helper()
	if vnics == nil {
		vnics = map[string][]string{}
	}
	m.writeJSON(sh.policy, map[string]any{"space": []string{"10.99.0.0/16"}, "vnics": vnics})
}

func (m *mesh) writeJSON(path string, v any) {
	m.t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(path+".tmp", b, 0o600); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		m.t.Fatal(err)
	}
}

// addVM adds a VM to sh, addressed 10.99.<i>.<k>/24 (and
// fd99:<i>::<k>/64) with sh's bridge as its gateway.
func (m *mesh) addVM(sh *simHost, label string) *testkit.VM {
	m.t.Helper()
	return m.lab.AddVM(sh.lab, label)
}

// params are the encrypt parameters of a protect=all vNIC on sh. The
// short keepalive and peer timeout make outages show within seconds; the
// tests' flows are all two-way.
func (m *mesh) params(sh *simHost, extra map[string]string) map[string]string {
	params := map[string]string{"peers": sh.peers, "policy": sh.policy, "protect": "all", "key_dir": sh.keyDir, "keepalive": "1s", "peer_timeout": "4s"}
	for k, val := range extra {
		params[k] = val
	}
	return params
}

// protect attaches the encrypt filter to v's vNIC with the host's files.
func (m *mesh) protect(sh *simHost, v *testkit.VM, extra map[string]string) *fastPath {
	m.t.Helper()
	c := v.AttachFilter(m.t, Descriptor, m.params(sh, extra))
	return c.FastPath.(*fastPath)
}

// reload makes fp re-read its host's files, as POST .../reload does.
func (m *mesh) reload(sh *simHost, fp *fastPath, extra map[string]string) error {
	p, err := sdk.ValidateParams(Descriptor.Params, m.params(sh, extra))
	if err != nil {
		m.t.Fatal(err)
	}
	return fp.Reload(p)
}

// waitUp waits until fp's tunnel reports every named peer up.
func waitUp(t testing.TB, fp *fastPath, peers ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := fp.tunnel.Status()
		up := map[string]bool{}
		for _, p := range st.Peers {
			up[p.Name] = p.Up
		}
		all := true
		for _, p := range peers {
			all = all && up[p]
		}
		if all {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tunnel %s: peers %v not up after 20s: %+v", st.Device, peers, st.Peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// counter returns fp's counter name{peer=peer}.
func counter(t testing.TB, fp *fastPath, name, peer string) float64 {
	t.Helper()
	cs, err := fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if c.Name == name && c.Labels["peer"] == peer {
			return c.Value
		}
	}
	t.Fatalf("no counter %s{peer=%q}", name, peer)
	return 0
}

// capture records every frame on any interface of the underlay namespace
// (the bridge forwards between its ports without passing frames up to br0).
type capture struct {
	mu     sync.Mutex
	frames [][]byte
	stop   func()
}

func (m *mesh) capture() *capture {
	m.t.Helper()
	c := &capture{}
	var fd int
	err := m.underlay.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: 0})
	})
	if err != nil {
		m.t.Fatalf("capture on the underlay: %v", err)
	}
	tv := unix.Timeval{Usec: 100000}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		stopping := false
		for {
			select {
			case <-quit:
				stopping = true
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if stopping {
					return // drained: nothing for 100 ms after stop
				}
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			close(quit)
			<-done
			unix.Close(fd)
		})
	}
	m.t.Cleanup(c.stop)
	return c
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// summary classifies the captured IPv4 frames.
type summary struct {
	frames    int
	wireguard int // UDP to or from the WireGuard port
	other     int // anything else over IPv4
	clearIPs  map[string]int
}

func (c *capture) summarize() summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := summary{clearIPs: map[string]int{}}
	for _, f := range c.frames {
		s.frames++
		if len(f) < 34 || binary.BigEndian.Uint16(f[12:14]) != unix.ETH_P_IP {
			continue
		}
		ip := f[14:]
		ihl := int(ip[0]&0xf) * 4
		src, dst := netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20]))
		if ip[9] == unix.IPPROTO_UDP && len(ip) >= ihl+4 &&
			(binary.BigEndian.Uint16(ip[ihl:]) == DefaultListenPort || binary.BigEndian.Uint16(ip[ihl+2:]) == DefaultListenPort) {
			s.wireguard++
			continue
		}
		s.other++
		s.clearIPs[src.String()+">"+dst.String()]++
	}
	return s
}

// contains reports whether any captured frame holds needle.
func (c *capture) contains(needle []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.frames {
		if bytes.Contains(f, needle) {
			return true
		}
	}
	return false
}

func (c *capture) reset() {
	c.mu.Lock()
	c.frames = nil
	c.mu.Unlock()
}

// exchange sends payload over TCP from client to server's port and reads
// it echoed back; it returns the first error.
func exchange(ctx context.Context, client, server *testkit.VM, port int, payload []byte) error {
	l, err := server.ListenTCP(net.JoinHostPort(server.IPv4.IP.String(), strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c)
	}()
	c, err := client.DialTCP(ctx, net.JoinHostPort(server.IPv4.IP.String(), strconv.Itoa(port)))
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	go func() { _, _ = c.Write(payload) }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return errors.New("echo differs")
	}
	return nil
}
