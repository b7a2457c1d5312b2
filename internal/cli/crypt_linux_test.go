package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// cryptEcho sends payload over TCP from client to server's IPv4 address
// and port and reads it echoed back (3 s at most).
func cryptEcho(ctx context.Context, client, server *testkit.VM, port int, payload []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return cryptlab.Echo(ctx, client, server, server.IPv4.IP, port, payload)
}

// TestCryptAgainstFilterd: two simulated hosts, each with its own filterd,
// encrypt on one VM per host with a policy of one pair, tag:pci <->
// tag:pci. Untagged, the VMs talk in clear; tagging them (labels for the
// local VM, pushed members for the remote one, as the control plane does)
// protects them as soon as the vfctl calls return; a policy naming an
// unknown group is refused and the running one stays; vfctl crypt show
// (text and JSON) describes the tunnel; vfctl crypt rotate gives host-1 a
// new key, which host-2 learns by reload; untagged again, they talk in
// clear.
func TestCryptAgainstFilterd(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	ctx := context.Background()
	m := cryptlab.New(t, 2, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
	h1, h2 := m.Hosts[0], m.Hosts[1]
	pairs := map[string]any{"pairs": []map[string]string{{"from": "tag:pci", "to": "tag:pci"}}}
	for _, h := range m.Hosts {
		m.WritePolicy(h, pairs)
	}
	a, b := m.AddVM(h1, "pci-a"), m.AddVM(h2, "pci-b")
	sock := map[*cryptlab.Host]string{h1: startFilterd(t, h1.H), h2: startFilterd(t, h2.H)}
	run := func(h *cryptlab.Host, code int, args ...string) string {
		t.Helper()
		r := vfctl(t, ctx, sock[h], args...)
		if r.code != code {
			t.Fatalf("host-%d: %v: exit %d, want %d\nstdout %s\nstderr %s", h.I, args, r.code, code, r.stdout, r.stderr)
		}
		return r.stdout + r.stderr
	}
	show := func(h *cryptlab.Host) cryptShow {
		t.Helper()
		var s []cryptShow
		if err := json.Unmarshal([]byte(run(h, ExitOK, "-o", "json", "crypt", "show")), &s); err != nil || len(s) != 1 {
			t.Fatalf("crypt show -o json: %v (%d vNICs)", err, len(s))
		}
		return s[0]
	}
	waitUp := func(h *cryptlab.Host, peer string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			s := show(h)
			if len(s.State.Tunnel.Peers) == 1 && s.State.Tunnel.Peers[0].Name == peer && s.State.Tunnel.Peers[0].Up {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("host-%d: %s not up after 20s: %+v", h.I, peer, s.State.Tunnel)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	run(h1, ExitNotFound, "crypt", "show")
	// A policy naming a group nobody pushed is refused at attach.
	m.WriteJSON(h1.PolicyFile, map[string]any{"pairs": []map[string]string{{"from": "tag:pci", "to": "group:nosuch"}}})
	var bad []string
	for k, val := range m.Params(h1, map[string]string{"protect": "policy"}) {
		bad = append(bad, "--param", k+"="+val)
	}
	if out := run(h1, ExitBadInput, append([]string{"attach", a.TapName, "encrypt"}, bad...)...); !strings.Contains(out, `unknown address group "nosuch"`) {
		t.Errorf("attach with an unknown group: %s", out)
	}
	m.WritePolicy(h1, pairs)
	for h, v := range map[*cryptlab.Host]*testkit.VM{h1: a, h2: b} {
		var ps []string
		for k, val := range m.Params(h, map[string]string{"protect": "policy"}) {
			ps = append(ps, "--param", k+"="+val)
		}
		run(h, ExitOK, append([]string{"attach", v.TapName, "encrypt"}, ps...)...)
	}
	waitUp(h1, h2.Name())
	waitUp(h2, h1.Name())

	secret := []byte("PCI-CARDHOLDER-DATA-9d2e")
	exchange := func(port int, wantClear bool) {
		t.Helper()
		capt := m.Capture()
		if err := cryptEcho(ctx, a, b, port, bytes.Repeat(secret, 100)); err != nil {
			t.Fatalf("exchange on port %d: %v", port, err)
		}
		capt.Stop()
		if got := capt.Contains(secret); got != wantClear {
			t.Fatalf("exchange on port %d: payload on the underlay %v, want %v", port, got, wantClear)
		}
	}
	// Untagged: not protected.
	exchange(7101, true)

	// Tag both VMs: each host labels its own VM and gets the other's
	// address pushed into tag:pci.
	start := time.Now()
	var reload []string
	for _, step := range []struct {
		h    *cryptlab.Host
		args []string
	}{
		{h1, []string{"label", a.TapName, "--tag", "pci", "--address", a.IPv4.IP.String()}},
		{h1, []string{"group", "set", "tag:pci", b.IPv4.IP.String()}},
		{h2, []string{"label", b.TapName, "--tag", "pci", "--address", b.IPv4.IP.String()}},
		{h2, []string{"group", "set", "tag:pci", a.IPv4.IP.String()}},
	} {
		var ch api.GroupChange
		if err := json.Unmarshal([]byte(run(step.h, ExitOK, append([]string{"-o", "json"}, step.args...)...)), &ch); err != nil {
			t.Fatal(err)
		}
		if len(ch.Reloaded) != 1 || ch.Reloaded[0].Error != "" {
			t.Fatalf("host-%d %v: reloads %+v", step.h.I, step.args, ch.Reloaded)
		}
		reload = append(reload, fmt.Sprintf("%.1f ms", ch.Reloaded[0].Seconds*1000))
	}
	t.Logf("retag: protected %v after the first vfctl call (encrypt reloads %s)", time.Since(start).Round(time.Millisecond), strings.Join(reload, ", "))
	steered := show(h1).State.Counters[0].SteeredPackets
	exchange(7102, false)
	if s := show(h1); s.State.Counters[0].SteeredPackets == steered || strings.Join(s.State.Groups, ",") != "tag:pci" {
		t.Errorf("after tagging: steered %d -> %d, groups %v", steered, s.State.Counters[0].SteeredPackets, s.State.Groups)
	}

	// A policy naming an unknown group: refused, the running one stays.
	good, err := os.ReadFile(h1.PolicyFile)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteJSON(h1.PolicyFile, map[string]any{"pairs": []map[string]string{{"from": "tag:pci", "to": "group:nosuch"}}})
	out := run(h1, ExitBadInput, "crypt", "reload", a.TapName)
	if !strings.Contains(out, h1.PolicyFile+":") || !strings.Contains(out, `pairs[0].to: group:nosuch: unknown address group "nosuch"`) {
		t.Errorf("unknown group: %s", out)
	}
	exchange(7103, false)
	if err := os.WriteFile(h1.PolicyFile, good, 0o600); err != nil {
		t.Fatal(err)
	}

	// vfctl crypt show, text.
	out = run(h1, ExitOK, "crypt", "show")
	for _, want := range []string{"TUNNEL vfwg0  running", "port 51820", h2.Name(), h2.UnderlayIP.String() + ":51820", h2.PublicKey[:8] + "…", " up ", " ago ", "pairs: tag:pci <-> tag:pci  (host groups: tag:pci)", "VNIC " + a.TapName, "protect=policy", "unsafe frames dropped 0"} {
		if !strings.Contains(out, want) {
			t.Errorf("crypt show lacks %q:\n%s", want, out)
		}
	}
	t.Logf("vfctl crypt show on host-1:\n%s", out)
	s := show(h1)
	p := s.State.Tunnel.Peers[0]
	if s.Filter != encrypt.Name || p.PublicKey != h2.PublicKey || p.HandshakeAgeSeconds < 0 || p.RxBytes == 0 || p.TxBytes == 0 || s.State.Counters[0].ReceivedPackets == 0 {
		t.Errorf("crypt show -o json: %+v", s)
	}

	// The action endpoint refuses what encrypt does not do.
	c := api.NewClient(sock[h1])
	if _, _, err := c.Act(ctx, a.TapName, 0, "nosuch", nil); !api.IsCode(err, api.CodeNotSupported) {
		t.Errorf("unknown action: %v", err)
	}
	if _, _, err := c.Act(ctx, a.TapName, 0, "rotate", map[string]string{"force": "1"}); !api.IsCode(err, api.CodeInvalidParam) {
		t.Errorf("rotate with an argument: %v", err)
	}
	if _, _, err := c.Act(ctx, a.TapName, 5, "rotate", nil); err == nil {
		t.Error("rotate on an empty slot succeeded")
	}

	// Rotation: host-1 gets a new key; host-2 learns it by reload.
	var rot cryptRotate
	if err := json.Unmarshal([]byte(run(h1, ExitOK, "-o", "json", "crypt", "rotate")), &rot); err != nil {
		t.Fatal(err)
	}
	if rot.Result.PreviousPublicKey != h1.PublicKey || rot.Result.PublicKey == rot.Result.PreviousPublicKey || rot.Action != "rotate" {
		t.Fatalf("rotate: %+v", rot)
	}
	if s := show(h1); s.State.Tunnel.PublicKey != rot.Result.PublicKey {
		t.Errorf("after rotate the tunnel shows key %s, want %s", s.State.Tunnel.PublicKey, rot.Result.PublicKey)
	}
	h1.PublicKey = rot.Result.PublicKey
	m.WritePeers(h2, m.Hosts)
	run(h2, ExitOK, "crypt", "reload")
	waitUp(h2, h1.Name())
	waitUp(h1, h2.Name())
	exchange(7104, false)
	if s := show(h2); s.State.Tunnel.Peers[0].PublicKey != rot.Result.PublicKey {
		t.Errorf("host-2 still knows host-1 by %s", s.State.Tunnel.Peers[0].PublicKey)
	}

	// Untagged again: in clear.
	run(h1, ExitOK, "label", a.TapName)
	run(h1, ExitOK, "group", "set", "tag:pci")
	run(h2, ExitOK, "label", b.TapName)
	run(h2, ExitOK, "group", "set", "tag:pci")
	exchange(7105, true)

	// A second vNIC on host-1 shares the tunnel: --all shows both, a
	// named vNIC only its own section.
	a2 := m.AddVM(h1, "other-a")
	var ps []string
	for k, val := range m.Params(h1, map[string]string{"protect": "all"}) {
		ps = append(ps, "--param", k+"="+val)
	}
	run(h1, ExitOK, append([]string{"attach", a2.TapName, "encrypt"}, ps...)...)
	out = run(h1, ExitOK, "crypt", "show", "--all")
	if strings.Count(out, "TUNNEL vfwg0") != 1 || !strings.Contains(out, "VNIC "+a.TapName+"  slot 0  protect=policy") || !strings.Contains(out, "VNIC "+a2.TapName+"  slot 0  protect=all") {
		t.Errorf("crypt show --all:\n%s", out)
	}
	if out = run(h1, ExitOK, "crypt", "show", a2.TapName); strings.Contains(out, "VNIC "+a.TapName) || !strings.Contains(out, "VNIC "+a2.TapName) {
		t.Errorf("crypt show %s:\n%s", a2.TapName, out)
	}
	run(h1, ExitNotFound, "crypt", "show", "nosuchvnic")
	run(h1, ExitUsage, "crypt", "show", a.TapName, "extra")
}
