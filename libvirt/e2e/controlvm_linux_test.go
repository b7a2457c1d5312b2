package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
	mapi "github.com/vnicfilter/vnicfilter/manager/api"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// probeCmd makes a guest try db:5432 every second and print "PG <n> OK" or
// "PG <n> FAIL" (the db guest echoes what it gets on 5432).
func probeCmd(db string) string {
	return `i=0; while :; do i=$((i+1)); r=$(echo ping | nc -w 2 ` + db + ` 5432 2>/dev/null); if [ x$r = xping ]; then echo PG $i OK; else echo PG $i FAIL; fi; sleep 1; done`
}

var pgRE = regexp.MustCompile(`PG (\d+) (OK|FAIL)`)

// lastProbe returns the number and outcome of a guest's last probe.
func lastProbe(g *testlab.Guest) (int, string) {
	m := pgRE.FindAllStringSubmatch(g.Console(), -1)
	if len(m) == 0 {
		return 0, ""
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n, m[len(m)-1][2]
}

// waitProbes waits until a guest has run two probes after now and
// returns the outcome of the last one.
func waitProbes(t *testing.T, g *testlab.Guest, what string) string {
	t.Helper()
	n0, _ := lastProbe(g)
	var out string
	waitFor(t, 40*time.Second, what, func() bool {
		n, o := lastProbe(g)
		out = o
		return n >= n0+2
	})
	return out
}

// TestControlVM is issue 6's one-host acceptance: the manager → the control
// VM (a QEMU guest installed by vfctl controlvm install) over the
// management network → filterd over the hidden bridge (mutual TLS) → a
// policy allowing web → db:5432 and denying the rest, enforced between
// guests; retagging a VM moves it into web and its traffic follows.
func TestControlVM(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	testkit.Need(t, testkit.Nft)
	ctx := context.Background()
	tmp := t.TempDir()

	// Static agent and the manager, built from this tree.
	bin := filepath.Join(tmp, "bin")
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/vnicfilter/vnicfilter/cmd/vfagent", "github.com/vnicfilter/vnicfilter/cmd/vfmanager", "github.com/vnicfilter/vnicfilter/cmd/vfctl")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build vfagent, vfmanager, vfctl: %v\n%s", err, out)
	}

	// filterd with its hidden bridge.
	hb, tap := "vfhid"+randHex(3), "vfcvm"+randHex(2)
	hnet := fmt.Sprintf("169.254.%d.", 100+time.Now().UnixNano()%100)
	tlsDir := filepath.Join(tmp, "tls")
	// filterd leaves its hidden bridge and nftables table in place when it
	// stops (the control VM keeps its link); this test removes them.
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(hb); err == nil {
			_ = netlink.LinkDel(l)
		}
		_ = exec.Command("nft", "delete", "table", "inet", "vnicfilter_hidden").Run()
	})
	d := startFilterd(t, "--hidden-bridge", hb, "--hidden-addr", hnet+"1/24", "--hidden-tls-dir", tlsDir, "--hidden-allow", "vfcvm*")

	// The management network: the manager on the host's address there.
	mgmt := testlab.NewBridge(t)
	mp := subnet()
	mgrIP := hostOnBridge(t, mgmt, mp)
	mgrDir := filepath.Join(tmp, "mgr")
	mgr := exec.Command(filepath.Join(bin, "vfmanager"), "serve", "--listen", mgrIP+":0", "--data-dir", mgrDir, "--tls-san", mgrIP)
	mgrLog := &strings.Builder{}
	mgr.Stderr = mgrLog
	mgr.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := mgr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Process.Kill(); _ = mgr.Wait() })
	var server string
	waitFor(t, 20*time.Second, "manager up", func() bool {
		b, err := os.ReadFile(filepath.Join(mgrDir, "manager.addr"))
		server = strings.TrimSpace(string(b))
		return err == nil && server != ""
	})
	caPEM, _ := os.ReadFile(filepath.Join(mgrDir, "ca.crt"))
	tok, _ := os.ReadFile(filepath.Join(mgrDir, "admin.token"))
	admin, err := mapi.NewClient(mapi.ClientOptions{Server: server, CA: caPEM, Token: strings.TrimSpace(string(tok))})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.PutGroup(ctx, mapi.Group{Name: "tagged-web", Selector: map[string]string{"tier": "web"}}))
	must(admin.PutGroup(ctx, mapi.Group{Name: "web", NameGlob: "web-*", Include: []string{"tagged-web"}}))
	must(admin.PutGroup(ctx, mapi.Group{Name: "db", NameGlob: "db-*"}))
	rule, _ := json.Marshal(map[string]any{"name": "pg", "direction": "to-vm", "src_groups": []string{"web"}, "proto": "tcp", "dst_ports": []int{5432}, "action": "allow"})
	must(admin.PutPolicy(ctx, mapi.Policy{Name: "db-in", Defaults: map[string]string{"to-vm": "deny"}, Rules: []json.RawMessage{rule}}))
	must(admin.PutAssignment(ctx, mapi.Assignment{Name: "db-in", Policy: "db-in", Group: "db"}))
	jt, err := admin.CreateToken(ctx, mapi.TokenRequest{Role: mapi.RoleJoin, Host: "host1"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(tmp, "join.token"), []byte(jt.Secret), 0o600)
	os.WriteFile(filepath.Join(tmp, "manager-ca.pem"), caPEM, 0o644)

	// vfctl controlvm install: enroll, image, domain, start.
	cvm := "vfcvm-" + randHex(3)
	imageDir := filepath.Join(tmp, "controlvm")
	install := exec.Command(filepath.Join(lab.bin, "vfctl"), "controlvm", "install", "--host", "host1", "--manager", server,
		"--manager-ca", filepath.Join(tmp, "manager-ca.pem"), "--join-token-file", filepath.Join(tmp, "join.token"),
		"--agent-binary", filepath.Join(bin, "vfagent"), "--vfctl-binary", filepath.Join(bin, "vfctl"), "--filterd-binary", filepath.Join(lab.bin, "filterd"), "--hidden-tls-dir", tlsDir,
		"--image-dir", imageDir, "--name", cvm, "--virt-type", "qemu", "--hidden-bridge", hb, "--hidden-tap", tap, "--hidden-addr", hnet+"2/24", "--filterd-url", "https://"+hnet+"1:9443",
		"--mgmt-bridge", mgmt, "--mgmt-addr", mp+"50/24", "--connect", "qemu:///system", "--libvirt-socket", l.Socket(), "--start", "-o", "json")
	out, err := install.CombinedOutput()
	t.Cleanup(func() { undefine(t, l, cvm) })
	if err != nil {
		t.Fatalf("vfctl controlvm install: %v\n%s", err, out)
	}
	console := filepath.Join(imageDir, "console.log")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(console)
			t.Logf("control VM console:\n%s\nmanager log:\n%s", tailStr(string(b), 6000), tailStr(mgrLog.String(), 2000))
		}
	})
	if st, err := os.Stat(filepath.Join(imageDir, "agent", "agent.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("agent key: %v %v, want 0600", st.Mode(), err)
	}

	// The guests on a data bridge: web, db (echo on 5432), app (neither).
	data := testlab.NewBridge(t)
	p := subnet()
	webIP, dbIP, appIP := p+"11", p+"12", p+"13"
	sfx := randHex(2)
	guest := func(name, ip string, i int, cmdline map[string]string) *testlab.Guest {
		cmdline["vf.ip"] = ip + "/24"
		cmdline["vf.http"] = "off"
		return l.DefineGuest(t, img, testlab.GuestSpec{Name: name + "-" + sfx, NICs: []testlab.NIC{{Bridge: data, MAC: mac(60 + i)}},
			Cmdline: cmdline, Metadata: metadata(map[string][]string{mac(60 + i): {"count"}})})
	}
	// web also tries filterd's hidden address through the host, its
	// gateway: the hidden bridge's nftables table must drop it.
	gw := hostOnBridge(t, data, p)
	hiddenTry := `if nc -w 3 ` + hnet + `1 9443 </dev/null; then echo HIDDEN REACHED; else echo HIDDEN BLOCKED; fi; `
	web := guest("web", webIP, 1, map[string]string{"vf.echo": "off", "vf.gw": gw, "vf.cmd": hiddenTry + probeCmd(dbIP)})
	db := guest("db", dbIP, 2, map[string]string{"vf.echo": "5432"})
	app := guest("app", appIP, 3, map[string]string{"vf.echo": "off", "vf.cmd": probeCmd(dbIP)})
	for _, g := range []*testlab.Guest{web, db, app} {
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
	}
	// The VMs' addresses, as the operator (or a future hook) labels them:
	// the agent reports them, the manager makes groups of them.
	for g, ip := range map[*testlab.Guest]string{web: webIP, db: dbIP, app: appIP} {
		taps, err := g.Taps()
		if err != nil || len(taps) != 1 {
			t.Fatalf("taps of %s: %v %v", g.Name, taps, err)
		}
		waitFor(t, 20*time.Second, "chain of "+g.Name, func() bool { return d.vnic(t, taps[0]) != nil })
		if _, err := d.client.SetLabels(ctx, taps[0], api.Labels{Addresses: []string{ip}}); err != nil {
			t.Fatal(err)
		}
	}
	dbTaps, _ := db.Taps()

	// The agent in the control VM enforces the policy on db.
	waitFor(t, 120*time.Second, "db's firewall from the control VM", func() bool {
		v := d.vnic(t, dbTaps[0])
		return v != nil && len(v.Slots) == 1 && v.Slots[0].Filter == "firewall"
	})
	if err := web.WaitConsole(ctx, "HIDDEN "); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(web.Console(), "HIDDEN REACHED") {
		t.Error("a guest reached filterd's API on the hidden bridge through the host")
	}
	st, err := admin.Status(ctx, "host1")
	if err != nil || !st.Connected {
		t.Errorf("host1 status: %+v %v, want connected", st, err)
	}
	if got := waitProbes(t, web, "web probes"); got != "OK" {
		t.Errorf("web → db:5432: %s, want OK", got)
	}
	if got := waitProbes(t, app, "app probes"); got != "FAIL" {
		t.Errorf("app → db:5432: %s, want FAIL (not in web)", got)
	}

	// Retag app into web: the manager's change reaches filterd through
	// the control VM, and app's traffic follows.
	if _, err := admin.SetTags(ctx, app.Name, mapi.Tags{"tier": "web"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 40*time.Second, "app allowed after retag", func() bool {
		_, o := lastProbe(app)
		return o == "OK"
	})
	if got := waitProbes(t, app, "app probes after retag"); got != "OK" {
		t.Errorf("app → db:5432 after retag: %s, want OK", got)
	}

	// An operator on the control VM's shell (its second serial port) uses
	// the same vfctl, already pointed at filterd over the hidden bridge.
	out2 := operatorShell(t, l, cvm, "vfctl list -o json", 60*time.Second)
	if !strings.Contains(out2, `"`+dbTaps[0]+`"`) || !strings.Contains(out2, "firewall") {
		t.Errorf("vfctl on the control VM: %q, want db's vNIC %s with its firewall", tailStr(out2, 2000), dbTaps[0])
	}
}

// operatorShell runs cmd in the login shell on the control VM's second
// serial port (a pty on the host) and returns what it printed.
func operatorShell(t *testing.T, l *testlab.Libvirtd, name, cmd string, timeout time.Duration) string {
	t.Helper()
	c := l.Conn(t)
	dom, err := c.DomainLookupByName(name)
	if err != nil {
		t.Fatalf("control VM %s: %v", name, err)
	}
	x, err := c.DomainGetXMLDesc(dom, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`<serial type='pty'>\s*<source path='([^']+)'`).FindStringSubmatch(x)
	if m == nil {
		t.Fatalf("control VM %s has no pty serial port:\n%s", name, x)
	}
	f, err := os.OpenFile(m[1], os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Raw on the host's side: no echo, no line editing of what comes back.
	tio, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Lflag &^= unix.ECHO | unix.ICANON | unix.ISIG | unix.IEXTEN
	tio.Iflag &^= unix.ICRNL | unix.IXON
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	marker := "VFOP" + randHex(3)
	var got strings.Builder
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 4096)
	for next := time.Now(); time.Now().Before(deadline); {
		if time.Now().After(next) { // the shell may still be starting: ask again
			// $((40+2)): the shell's echo of this line is not the answer.
			fmt.Fprintf(f, "\n%s; echo %s-$((40+2))\n", cmd, marker)
			next = time.Now().Add(10 * time.Second)
		}
		_ = f.SetReadDeadline(time.Now().Add(time.Second))
		n, _ := f.Read(buf)
		got.Write(buf[:n])
		if i := strings.Index(got.String(), marker+"-42"); i >= 0 {
			return got.String()[:i]
		}
	}
	t.Fatalf("no answer from the control VM's shell in %v: %q", timeout, tailStr(got.String(), 2000))
	return ""
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// undefine destroys and undefines the control VM vfctl defined.
func undefine(t *testing.T, l *testlab.Libvirtd, name string) {
	c := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(l.Socket()), dialers.WithLocalTimeout(5*time.Second)))
	if err := c.ConnectToURI(libvirt.QEMUSystem); err != nil {
		t.Errorf("connect to libvirtd: %v", err)
		return
	}
	defer c.Disconnect()
	dom, err := c.DomainLookupByName(name)
	if err != nil {
		return // never defined
	}
	_ = c.DomainDestroy(dom)
	if err := c.DomainUndefineFlags(dom, 0); err != nil {
		t.Errorf("undefine %s: %v", name, err)
	}

}
