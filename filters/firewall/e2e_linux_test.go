package firewall

import (
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

// e2ePolicy protects VM b: only a may reach it, on tcp/5001; both
// defaults deny, so b's answers pass only through the connection table.
// extra deny rules (distinct remote /32s, ahead in priority) make the
// 10,000-rule variant.
func e2ePolicy(a net.IP, extra int) []byte {
	rules := []map[string]any{}
	for i := range extra {
		rules = append(rules, map[string]any{
			"name": fmt.Sprintf("deny-%d", i), "priority": 10, "direction": "to-vm",
			"src":   []string{fmt.Sprintf("10.%d.%d.%d", 200+i>>16, (i>>8)&0xff, i&0xff)},
			"proto": "tcp", "dst_ports": []int{1000 + i%50000}, "action": "deny",
		})
	}
	rules = append(rules, map[string]any{
		"name": "a-to-5001", "priority": 20, "direction": "to-vm",
		"src": []string{a.String()}, "proto": "tcp", "dst_ports": []int{5001}, "action": "allow",
	})
	b, _ := json.Marshal(map[string]any{
		"version": 1, "defaults": map[string]string{"from-vm": "deny", "to-vm": "deny"}, "rules": rules,
	})
	return b
}

// TestFirewallE2E attaches the firewall to b's vNIC through the real
// datapath: a's TCP connection to 5001 works (b's replies pass through
// conntrack), ping and other ports are dropped; then a 10,000-rule policy
// is swapped in live and behaves the same.
func TestFirewallE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
		t.Fatalf("before attach: %v", err)
	}
	path := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(path, e2ePolicy(a.IPv4.IP, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"policy": path, "conntrack_size": "4096"})
	if err != nil {
		t.Fatal(err)
	}
	chain := b.AttachFilter(t, Descriptor, params.Map())
	fp := chain.FastPath

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
				go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
	}

	check := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := a.DialTCP(ctx, net.JoinHostPort(b.IPv4.IP.String(), "5001"))
		if err != nil {
			t.Fatalf("tcp/5001 from a: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		msg := []byte("through the firewall and back")
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("echo over tcp/5001 (replies need conntrack): %v", err)
		}
		if err := a.Ping(t, b.IPv4.IP, 2); err == nil {
			t.Error("ping from a to b passed the firewall")
		}
		ctx2, cancel2 := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel2()
		if c2, err := a.DialTCP(ctx2, net.JoinHostPort(b.IPv4.IP.String(), "5002")); err == nil {
			c2.Close()
			t.Error("tcp/5002 from a passed the firewall")
		}
	}
	t.Run("one rule", check)

	big, err := ParsePolicy(e2ePolicy(a.IPv4.IP, 9999), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	took, err := fp.(Updater).UpdatePolicy(big)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("10,000-rule policy compiled and swapped in %v", took.Round(time.Millisecond))
	t.Run("10000 rules", check)

	counters, err := fp.Counters()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, c := range counters {
		got[c.Name+"/"+c.Labels["rule"]] += c.Value
	}
	if got["rule_hits_total/a-to-5001"] < 1 || got["established_packets_total/"] < 1 || got["default_to_vm_total/"] < 1 {
		t.Errorf("counters %v: want hits on a-to-5001, established packets and default denials", got)
	}
}
