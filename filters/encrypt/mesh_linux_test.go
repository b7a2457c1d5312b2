package encrypt

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"

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

// hostName is host i's peer name.
func hostName(i int) string { return cryptlab.HostName(i) }

// writePeers writes sh's peers file listing the hosts of others (sh
// itself skipped), as the control plane would.
func (m *mesh) writePeers(sh *simHost, others []*simHost) {
	m.t.Helper()
	pf := cryptlab.PeersJSON{ListenPort: DefaultListenPort, Prefixes: []string{fmt.Sprintf("10.99.%d.0/24", sh.i)}}
	for _, o := range others {
		if o == sh {
			continue
		}
		pf.Peers = append(pf.Peers, cryptlab.PeerJSON{Name: hostName(o.i), PublicKey: o.pub.String(),
			Endpoint: netip.AddrPortFrom(o.ul, DefaultListenPort).String(), Prefixes: []string{fmt.Sprintf("10.99.%d.0/24", o.i)}})
	}
	m.lab.WriteJSON(sh.peers, pf)
}

// writePolicy writes sh's policy: the whole VM space is protected for
// protect=all vNICs; vnics adds per-vNIC destinations.
func (m *mesh) writePolicy(sh *simHost, vnics map[string][]string) {
	m.t.Helper()
	if vnics == nil {
		vnics = map[string][]string{}
	}
	m.lab.WritePolicy(sh.lab, map[string]any{"space": []string{"10.99.0.0/16"}, "vnics": vnics})
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
func waitUp(t testing.TB, fp *fastPath, peers ...string) { cryptlab.WaitUp(t, fp, peers...) }

// counter returns fp's counter name{peer=peer}.
func counter(t testing.TB, fp sdk.FastPath, name, peer string) float64 {
	return cryptlab.Counter(t, fp, name, peer)
}

// capture is cryptlab's capture of the underlay with the checks these
// tests were written with.
type capture struct{ *cryptlab.Capture }

func (m *mesh) capture() *capture { return &capture{m.lab.Capture()} }

func (c *capture) stop()                       { c.Stop() }
func (c *capture) contains(needle []byte) bool { return c.Contains(needle) }
func (c *capture) reset()                      { c.Reset() }

// summary classifies the captured IPv4 frames.
type summary struct {
	frames    int
	wireguard int // UDP to or from the WireGuard port
	other     int // anything else over IPv4
	clearIPs  map[string]int
}

func (c *capture) summarize() summary {
	s := summary{clearIPs: map[string]int{}}
	for _, f := range c.Frames() {
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

// exchange sends payload over TCP from client to server's IPv4 address
// and port and reads it echoed back; it returns the first error.
func exchange(ctx context.Context, client, server *testkit.VM, port int, payload []byte) error {
	return cryptlab.Echo(ctx, client, server, server.IPv4.IP, port, payload)
}
