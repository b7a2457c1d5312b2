package firewall

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestFlowLogE2E: real traffic through the firewall on b's tap with
// flow_log on. A connection allowed by a log rule, a denied and a
// rejected packet each give a JSON line naming the rule; a flood of
// denied packets is cut to flow_log_rate (the rest counted, every packet
// still dropped); the sweep writes the logged flow's end with its packet
// and byte counts.
func TestFlowLogE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	logFile := filepath.Join(dir, "flows.jsonl")
	if err := os.WriteFile(policy, []byte(`{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}, "rules": [
		{"name": "tcp-5001", "direction": "to-vm", "proto": "tcp", "dst_ports": [5001], "action": "allow", "log": true},
		{"name": "tcp-5002", "direction": "to-vm", "proto": "tcp", "dst_ports": [5002], "action": "deny"},
		{"name": "udp-5003", "direction": "to-vm", "proto": "udp", "dst_ports": [5003], "action": "reject"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	const rate = 50
	chain := b.AttachFilter(t, Descriptor, map[string]string{"policy": policy, "flow_log": logFile, "flow_log_rate": fmt.Sprint(rate)})
	fp := chain.FastPath.(*fastPath)

	l, err := b.ListenTCP(net.JoinHostPort(b.IPv4.IP.String(), "5001"))
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
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, net.JoinHostPort(b.IPv4.IP.String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1000)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, msg); err != nil {
		t.Fatal(err)
	}
	c.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if c, err := a.DialTCP(short, net.JoinHostPort(b.IPv4.IP.String(), "5002")); err == nil {
		c.Close()
		t.Fatal("tcp/5002 connected")
	}
	u, err := a.DialUDP(context.Background(), net.JoinHostPort(b.IPv4.IP.String(), "5003"))
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if _, err := u.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}

	want := map[string]func(e FlowEvent) bool{
		"allow tcp-5001": func(e FlowEvent) bool {
			return e.Event == "allow" && e.Rule == "tcp-5001" && e.Dir == "to-vm" && e.Src == a.IPv4.IP.String() && *e.DstPort == 5001 && e.TCPFlags == "S"
		},
		"deny tcp-5002": func(e FlowEvent) bool {
			return e.Event == "deny" && e.Rule == "tcp-5002" && *e.DstPort == 5002 && e.Dst == b.IPv4.IP.String()
		},
		"reject udp-5003, answered": func(e FlowEvent) bool {
			return e.Event == "reject" && e.Rule == "udp-5003" && e.Answered != nil && *e.Answered && e.Proto == "udp"
		},
	}
	waitLog(t, logFile, want)

	// A flood of denied packets: at most ~rate per second are logged.
	flood, err := a.DialUDP(context.Background(), net.JoinHostPort(b.IPv4.IP.String(), "5009"))
	if err != nil {
		t.Fatal(err)
	}
	defer flood.Close()
	const n = 2000
	start := time.Now()
	for range n {
		_, _ = flood.Write([]byte("flood"))
	}
	secs := time.Since(start).Seconds()
	st := fp.statsForTest(t)
	if st[StatLogLimited] == 0 || float64(st[StatLogEvents]) > float64(rate)*(secs+2)+10 {
		t.Errorf("flood of %d denied packets in %.2fs: %d events logged, %d limited; want at most ~%d/s logged", n, secs, st[StatLogEvents], st[StatLogLimited], rate)
	}
	if d := st[StatDefaultToVM]; d < n {
		t.Errorf("default_to_vm_total %d after a flood of %d: packets were not all denied", d, n)
	}
	t.Logf("flood: %d packets in %.3fs, %d events logged, %d limited, %d lost", n, secs, st[StatLogEvents], st[StatLogLimited], st[StatLogLost])

	// The sweep, "6 days later", ends the logged flow.
	if _, err := fp.gc(sdk.KtimeNow() + uint64(6*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	waitLog(t, logFile, map[string]func(e FlowEvent) bool{
		"end tcp-5001": func(e FlowEvent) bool {
			return e.Event == "end" && e.Rule == "tcp-5001" && e.Packets >= 6 && e.Bytes > 2000 && e.Src == a.IPv4.IP.String() && *e.DstPort == 5001
		},
	})
}

// waitLog waits until every check matches a line of the flow log.
func waitLog(t *testing.T, file string, checks map[string]func(FlowEvent) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var lines []string
	for {
		lines = lines[:0]
		found := map[string]bool{}
		f, err := os.Open(file)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			lines = append(lines, sc.Text())
			var e FlowEvent
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("flow log line %q: %v", sc.Text(), err)
			}
			for name, ok := range checks {
				if func() (r bool) { defer func() { _ = recover() }(); return ok(e) }() {
					found[name] = true
				}
			}
		}
		f.Close()
		if len(found) == len(checks) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("flow log has %v of %d wanted events; lines:\n%s", found, len(checks), fmt.Sprint(lines))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
