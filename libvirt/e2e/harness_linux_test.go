package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
)

// lab is what TestMain prepared: binaries and hooks from `make install`.
var lab struct {
	dir    string // DESTDIR of make install, and the tests' run directory
	bin    string // installed filterd, vfctl, vnicfilter-hook
	hooks  string // the shared libvirtd's hooks directory
	socket string // filterd's socket, as vnicfilter.conf names it
	phases string // what the trace hooks write
}

func TestMain(m *testing.M) {
	code := func() int {
		if os.Geteuid() != 0 {
			return m.Run() // every test skips (fails under CI=true)
		}
		if err := setup(); err != nil {
			fmt.Fprintln(os.Stderr, "e2e setup:", err)
			return 1
		}
		defer os.RemoveAll(lab.dir)
		return m.Run()
	}()
	testlab.StopShared()
	os.Exit(code)
}

// setup runs `make install` into a temporary DESTDIR, whose etc/libvirt/hooks
// becomes the shared libvirtd's hooks directory, and adds the trace hooks
// and a vnicfilter.conf naming the tests' filterd socket.
func setup() error {
	dir, err := os.MkdirTemp("", "vfe2e-")
	if err != nil {
		return err
	}
	lab.dir = dir
	lab.bin = filepath.Join(dir, "usr/local/bin")
	lab.hooks = filepath.Join(dir, "etc/libvirt/hooks")
	lab.socket = filepath.Join(dir, "run", "filterd.sock")
	lab.phases = filepath.Join(dir, "phases.log")
	root, err := filepath.Abs("../..")
	if err != nil {
		return err
	}
	cmd := exec.Command("make", "-s", "-C", root, "install", "DESTDIR="+dir, "BIN="+filepath.Join(dir, "build"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("make install: %w\n%s", err, out)
	}
	for _, f := range []string{"usr/local/bin/filterd", "usr/local/bin/vnicfilter-hook", "etc/libvirt/hooks/qemu", "etc/libvirt/hooks/qemu.d/vnicfilter", "etc/libvirt/hooks/vnicfilter.conf"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("make install did not install %s: %w", f, err)
		}
	}
	if err := writeHookConf(""); err != nil {
		return err
	}
	for _, name := range []string{"00-trace", "zz-trace"} {
		// 00-trace also keeps the XML of the domain's last call per phase.
		script := fmt.Sprintf("#!/bin/sh\necho \"$(date +%%s.%%N) %s $1 $2 $3\" >>%s\ncat >%s/xml-%s-$1-$2\n", name, lab.phases, dir, name)
		if err := os.WriteFile(filepath.Join(lab.hooks, "qemu.d", name), []byte(script), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// writeHookConf points the installed hook at the tests' filterd, with
// extra lines appended.
func writeHookConf(extra string) error {
	conf := fmt.Sprintf("# written by libvirt/e2e\nsocket=%s\ntimeout=5s\n%s", lab.socket, extra)
	return os.WriteFile(filepath.Join(lab.hooks, "vnicfilter.conf"), []byte(conf), 0o644)
}

// libvirtd is the package's shared libvirtd, running the installed hooks.
func libvirtd(t *testing.T) *testlab.Libvirtd {
	t.Helper()
	return testlab.SharedWith(t, testlab.LibvirtdOptions{HooksDir: lab.hooks})
}

// image is the guest image, built once per test binary.
func image(t *testing.T) *testlab.GuestImage {
	t.Helper()
	img, err := testlab.BuildGuestImage(t, "")
	if err != nil {
		t.Fatalf("build guest image: %v", err)
	}
	return img
}

// daemon is a filterd process in the host's network namespace.
type daemon struct {
	t      *testing.T
	args   []string
	root   string // private bpffs root
	logf   string
	cmd    *exec.Cmd
	exited chan struct{}
	client *api.Client
}

// startFilterd starts filterd on the hook's socket with a private bpffs
// root and state directory; t's cleanup ends it by pid and removes every
// chain it left pinned.
func startFilterd(t *testing.T, extra ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, root: "/sys/fs/bpf/vfe2e-" + randHex(4), logf: filepath.Join(t.TempDir(), "filterd.log")}
	d.args = append([]string{"--socket", lab.socket, "--bpffs-root", d.root,
		"--state-dir", filepath.Join(t.TempDir(), "state"), "--log-level", "debug"}, extra...)
	d.client = api.NewClient(lab.socket)
	t.Cleanup(func() {
		d.stop(syscall.SIGTERM)
		if dp, err := datapath.New(datapath.Options{Root: d.root}); err == nil {
			names, _ := dp.Pinned()
			for _, n := range names {
				_ = dp.Remove(n)
			}
		}
		_ = os.RemoveAll(d.root)
		if t.Failed() {
			t.Logf("filterd log:\n%s", d.logs())
		}
	})
	d.start()
	return d
}

// start runs filterd and waits until it answers.
func (d *daemon) start() time.Duration {
	d.t.Helper()
	f, err := os.OpenFile(d.logf, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatal(err)
	}
	defer f.Close()
	begin := time.Now()
	d.cmd = exec.Command(filepath.Join(lab.bin, "filterd"), d.args...)
	d.cmd.Stdout, d.cmd.Stderr = f, f
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("start filterd: %v", err)
	}
	d.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) { _ = cmd.Wait(); close(exited) }(d.cmd, d.exited)
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := d.client.Version(ctx)
		cancel()
		if err == nil {
			return time.Since(begin)
		}
		select {
		case <-d.exited:
			d.t.Fatalf("filterd exited at start-up; log:\n%s", d.logs())
		default:
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("filterd did not answer on %s within 15s; log:\n%s", lab.socket, d.logs())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop signals the filterd we started, by its pid, and waits for it.
func (d *daemon) stop(sig syscall.Signal) {
	if d.cmd == nil {
		return
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
	d.cmd = nil
}

func (d *daemon) logs() string {
	b, _ := os.ReadFile(d.logf)
	return string(b)
}

// vnics lists filterd's chains.
func (d *daemon) vnics(t *testing.T) []api.VNIC {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	vs, err := d.client.VNICs(ctx)
	if err != nil {
		t.Fatalf("list chains: %v", err)
	}
	return vs
}

// vnic returns one chain with its counters; nil if tap has none.
func (d *daemon) vnic(t *testing.T, tap string) *api.VNIC {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	v, err := d.client.VNIC(ctx, tap)
	if api.IsCode(err, api.CodeNotAttached) {
		return nil
	}
	if err != nil {
		t.Fatalf("chain of %s: %v", tap, err)
	}
	return v
}

// macOf is the guest MAC filterd records as tap's label (GET /v1/labels);
// empty when it has none.
func (d *daemon) macOf(t *testing.T, tap string) string {
	t.Helper()
	ls, err := d.client.Labels(context.Background())
	if err != nil {
		t.Fatalf("labels: %v", err)
	}
	for _, l := range ls {
		if l.VNIC == tap {
			return l.MAC
		}
	}
	return ""
}

// summary renders chains as "tap owner [filters]" lines, sorted, to compare
// filterd's state before and after something.
func summary(vs []api.VNIC) []string {
	var out []string
	for _, v := range vs {
		var fs []string
		for _, s := range v.Slots {
			fs = append(fs, fmt.Sprintf("%d:%s%v", s.Slot, s.Filter, s.Params))
		}
		out = append(out, fmt.Sprintf("%s %s %v", v.Name, v.Owner, fs))
	}
	slices.Sort(out)
	return out
}

// waitFor polls cond every 5 ms until it holds or timeout passes, and
// returns how long it took.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	begin := time.Now()
	for !cond() {
		if time.Since(begin) > timeout {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(begin)
}

// subnet is a random 10.77.X.0/24 so concurrent runs do not collide; the
// host is .1 on the bridge when a test needs it.
func subnet() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(250))
	return fmt.Sprintf("10.77.%d.", n.Int64()+1)
}

// hostOnBridge gives the host prefix+"1"/24 on br.
func hostOnBridge(t *testing.T, br, prefix string) string {
	t.Helper()
	link, err := netlink.LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := netlink.ParseAddr(prefix + "1/24")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.AddrAdd(link, addr); err != nil {
		t.Fatalf("address on %s: %v", br, err)
	}
	return prefix + "1"
}

// metadata renders the vnicfilter element for GuestSpec.Metadata: one
// interface entry per MAC, each a list of filters written as
// "name" or "name:param=value,param=value".
func metadata(chains map[string][]string) string {
	var b strings.Builder
	b.WriteString(`<vnicfilter:filters xmlns:vnicfilter="https://vnicfilter.dev/xmlns/domain/1">`)
	macs := make([]string, 0, len(chains))
	for mac := range chains {
		macs = append(macs, mac)
	}
	slices.Sort(macs)
	for _, mac := range macs {
		fmt.Fprintf(&b, `<vnicfilter:interface mac="%s">`, mac)
		for _, f := range chains[mac] {
			name, params, _ := strings.Cut(f, ":")
			fmt.Fprintf(&b, `<vnicfilter:filter name="%s">`, name)
			if params != "" {
				for _, p := range strings.Split(params, ",") {
					k, v, _ := strings.Cut(p, "=")
					fmt.Fprintf(&b, `<vnicfilter:param name="%s" value="%s"/>`, k, v)
				}
			}
			b.WriteString(`</vnicfilter:filter>`)
		}
		b.WriteString(`</vnicfilter:interface>`)
	}
	b.WriteString(`</vnicfilter:filters>`)
	return b.String()
}

// phase is one hook call the trace hooks recorded.
type phase struct {
	at     time.Time
	hook   string // 00-trace (before ours) or zz-trace (after ours)
	domain string
	op     string // "start begin", …
}

// phases returns the hook calls recorded for domain, in order.
func phases(t *testing.T, domain string) []phase {
	t.Helper()
	b, err := os.ReadFile(lab.phases)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []phase
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) != 5 || f[2] != domain {
			continue
		}
		sec, frac, _ := strings.Cut(f[0], ".")
		s, _ := strconv.ParseInt(sec, 10, 64)
		ns, _ := strconv.ParseInt(frac, 10, 64)
		out = append(out, phase{at: time.Unix(s, ns), hook: f[1], domain: f[2], op: f[3] + " " + f[4]})
	}
	return out
}

// ops returns the operations one trace hook saw, in order.
func ops(ps []phase, hook string) []string {
	var out []string
	for _, p := range ps {
		if p.hook == hook {
			out = append(out, p.op)
		}
	}
	return out
}

// at returns when hook saw op.
func at(ps []phase, hook, op string) (time.Time, bool) {
	for _, p := range ps {
		if p.hook == hook && p.op == op {
			return p.at, true
		}
	}
	return time.Time{}, false
}

// domState is `virsh domstate`.
func domState(t *testing.T, l *testlab.Libvirtd, name string) string {
	t.Helper()
	out, err := l.Virsh("domstate", name)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// tapRxPackets is what the host received from the guest on tap: every
// frame the guest sent, counted by the tun driver before tc ingress.
func tapRxPackets(t *testing.T, tap string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/sys/class/net/" + tap + "/statistics/rx_packets")
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// mac returns a locally administered-looking QEMU MAC for test guests.
func mac(i int) string { return fmt.Sprintf("52:54:00:77:%02x:%02x", i/256, i%256) }
