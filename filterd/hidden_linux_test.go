package filterd_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// plugInto moves vm's tap from the host's bridge to bridge, renamed.
func plugInto(t *testing.T, host *testkit.Host, vm *testkit.VM, bridge, name string) {
	t.Helper()
	h := host.Handle()
	l, err := h.LinkByName(vm.TapName)
	if err != nil {
		t.Fatal(err)
	}
	br, err := h.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	for _, step := range []error{h.LinkSetDown(l), h.LinkSetNoMaster(l), h.LinkSetName(l, name), h.LinkSetMasterByIndex(l, br.Attrs().Index), h.LinkSetUp(l)} {
		if step != nil {
			t.Fatalf("plug %s into %s as %s: %v", vm.TapName, bridge, name, step)
		}
	}
}

func hiddenClient(vm *testkit.VM, cert *tls.Certificate, roots *x509.CertPool) *http.Client {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: cfg,
		DialContext:     func(ctx context.Context, _, addr string) (net.Conn, error) { return vm.DialTCP(ctx, addr) },
	}}
}

// TestHiddenBridge: filterd's API on the hidden bridge answers the control
// VM only with a client certificate of the host CA; a VM elsewhere cannot
// reach it even with a route; a foreign port put on the bridge is removed
// and raises the alarm.
func TestHiddenBridge(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	t.Parallel()
	host := testkit.NewHost(t)
	vm, cvm, rogue := host.AddVM(t, "vm"), host.AddVM(t, "controlvm"), host.AddVM(t, "rogue")
	tlsDir := filepath.Join(t.TempDir(), "tls")
	d := newDaemon(t, host, "--hidden-bridge", "vfh0", "--hidden-addr", "169.254.77.1/24", "--hidden-tls-dir", tlsDir, "--hidden-allow", "vfcvm*")
	ctx := context.Background()

	for path, want := range map[string]os.FileMode{tlsDir: 0o700, filepath.Join(tlsDir, "ca-key.pem"): 0o600, filepath.Join(tlsDir, "filterd-key.pem"): 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %04o", path, st.Mode().Perm(), err, want)
		}
	}

	// The control VM's vNIC on the hidden bridge, as its domain XML names it.
	plugInto(t, host, cvm, "vfh0", "vfcvm0")
	if err := cvm.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		return netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(169, 254, 77, 2), Mask: net.CIDRMask(24, 32)}})
	}); err != nil {
		t.Fatal(err)
	}

	certDir := t.TempDir()
	if out, err := exec.Command(filepath.Join(binDir, "filterd"), "issue-cert", "--hidden-tls-dir", tlsDir, "--name", "agent", "--out", certDir).CombinedOutput(); err != nil {
		t.Fatalf("issue-cert: %v\n%s", err, out)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(certDir, "agent.pem"), filepath.Join(certDir, "agent-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(readFile(t, filepath.Join(certDir, "ca.pem")))
	url := "https://169.254.77.1:9443/v1/version"

	resp, err := hiddenClient(cvm, &cert, roots).Get(url)
	if err != nil {
		t.Fatalf("control VM with the agent's certificate: %v", err)
	}
	var v api.VersionInfo
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || v.API == "" {
		t.Errorf("version over the hidden bridge: %+v %v", v, err)
	}
	resp.Body.Close()
	// vfctl in the control VM, over the hidden bridge.
	out, err := cvm.Command(ctx, filepath.Join(binDir, "vfctl"), "--remote", "https://169.254.77.1:9443",
		"--remote-cert", filepath.Join(certDir, "agent.pem"), "--remote-key", filepath.Join(certDir, "agent-key.pem"),
		"--remote-ca", filepath.Join(certDir, "ca.pem"), "-o", "json", "list").CombinedOutput()
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "[") {
		t.Errorf("vfctl --remote list from the control VM: %v\n%s", err, out)
	}
	if resp, err := hiddenClient(cvm, nil, roots).Get(url); err == nil {
		resp.Body.Close()
		t.Error("the hidden API answered a client without a certificate")
	}
	other := t.TempDir()
	if out, err := exec.Command(filepath.Join(binDir, "filterd"), "issue-cert", "--hidden-tls-dir", filepath.Join(other, "ca"), "--name", "intruder", "--out", other).CombinedOutput(); err != nil {
		t.Fatalf("issue-cert: %v\n%s", err, out)
	}
	foreign, err := tls.LoadX509KeyPair(filepath.Join(other, "intruder.pem"), filepath.Join(other, "intruder-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := hiddenClient(cvm, &foreign, roots).Get(url); err == nil {
		resp.Body.Close()
		t.Error("the hidden API answered a certificate of another CA")
	}

	// A VM on the ordinary bridge, given a route to the hidden address
	// through the host, still cannot reach it.
	br, err := host.Handle().LinkByName(host.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := host.Handle().AddrAdd(br, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 99, 0, 254), Mask: net.CIDRMask(24, 32)}}); err != nil {
		t.Fatal(err)
	}
	if out, err := vm.Command(ctx, "ip", "route", "add", "169.254.77.0/24", "via", "10.99.0.254").CombinedOutput(); err != nil {
		t.Fatalf("route: %v %s", err, out)
	}
	dctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if c, err := vm.DialTCP(dctx, "169.254.77.1:9443"); err == nil {
		c.Close()
		t.Error("a VM on another bridge reached filterd's hidden address")
	}

	// A foreign port on the hidden bridge is removed and raises the alarm.
	start := time.Now()
	plugInto(t, host, rogue, "vfh0", "vnet99")
	var st api.HiddenStatus
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		got, err := d.client.Hidden(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st = *got
		if st.IntrusionsTotal > 0 {
			break
		}
	}
	if st.IntrusionsTotal != 1 || len(st.Intrusions) != 1 || st.Intrusions[0].Port != "vnet99" || !st.Intrusions[0].Removed {
		t.Fatalf("hidden status after a rogue port: %+v", st)
	}
	t.Logf("rogue port removed %v after it was plugged", time.Since(start).Round(time.Millisecond))
	l, err := host.Handle().LinkByName("vnet99")
	if err != nil {
		t.Fatal(err)
	}
	if l.Attrs().MasterIndex != 0 {
		t.Error("rogue port still enslaved")
	}
	if len(st.Ports) != 1 || st.Ports[0] != "vfcvm0" {
		t.Errorf("hidden bridge ports %v, want only the control VM's", st.Ports)
	}
	if m, err := d.client.Metrics(ctx); err != nil || !containsLine(m, `vnicfilter_hidden_bridge_intrusions_total{bridge="vfh0"} 1`) {
		t.Errorf("intrusion metric missing: %v", err)
	}
}

func containsLine(text, line string) bool {
	return slices.Contains(strings.Split(text, "\n"), line)
}
