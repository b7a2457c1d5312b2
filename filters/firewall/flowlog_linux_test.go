package firewall

import (
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestFlowLogEvents: through BPF_PROG_TEST_RUN, IPv6: a flow a log rule
// allows, a flow only flow_log_all would log (not logged), a denied
// packet, and the logged flow cut by a policy swap, each as its line.
func TestFlowLogEvents(t *testing.T) {
	policy := []byte(`{"version": 1, "defaults": {"from-vm": "deny", "to-vm": "deny"}, "rules": [
		{"name": "dns", "direction": "from-vm", "proto": "udp", "dst_ports": [53], "action": "allow", "log": true},
		{"name": "web", "direction": "from-vm", "proto": "tcp", "dst_ports": [443], "action": "allow"}]}`)
	logFile := filepath.Join(t.TempDir(), "flows.jsonl")
	fp, _ := testInstanceParams(t, policy, map[string]string{"flow_log": logFile})
	vm, remote := netip.MustParseAddr("fd00::1"), netip.MustParseAddr("fd09::53")
	dns := flow{v6: true, vm: vm, remote: remote, proto: ProtoUDP, vmPort: 5353, remotePort: 53}
	web := flow{v6: true, vm: vm, remote: remote, proto: ProtoTCP, vmPort: 40000, remotePort: 443}
	ssh := flow{v6: true, vm: vm, remote: remote, proto: ProtoTCP, vmPort: 40001, remotePort: 22}
	send := func(f flow, flags uint8, want bool) {
		t.Helper()
		s := f.spec(sdk.FromVM)
		s.flags = flags
		if pass, _ := run(t, fp.Program(), s.build(), sdk.FromVM); pass != want {
			t.Fatalf("%+v: pass=%v", f, pass)
		}
	}
	send(dns, 0, true)
	send(web, tcpSYN, true)
	send(ssh, tcpSYN, false)
	allowDNS := func(e FlowEvent) bool {
		return e.Event == "allow" && e.Rule == "dns" && *e.RuleIndex == 0 && e.Proto == "udp" && e.Src == "fd00::1" && e.Dst == "fd09::53" &&
			*e.SrcPort == 5353 && *e.DstPort == 53 && e.Dir == "from-vm" && e.Len > 0
	}
	// The reader names rules from the live policy: let it write the
	// allow line before the swap removes rule "dns" (on a loaded machine
	// it may still be behind).
	waitLog(t, logFile, map[string]func(FlowEvent) bool{"allow dns": allowDNS})
	p2, err := ParsePolicy([]byte(`{"version": 1, "defaults": {"from-vm": "deny", "to-vm": "deny"}}`), ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fp.UpdatePolicy(p2); err != nil {
		t.Fatal(err)
	}
	send(dns, 0, false) // cut
	waitLog(t, logFile, map[string]func(FlowEvent) bool{
		"allow dns": allowDNS,
		"deny ssh by the default": func(e FlowEvent) bool {
			return e.Event == "deny" && e.RuleIndex == nil && e.Rule == "" && *e.DstPort == 22 && e.TCPFlags == "S"
		},
		"cut dns": func(e FlowEvent) bool { return e.Event == "cut" && e.Proto == "udp" && *e.DstPort == 53 },
	})
	st := fp.statsForTest(t)
	if st[StatLogEvents] != 3 || st[StatLogLimited] != 0 || st[StatLogLost] != 0 {
		t.Errorf("flow-log counters: %d events (want 3: web is not a log rule), %d limited, %d lost", st[StatLogEvents], st[StatLogLimited], st[StatLogLost])
	}
}
