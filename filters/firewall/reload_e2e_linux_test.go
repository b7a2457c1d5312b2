package firewall

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filterd/api"
	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// reloadPolicy: both defaults deny; a may reach b on the given ports.
func reloadPolicy(a net.IP, ports ...int) []byte {
	b, _ := json.Marshal(map[string]any{
		"version": 1, "defaults": map[string]string{"from-vm": "deny", "to-vm": "deny"},
		"rules": []map[string]any{{"name": "a-in", "direction": "to-vm", "src": []string{a.String()}, "proto": "tcp", "dst_ports": ports, "action": "allow"}},
	})
	return b
}

// writeAtomic replaces path as an editor would (rename), so a reload never
// reads half a file.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestReloadE2E runs filterd (the real binary) in a test host with the
// firewall on b's vNIC and swaps the policy with `vfctl fw load` while a
// TCP stream runs: the still-allowed stream (tcp/5001) loses nothing and
// never stalls (no retransmission timeout), the stream on the newly
// denied port (tcp/5002) is cut, new connections to it fail, a bad policy
// file changes nothing, and filters without a reload answer 501.
func TestReloadE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", bin+"/", "github.com/vnicfilter/vnicfilter/cmd/filterd", "github.com/vnicfilter/vnicfilter/cmd/vfctl")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")

	var rb [4]byte
	_, _ = rand.Read(rb[:])
	root := "/sys/fs/bpf/vftest-" + hex.EncodeToString(rb[:])
	dir, err := os.MkdirTemp("", "vfrl") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	logs := &bytes.Buffer{}
	cmd := host.Command(context.Background(), filepath.Join(bin, "filterd"), "--socket", sock, "--bpffs-root", root, "--state-dir", filepath.Join(dir, "state"), "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGKILL)
		_, _ = cmd.Process.Wait()
		_ = host.Do(func() error {
			if dp, err := datapath.New(datapath.Options{Root: root}); err == nil {
				names, _ := dp.Pinned()
				for _, n := range names {
					_ = dp.Remove(n)
				}
			}
			return nil
		})
		_ = os.RemoveAll(root)
		if t.Failed() {
			t.Logf("filterd logs:\n%s", logs)
		}
	})
	client := api.NewClient(sock)
	ctx := context.Background()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := client.Version(ctx); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("filterd did not come up:\n%s", logs)
		}
	}
	vfctl := func(args ...string) (string, int) {
		out, err := exec.Command(filepath.Join(bin, "vfctl"), append([]string{"--socket", sock}, args...)...).CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(out), 0
	}

	policy := filepath.Join(dir, "policy.json")
	writeAtomic(t, policy, reloadPolicy(a.IPv4.IP, 5001, 5002))
	if _, err := client.Attach(ctx, b.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: Name, Params: map[string]string{"policy": policy, "conntrack_size": "4096"}}}); err != nil {
		t.Fatalf("attach firewall: %v", err)
	}
	var srvMu sync.Mutex
	var servers []net.Conn // accepted on 5001
	for _, port := range []int{5001, 5002} {
		l, err := b.ListenTCP(net.JoinHostPort(b.IPv4.IP.String(), fmt.Sprint(port)))
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
				if port == 5001 {
					srvMu.Lock()
					servers = append(servers, c)
					srvMu.Unlock()
				}
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
	}
	dial := func(port int, timeout time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return a.DialTCP(ctx, net.JoinHostPort(b.IPv4.IP.String(), fmt.Sprint(port)))
	}
	echo := func(c net.Conn, msg []byte, timeout time.Duration) error {
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write(msg); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if !bytes.Equal(got, msg) {
			return fmt.Errorf("echo corrupted")
		}
		return nil
	}

	// The stream: numbered 512-byte messages every 2 ms, each echoed.
	stream, err := dial(5001, 3*time.Second)
	if err != nil {
		t.Fatalf("tcp/5001: %v", err)
	}
	defer stream.Close()
	doomed, err := dial(5002, 3*time.Second)
	if err != nil {
		t.Fatalf("tcp/5002 before the reload: %v", err)
	}
	defer doomed.Close()
	if err := echo(doomed, []byte("allowed for now"), 3*time.Second); err != nil {
		t.Fatalf("tcp/5002 before the reload: %v", err)
	}
	var (
		mu      sync.Mutex
		sent    int
		maxGap  time.Duration
		streamE error
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		msg := make([]byte, 512)
		last := time.Now()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			binary.BigEndian.PutUint64(msg, uint64(i))
			if err := echo(stream, msg, 3*time.Second); err != nil {
				mu.Lock()
				streamE = fmt.Errorf("message %d: %w", i, err)
				mu.Unlock()
				return
			}
			now := time.Now()
			mu.Lock()
			sent++
			if now.Sub(last) > 100*time.Millisecond {
				t.Logf("gap %v ending at %s (message %d)", now.Sub(last), now.Format("15:04:05.000"), i)
			}
			maxGap = max(maxGap, now.Sub(last))
			mu.Unlock()
			last = now
			time.Sleep(2 * time.Millisecond)
		}
	}()
	time.Sleep(300 * time.Millisecond)

	// A bad file: refused, nothing changes.
	writeAtomic(t, policy, []byte(`{"version": 1, "rules": [{"action": "allow", "dport": 1}]}`))
	if out, code := vfctl("fw", "load", b.TapName, "0"); code != 5 {
		t.Errorf("load of a bad policy: exit %d, want 5\n%s", code, out)
	}
	if err := echo(doomed, []byte("still allowed"), 3*time.Second); err != nil {
		t.Fatalf("tcp/5002 after a refused reload: %v", err)
	}

	// The swap: 5001 stays, 5002 goes.
	writeAtomic(t, policy, reloadPolicy(a.IPv4.IP, 5001))
	t.Logf("reload at %s", time.Now().Format("15:04:05.000"))
	if out, code := vfctl("fw", "load", b.TapName, "0"); code != 0 {
		t.Fatalf("vfctl fw load: exit %d\n%s", code, out)
	} else {
		t.Logf("%s", bytes.TrimSpace([]byte(out)))
	}
	if err := echo(doomed, []byte("cut?"), 1500*time.Millisecond); err == nil {
		t.Error("tcp/5002 stream survived a policy that denies it")
	}
	if c, err := dial(5002, 700*time.Millisecond); err == nil {
		c.Close()
		t.Error("new tcp/5002 connection passed after the reload")
	}
	time.Sleep(300 * time.Millisecond)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	if streamE != nil {
		t.Fatalf("allowed stream broke across the reload: %v", streamE)
	}
	// A segment the firewall dropped would have been retransmitted, by a
	// or by b's echo server.
	srvMu.Lock()
	retrans := totalRetrans(t, stream)
	for _, c := range servers {
		retrans += totalRetrans(t, c)
	}
	srvMu.Unlock()
	if retrans != 0 {
		t.Errorf("allowed stream: %d retransmitted segments across the reload", retrans)
	}
	t.Logf("allowed stream: %d echoed messages, no retransmission, longest gap %v", sent, maxGap.Round(time.Millisecond))

	v, err := client.VNIC(ctx, b.TapName)
	if err != nil {
		t.Fatal(err)
	}
	cut := 0.0
	for _, c := range v.Slots[0].Counters {
		if c.Name == "cut_flows_total" {
			cut = c.Value
		}
	}
	if t.Failed() {
		vj, _ := json.MarshalIndent(v, "", " ")
		t.Logf("%s", vj)
	}
	if cut < 1 {
		t.Errorf("cut_flows_total = %v, want >= 1", cut)
	}

	// Inspect through the daemon: the table, the rules, the running policy.
	out, code := vfctl("fw", "conns", b.TapName)
	if code != 0 || !strings.Contains(out, b.IPv4.IP.String()+":5001") || !strings.Contains(out, "a-in") {
		t.Errorf("vfctl fw conns: exit %d, want the tcp/5001 flow allowed by a-in:\n%s", code, out)
	}
	t.Logf("vfctl fw conns %s:\n%s", b.TapName, out)
	// Hits restart with each policy: one new connection after the reload.
	if c, err := dial(5001, 2*time.Second); err != nil {
		t.Fatal(err)
	} else {
		c.Close()
	}
	out, code = vfctl("-o", "json", "fw", "top", b.TapName, "--by", "rules")
	var top TopView
	if err := json.Unmarshal([]byte(out), &top); code != 0 || err != nil || len(top.Rules) != 1 || top.Rules[0].Name != "a-in" || top.Rules[0].Hits < 1 {
		t.Errorf("vfctl fw top --by rules: exit %d, %v:\n%s", code, err, out)
	}
	out, code = vfctl("fw", "top", b.TapName)
	if code != 0 || !strings.Contains(out, "top 1 of") && !strings.Contains(out, "top 2 of") {
		t.Errorf("vfctl fw top: exit %d:\n%s", code, out)
	}
	t.Logf("vfctl fw top %s:\n%s", b.TapName, out)
	// The file says 5002 again, but is not loaded: explain answers with
	// the running policy (generation 2: attach, reload).
	writeAtomic(t, policy, reloadPolicy(a.IPv4.IP, 5001, 5002))
	pkt := fmt.Sprintf("to-vm tcp %s:1234 -> %s:5002", a.IPv4.IP, b.IPv4.IP)
	out, code = vfctl("fw", "explain", b.TapName, pkt)
	if code != 0 || !strings.Contains(out, "verdict: deny") || !strings.Contains(out, "generation 2") || !strings.Contains(out, "the file has changed since") {
		t.Errorf("vfctl fw explain %s (running policy): exit %d:\n%s", b.TapName, code, out)
	}
	t.Logf("vfctl fw explain %s %q:\n%s", b.TapName, pkt, out)

	// Errors: a filter without Reloader, an empty slot, an unknown vNIC.
	if _, err := client.Attach(ctx, b.TapName, api.AttachRequest{Filter: api.FilterSpec{Name: "count"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Reload(ctx, b.TapName, 1); !api.IsCode(err, api.CodeNotSupported) {
		t.Errorf("reload of count: %v, want not_supported", err)
	}
	if _, err := client.Reload(ctx, b.TapName, 5); !api.IsCode(err, api.CodeNotAttached) {
		t.Errorf("reload of an empty slot: %v, want not_attached", err)
	}
	if _, err := client.Reload(ctx, "nosuchvnic", 0); !api.IsCode(err, api.CodeNotAttached) {
		t.Errorf("reload on an unknown vNIC: %v, want not_attached", err)
	}
}

// totalRetrans reads tcpi_total_retrans of a TCP connection.
func totalRetrans(t *testing.T, c net.Conn) uint32 {
	t.Helper()
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var info *unix.TCPInfo
	var gerr error
	if err := sc.Control(func(fd uintptr) { info, gerr = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return info.Total_retrans
}
