package filterd_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestEncryptPolicyAPI: two simulated hosts, a real filterd on each, the
// peers and the policy delivered only through filterd's API, every vNIC
// attached with peers=api, policy=api, protect=policy. Before any policy
// document the VMs talk in clear (the empty policy protects nothing);
// once each host's document lists the other VM for its vNIC that flow is
// WireGuard only on the underlay, while a VM the documents do not name
// still talks in clear. Bad documents and a stale if_generation are
// refused with their field errors and change nothing (GET identical,
// still protected); a peers document dropping a host the live policy
// names is rolled back; a policy without the destination puts the flow
// back in clear.
func TestEncryptPolicyAPI(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	ctx := context.Background()
	m := cryptlab.New(t, 2, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
	var hs []*meshHost
	for _, h := range m.Hosts {
		mh := &meshHost{h: h, d: newDaemon(t, h.H), vm: m.AddVM(h, fmt.Sprintf("vm%d", h.I))}
		info, err := mh.d.client.EncryptHost(ctx)
		if err != nil {
			t.Fatalf("host-%d: GET /v1/encrypt/host: %v", h.I, err)
		}
		mh.info = info
		hs = append(hs, mh)
	}
	h1, h2 := hs[0], hs[1]
	other := m.AddVM(h2.h, "vm2b") // on host-2, in no policy
	for _, c := range [][2]*meshHost{{h1, h2}, {h2, h1}} {
		if _, err := c[0].d.client.SetEncryptPeers(ctx, peersDoc(t, c[0], c[1]), nil); err != nil {
			t.Fatalf("host-%d: PUT peers: %v", c[0].h.I, err)
		}
	}
	got, err := h1.d.client.EncryptPolicy(ctx)
	if err != nil || got.Generation != 0 || string(got.Document) != "null" || got.File != encrypt.ManagedPolicyFile(filepath.Join(h1.d.dir, "state")) {
		t.Fatalf("GET /v1/encrypt/policy before any PUT: %+v %v", got, err)
	}
	attach := func(mh *meshHost, v *testkit.VM) {
		params := map[string]string{"peers": encrypt.PeersAPI, "policy": encrypt.PolicyAPI, "protect": "policy", "key_dir": mh.keyDir(), "keepalive": "1s", "peer_timeout": "4s"}
		if _, err := mh.d.client.Attach(ctx, v.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: encrypt.Name, Params: params}}); err != nil {
			t.Fatalf("host-%d: attach encrypt policy=api to %s: %v", mh.h.I, v.TapName, err)
		}
	}
	attach(h1, h1.vm)
	attach(h2, h2.vm)
	attach(h2, other)

	// No policy document yet: protect=policy protects nothing.
	exchangeClear(t, m, 7300, pair(h1, h2))

	// Each host's document protects its VM's traffic to the other's.
	policy := func(mh *meshHost, dests ...string) []byte {
		b, err := json.MarshalIndent(map[string]any{"vnics": map[string][]string{mh.vm.TapName: dests}}, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	zero := uint64(0)
	r, err := h1.d.client.SetEncryptPolicy(ctx, policy(h1, vmAddr(h2.vm).String()), &zero)
	if err != nil || r.Generation != 1 || len(r.Reloaded) != 1 || r.Reloaded[0].VNIC != h1.vm.TapName || r.Reloaded[0].Error != "" || len(r.Unmanaged) != 0 {
		t.Fatalf("host-1: first PUT policy: %+v %v", r, err)
	}
	if st, err := os.Stat(r.File); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v", r.File, st.Mode(), err)
	}
	f2 := filepath.Join(t.TempDir(), "policy2.json")
	if err := os.WriteFile(f2, policy(h2, vmAddr(h1.vm).String()), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := h2.d.vfctl("crypt", "policy", "set", f2); err != nil || !strings.Contains(out, "policy document generation 1") || !strings.Contains(out, "2 encrypt instance(s) reloaded") {
		t.Fatalf("vfctl crypt policy set on host-2: %v\n%s", err, out)
	}
	h1.waitPeers(t, h2.h.Name())
	h2.waitPeers(t, h1.h.Name())
	exchange(t, m, 7310, pair(h1, h2), pair(h2, h1))
	exchangeClear(t, m, 7320, [2]*testkit.VM{h1.vm, other})
	if out, err := h1.d.vfctl("crypt", "policy", "show"); err != nil || !strings.Contains(out, "generation 1") || !strings.Contains(out, h1.vm.TapName+"  "+vmAddr(h2.vm).String()+"/32") {
		t.Errorf("vfctl crypt policy show: %v\n%s", err, out)
	} else {
		t.Logf("vfctl crypt policy show on host-1:\n%s", out)
	}

	// Bad documents: refused with their field errors, nothing changes.
	before, err := h1.d.client.EncryptPolicy(ctx)
	if err != nil || before.Generation != 1 || compact(t, before.Document) != compact(t, policy(h1, vmAddr(h2.vm).String())) {
		t.Fatalf("GET /v1/encrypt/policy: generation %d, document %s: %v", before.Generation, before.Document, err)
	}
	tap := h1.vm.TapName
	for _, c := range []struct {
		name string
		doc  string
		gen  *uint64
		code string
		want string
	}{
		{"vNIC not a list", `{"vnics": {"` + tap + `": "10.99.2.1"}}`, nil, api.CodeInvalidParam, "policy document: 1:" + fmt.Sprint(16+len(tap)) + ": vnics." + tap + ": want an array, got a string"},
		{"unknown peer", `{"vnics": {"` + tap + `": ["peer:host-9"]}}`, nil, api.CodeInvalidParam, "vnics." + tap + `[0]: unknown peer "host-9" (known: host-2)`},
		{"host bits", `{"vnics": {"` + tap + `": ["10.99.2.1/24"]}}`, nil, api.CodeInvalidParam, "vnics." + tap + `[0]: "10.99.2.1/24" has host bits set`},
		{"unknown group", `{"pairs": [{"from": "group:nosuch", "to": "10.99.0.0/16"}]}`, nil, api.CodeInvalidParam, `pairs[0].from: group:nosuch: unknown address group "nosuch"`},
		{"not JSON", `{"vnics": `, nil, api.CodeInvalidParam, "policy document: 1:"},
		{"stale generation", `{}`, &zero, api.CodeGenerationMismatch, "the policy document is at generation 1, not 0"},
	} {
		_, err := h1.d.client.SetEncryptPolicy(ctx, []byte(c.doc), c.gen)
		if !api.IsCode(err, c.code) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %s with %q", c.name, err, c.code, c.want)
		}
	}
	if out, err := h1.d.vfctl("crypt", "policy", "set", "/dev/null"); err == nil || !strings.Contains(out, "/dev/null:") {
		t.Errorf("vfctl crypt policy set /dev/null: %v\n%s", err, out)
	}
	after, err := h1.d.client.EncryptPolicy(ctx)
	if err != nil || after.Generation != before.Generation || !bytes.Equal(after.Document, before.Document) || !after.Updated.Equal(before.Updated) {
		t.Errorf("GET /v1/encrypt/policy changed: %+v -> %+v %v", before, after, err)
	}
	exchange(t, m, 7330, pair(h1, h2))

	// A peers document dropping host-2 while the live policy names
	// peer:host-2: the reload refuses it, the previous one is put back.
	gen := uint64(1)
	if r, err := h1.d.client.SetEncryptPolicy(ctx, policy(h1, "peer:host-2"), &gen); err != nil || r.Generation != 2 {
		t.Fatalf("PUT policy peer:host-2: %+v %v", r, err)
	}
	peersBefore, err := h1.d.client.EncryptPeers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = h1.d.client.SetEncryptPeers(ctx, peersDoc(t, h1), nil)
	if !api.IsCode(err, api.CodeInvalidParam) || !strings.Contains(err.Error(), `unknown peer "host-2"`) || !strings.Contains(err.Error(), "the previous one is back in force") {
		t.Errorf("peers document without a peer the policy names: %v", err)
	}
	if peersAfter, err := h1.d.client.EncryptPeers(ctx); err != nil || peersAfter.Generation != peersBefore.Generation || !bytes.Equal(peersAfter.Document, peersBefore.Document) {
		t.Errorf("GET /v1/encrypt/peers changed: %+v -> %+v %v", peersBefore, peersAfter, err)
	}
	exchange(t, m, 7340, pair(h1, h2))

	// The destination dropped from both documents: the flow is back in
	// clear.
	gen = 2
	if r, err := h1.d.client.SetEncryptPolicy(ctx, []byte(`{"vnics": {}}`), &gen); err != nil || r.Generation != 3 {
		t.Fatalf("PUT policy without the destination: %+v %v", r, err)
	}
	if _, err := h2.d.client.SetEncryptPolicy(ctx, []byte(`{}`), nil); err != nil {
		t.Fatal(err)
	}
	exchangeClear(t, m, 7350, pair(h1, h2))
}

func compact(t *testing.T, doc []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, doc); err != nil {
		t.Fatalf("%s: %v", doc, err)
	}
	return b.String()
}
