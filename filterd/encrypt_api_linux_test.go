package filterd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// meshHost is one simulated host of TestEncryptPeersAPI: its filterd,
// its VM and what GET /v1/encrypt/host said.
type meshHost struct {
	h    *cryptlab.Host
	d    *daemon
	vm   *testkit.VM
	info *api.EncryptHost
}

func (mh *meshHost) keyDir() string { return filepath.Join(mh.d.dir, "state", "encrypt") }

// underlay is the host's endpoint on the underlay, from its GET host.
func (mh *meshHost) underlay(t *testing.T) string {
	t.Helper()
	for _, e := range mh.info.Endpoints {
		if ap, err := netip.ParseAddrPort(e.Endpoint); err == nil && e.Interface == "ul0" && ap.Addr().Is4() {
			return e.Endpoint
		}
	}
	t.Fatalf("host-%d: no IPv4 endpoint on ul0 in %+v", mh.h.I, mh.info.Endpoints)
	return ""
}

// peersDoc is the peers document the control plane's agent builds for
// self from the others' GET /v1/encrypt/host.
func peersDoc(t *testing.T, self *meshHost, others ...*meshHost) []byte {
	t.Helper()
	pf := cryptlab.PeersJSON{ListenPort: cryptlab.ListenPort, Prefixes: cryptlab.Prefixes(self.h.I), Peers: []cryptlab.PeerJSON{}}
	for _, o := range others {
		pf.Peers = append(pf.Peers, cryptlab.PeerJSON{Name: o.h.Name(), PublicKey: o.info.PublicKey, Endpoint: o.underlay(t), Prefixes: cryptlab.Prefixes(o.h.I)})
	}
	b, err := json.MarshalIndent(pf, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (mh *meshHost) inspect(t *testing.T) encrypt.Inspection {
	t.Helper()
	_, raw, err := mh.d.client.Inspect(context.Background(), mh.vm.TapName, 0, nil)
	if err != nil {
		t.Fatalf("host-%d: inspect: %v", mh.h.I, err)
	}
	var in encrypt.Inspection
	if err := json.Unmarshal(raw, &in); err != nil {
		t.Fatal(err)
	}
	return in
}

// waitPeers waits until the host's tunnel lists exactly peers, all up.
func (mh *meshHost) waitPeers(t *testing.T, peers ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := mh.inspect(t).Tunnel
		var up []string
		for _, p := range st.Peers {
			if p.Up {
				up = append(up, p.Name)
			}
		}
		if len(st.Peers) == len(peers) && strings.Join(up, ",") == strings.Join(peers, ",") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("host-%d: want peers %v up, have %+v", mh.h.I, peers, st.Peers)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tcpEcho sends payload over TCP from client to server and reads it back
// (5 s at most).
func tcpEcho(client, server *testkit.VM, port int, payload []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cryptlab.Echo(ctx, client, server, server.IPv4.IP, port, payload)
}

// meshSecret is the payload the mesh tests look for on the underlay.
var meshSecret = []byte("CARDHOLDER-7f31-")

// pair is the VMs of two hosts, client first.
func pair(a, b *meshHost) [2]*testkit.VM { return [2]*testkit.VM{a.vm, b.vm} }

// echoes runs TCP echoes of meshSecret between VM pairs (client first,
// ports from port on) while capturing the underlay; it answers what the
// capture saw of them and whether the payload was among it.
func echoes(t *testing.T, m *cryptlab.Mesh, port int, pairs ...[2]*testkit.VM) (s cryptlab.Summary, payload bool) {
	t.Helper()
	capt := m.Capture()
	var addrs []netip.Addr
	for i, p := range pairs {
		if err := tcpEcho(p[0], p[1], port+i, bytes.Repeat(meshSecret, 300)); err != nil {
			capt.Stop()
			t.Fatalf("%s -> %s: %v", p[0].Label, p[1].Label, err)
		}
		addrs = append(addrs, vmAddr(p[0]), vmAddr(p[1]))
	}
	capt.Stop()
	return capt.Summarize(addrs...), capt.Contains(meshSecret)
}

// exchange runs echoes and checks the underlay: WireGuard only, no
// payload, no packet between the VMs in clear.
func exchange(t *testing.T, m *cryptlab.Mesh, port int, pairs ...[2]*testkit.VM) {
	t.Helper()
	if s, payload := echoes(t, m, port, pairs...); payload || s.Between != 0 || s.WireGuard == 0 {
		t.Fatalf("underlay: payload seen %v, %+v (want WireGuard only)", payload, s)
	}
}

// exchangeClear runs echoes and checks that they crossed the underlay in
// clear: the payload and packets between the VMs seen.
func exchangeClear(t *testing.T, m *cryptlab.Mesh, port int, pairs ...[2]*testkit.VM) {
	t.Helper()
	if s, payload := echoes(t, m, port, pairs...); !payload || s.Between == 0 {
		t.Fatalf("underlay: payload seen %v, %+v (want the flow in clear)", payload, s)
	}
}

func vmAddr(v *testkit.VM) netip.Addr {
	a, _ := netip.AddrFromSlice(v.IPv4.IP.To4())
	return a
}

// TestEncryptPeersAPI: three simulated hosts, a real filterd on each, keys
// and peers distributed only through filterd's API as the control plane's
// agent would: GET /v1/encrypt/host from each host, PUT /v1/encrypt/peers
// to each. Instances attached with peers=api follow the document: a host
// added by PUT carries protected traffic (only WireGuard on the
// underlay); bad documents, a stale if_generation and a document an
// instance refuses at reload leave the mesh as it was (GET before and
// after, traffic still protected); a host removed by PUT is revoked: its
// VMs' traffic is dropped, never sent in clear.
func TestEncryptPeersAPI(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	ctx := context.Background()
	m := cryptlab.New(t, 3, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
	var hs []*meshHost
	for _, h := range m.Hosts {
		m.WritePolicy(h, map[string]any{"space": []string{"10.99.0.0/16", "fd99::/16"}})
		hs = append(hs, &meshHost{h: h, d: newDaemon(t, h.H), vm: m.AddVM(h, fmt.Sprintf("vm%d", h.I))})
	}
	h1, h2, h3 := hs[0], hs[1], hs[2]

	// The agent collects every host's key before any VM is protected:
	// the stored key pair, created 0600 under filterd's state directory.
	for _, mh := range hs {
		info, err := mh.d.client.EncryptHost(ctx)
		if err != nil {
			t.Fatalf("host-%d: GET /v1/encrypt/host: %v", mh.h.I, err)
		}
		mh.info = info
		if info.Running || info.KeyDir != mh.keyDir() || info.ListenPort != cryptlab.ListenPort || time.Since(info.KeyCreated) > time.Minute {
			t.Errorf("host-%d: GET host before attach: %+v", mh.h.I, info)
		}
		if _, err := encrypt.ParseKey(info.PublicKey); err != nil {
			t.Errorf("host-%d: public key: %v", mh.h.I, err)
		}
		st, err := os.Stat(filepath.Join(info.KeyDir, encrypt.DefaultTunnel+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("host-%d: private key file: %v %v", mh.h.I, st.Mode(), err)
		}
		if want := mh.h.UnderlayIP.String() + ":51820"; mh.underlay(t) != want {
			t.Errorf("host-%d: endpoint %s, want %s", mh.h.I, mh.underlay(t), want)
		}
		b, _ := json.Marshal(info)
		if strings.Contains(string(b), "private") {
			t.Errorf("GET host mentions a private key: %s", b)
		}
	}
	out, err := h1.d.vfctl("crypt", "host")
	if err != nil || !strings.Contains(out, "public key  "+h1.info.PublicKey) || !strings.Contains(out, h1.h.UnderlayIP.String()+":51820  ul0") {
		t.Errorf("vfctl crypt host: %v\n%s", err, out)
	}
	t.Logf("vfctl crypt host on host-1 before any attach:\n%s", out)

	// Host-1 and host-2 know each other; host-3 knows nobody yet.
	put := func(mh *meshHost, doc []byte, gen *uint64) (*api.EncryptPeersResult, error) {
		return mh.d.client.SetEncryptPeers(ctx, doc, gen)
	}
	for _, c := range []struct {
		self   *meshHost
		others []*meshHost
	}{{h1, []*meshHost{h2}}, {h2, []*meshHost{h1}}, {h3, nil}} {
		r, err := put(c.self, peersDoc(t, c.self, c.others...), nil)
		if err != nil || r.Generation != 1 || len(r.Reloaded) != 0 {
			t.Fatalf("host-%d: first PUT: %+v %v", c.self.h.I, r, err)
		}
		st, err := os.Stat(r.File)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("host-%d: %s: %v %v", c.self.h.I, r.File, st.Mode(), err)
		}
	}
	for _, mh := range hs {
		params := map[string]string{"peers": encrypt.PeersAPI, "policy": mh.h.PolicyFile, "protect": "all", "key_dir": mh.keyDir(), "keepalive": "1s", "peer_timeout": "4s"}
		if _, err := mh.d.client.Attach(ctx, mh.vm.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: encrypt.Name, Params: params}}); err != nil {
			t.Fatalf("host-%d: attach encrypt peers=api: %v", mh.h.I, err)
		}
		info, err := mh.d.client.EncryptHost(ctx)
		if err != nil || !info.Running || info.PublicKey != mh.info.PublicKey || info.PeersFile != encrypt.ManagedPeersFile(filepath.Join(mh.d.dir, "state")) {
			t.Errorf("host-%d: GET host with the tunnel up: %+v %v (key before %s)", mh.h.I, info, err, mh.info.PublicKey)
		}
	}
	h1.waitPeers(t, h2.h.Name())
	h2.waitPeers(t, h1.h.Name())

	secret := meshSecret
	// dropped checks that from's UDP to to is dropped at from's vNIC as
	// no_peer (fail-closed) and nothing of it crosses the underlay.
	dropped := func(from, to *meshHost) {
		t.Helper()
		before := from.inspect(t).NoPeer.Dropped
		capt := m.Capture()
		c, err := from.vm.DialUDP(ctx, net.JoinHostPort(to.vm.IPv4.IP.String(), "7999"))
		if err != nil {
			t.Fatal(err)
		}
		for range 10 {
			_, _ = c.Write(bytes.Repeat(secret, 10))
			time.Sleep(20 * time.Millisecond)
		}
		c.Close()
		capt.Stop()
		s := capt.Summarize(vmAddr(from.vm), vmAddr(to.vm))
		after := from.inspect(t).NoPeer.Dropped
		if capt.Contains(secret) || s.Between != 0 || after < before+10 {
			t.Fatalf("host-%d -> host-%d: payload seen %v, %+v, no_peer dropped %d -> %d (want +10, nothing on the underlay)", from.h.I, to.h.I, capt.Contains(secret), s, before, after)
		}
	}
	exchange(t, m, 7200, pair(h1, h2))
	dropped(h1, h3) // host-3 is no peer of host-1 yet

	// Host-3 joins: every host gets a document listing the two others
	// (host-1's as a compare-and-swap on generation 1).
	gen := uint64(1)
	r, err := put(h1, peersDoc(t, h1, h2, h3), &gen)
	if err != nil || r.Generation != 2 || len(r.Reloaded) != 1 || r.Reloaded[0].VNIC != h1.vm.TapName || r.Reloaded[0].Error != "" {
		t.Fatalf("PUT host-1 with host-3: %+v %v", r, err)
	}
	if _, err := put(h2, peersDoc(t, h2, h1, h3), nil); err != nil {
		t.Fatal(err)
	}
	doc3 := peersDoc(t, h3, h1, h2)
	f3 := filepath.Join(t.TempDir(), "peers3.json")
	if err := os.WriteFile(f3, doc3, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h3.d.vfctl("crypt", "peers", "set", f3); err != nil || !strings.Contains(out, "generation 2") || !strings.Contains(out, "1 encrypt instance(s) reloaded") {
		t.Fatalf("vfctl crypt peers set on host-3: %v\n%s", err, out)
	}
	h1.waitPeers(t, h2.h.Name(), h3.h.Name())
	h2.waitPeers(t, h1.h.Name(), h3.h.Name())
	h3.waitPeers(t, h1.h.Name(), h2.h.Name())
	exchange(t, m, 7210, pair(h1, h3), pair(h3, h2), pair(h2, h1))
	if out, err := h3.d.vfctl("crypt", "peers", "show"); err != nil || !strings.Contains(out, "generation 2") || !strings.Contains(out, h1.info.PublicKey) || !strings.Contains(out, h1.underlay(t)) {
		t.Errorf("vfctl crypt peers show: %v\n%s", err, out)
	} else {
		t.Logf("vfctl crypt peers show on host-3:\n%s", out)
	}

	// Bad documents: refused with the parser's field error, nothing
	// changes.
	before, err := h1.d.client.EncryptPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tunnelBefore := h1.inspect(t).Tunnel.Peers
	good := peersDoc(t, h1, h2, h3)
	edit := func(f func(p *cryptlab.PeersJSON)) []byte {
		var p cryptlab.PeersJSON
		if err := json.Unmarshal(good, &p); err != nil {
			t.Fatal(err)
		}
		f(&p)
		b, _ := json.MarshalIndent(p, "", "  ")
		return b
	}
	stale := uint64(1)
	for _, c := range []struct {
		name string
		doc  []byte
		gen  *uint64
		code string
		want string
	}{
		{"malformed key", edit(func(p *cryptlab.PeersJSON) { p.Peers[0].PublicKey = "not-a-key" }), nil, api.CodeInvalidParam, "peers[0].public_key: malformed"},
		{"duplicate key", edit(func(p *cryptlab.PeersJSON) { p.Peers[1].PublicKey = p.Peers[0].PublicKey }), nil, api.CodeInvalidParam, "peers[1].public_key: key " + h2.info.PublicKey + " given to two peers"},
		{"own key", edit(func(p *cryptlab.PeersJSON) { p.Peers[1].PublicKey = h1.info.PublicKey }), nil, api.CodeInvalidParam, `peers[1].public_key: peer "host-3" has this host's own public key`},
		{"overlapping prefixes", edit(func(p *cryptlab.PeersJSON) { p.Peers[1].Prefixes = []string{"10.99.2.128/25"} }), nil, api.CodeInvalidParam, "peers[1].prefixes: 10.99.2.128/25 overlaps 10.99.2.0/24 of peer host-2"},
		{"bad endpoint", edit(func(p *cryptlab.PeersJSON) { p.Peers[0].Endpoint = "host-2.example:51820" }), nil, api.CodeInvalidParam, "peers[0].endpoint: \"host-2.example:51820\": want an IP address and a port"},
		{"not JSON", []byte(`{"peers": [`), nil, api.CodeInvalidParam, "peers document: "},
		{"stale generation", good, &stale, api.CodeGenerationMismatch, "at generation 2, not 1"},
	} {
		_, err := put(h1, c.doc, c.gen)
		if !api.IsCode(err, c.code) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %s with %q", c.name, err, c.code, c.want)
		}
	}
	// A document the running instance refuses at reload: the live policy
	// protects peer:host-3, the document drops host-3. The previous
	// document is put back and reloaded.
	m.WritePolicy(h1.h, map[string]any{"space": []string{"10.99.0.0/16", "fd99::/16"}, "vnics": map[string][]string{h1.vm.TapName: {"peer:host-3"}}})
	_, err = put(h1, peersDoc(t, h1, h2), nil)
	if !api.IsCode(err, api.CodeInvalidParam) || !strings.Contains(err.Error(), `unknown peer "host-3"`) || !strings.Contains(err.Error(), "previous one is back in force") {
		t.Errorf("document refused at reload: %v", err)
	}
	m.WritePolicy(h1.h, map[string]any{"space": []string{"10.99.0.0/16", "fd99::/16"}})
	after, err := h1.d.client.EncryptPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Generation != before.Generation || !bytes.Equal(after.Document, before.Document) || !after.Updated.Equal(before.Updated) {
		t.Errorf("GET /v1/encrypt/peers changed: generation %d -> %d\nbefore %s\nafter  %s", before.Generation, after.Generation, before.Document, after.Document)
	}
	if got := h1.inspect(t).Tunnel.Peers; len(got) != len(tunnelBefore) || got[0].PublicKey != tunnelBefore[0].PublicKey || got[1].PublicKey != tunnelBefore[1].PublicKey {
		t.Errorf("tunnel peers changed: %+v -> %+v", tunnelBefore, got)
	}
	out, err = h1.d.vfctl("crypt", "peers", "set", "/dev/null")
	if err == nil || !strings.Contains(out, "/dev/null:") {
		t.Errorf("vfctl crypt peers set /dev/null: %v\n%s", err, out)
	}
	exchange(t, m, 7220, pair(h1, h3), pair(h1, h2))

	// Host-3 removed from host-1's and host-2's documents: revoked.
	if _, err := put(h1, peersDoc(t, h1, h2), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := put(h2, peersDoc(t, h2, h1), nil); err != nil {
		t.Fatal(err)
	}
	h1.waitPeers(t, h2.h.Name())
	h2.waitPeers(t, h1.h.Name())
	dropped(h1, h3)
	dropped(h2, h3)
	// Host-3 still lists the others but they refuse it: its VM's traffic
	// goes into its tunnel and no further, never in clear.
	capt := m.Capture()
	if err := h3.vm.Ping(t, h2.vm.IPv4.IP, 3); err == nil {
		t.Error("host-3's VM still reaches host-2's after the revocation")
	}
	capt.Stop()
	if s := capt.Summarize(vmAddr(h3.vm), vmAddr(h2.vm)); s.Between != 0 {
		t.Errorf("revoked host-3's traffic in clear: %+v", s)
	}
	exchange(t, m, 7230, pair(h1, h2))
}
