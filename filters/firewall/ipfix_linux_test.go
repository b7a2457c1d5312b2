package firewall

import (
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// writeUDPPcap wraps each payload in Ethernet/IPv4/UDP to dport and
// writes a pcap file, so tshark decodes exactly the bytes we sent.
func writeUDPPcap(t *testing.T, path string, dport uint16, payloads [][]byte) {
	t.Helper()
	var out []byte
	le := binary.LittleEndian
	hdr := make([]byte, 24)
	le.PutUint32(hdr[0:], 0xa1b2c3d4)
	le.PutUint16(hdr[4:], 2)
	le.PutUint16(hdr[6:], 4)
	le.PutUint32(hdr[16:], 65535)
	le.PutUint32(hdr[20:], 1) // Ethernet
	out = append(out, hdr...)
	for _, p := range payloads {
		f := make([]byte, 14+20+8, 42+len(p))
		binary.BigEndian.PutUint16(f[12:], 0x0800)
		ip := f[14:]
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[2:], uint16(28+len(p)))
		copy(ip[12:], []byte{127, 0, 0, 1, 127, 0, 0, 1})
		var sum uint32
		for i := 0; i < 20; i += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[i:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		binary.BigEndian.PutUint16(f[34:], 40000)
		binary.BigEndian.PutUint16(f[36:], dport)
		binary.BigEndian.PutUint16(f[38:], uint16(8+len(p)))
		f = append(f, p...)
		rec := make([]byte, 16)
		le.PutUint32(rec[8:], uint32(len(f)))
		le.PutUint32(rec[12:], uint32(len(f)))
		out = append(append(out, rec...), f...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestIPFIXExport: with flow_log=ipfix://collector, an allowed logged
// flow, a denied packet and the logged flow's end reach the collector as
// IPFIX that tshark decodes with the expected fields and no warning.
func TestIPFIXExport(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF, testkit.Tshark)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	var coll *net.UDPConn
	if err := host.Do(func() (err error) {
		coll, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	var mu sync.Mutex
	var msgs [][]byte
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := coll.Read(buf)
			if err != nil {
				return
			}
			mu.Lock()
			msgs = append(msgs, append([]byte(nil), buf[:n]...))
			mu.Unlock()
		}
	}()
	dir := t.TempDir()
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "deny"}, "rules": [
		{"name": "tcp-5001", "direction": "to-vm", "proto": "tcp", "dst_ports": [5001], "action": "allow", "log": true}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	chain := b.AttachFilter(t, Descriptor, map[string]string{"policy": policy, "flow_log": "ipfix://" + coll.LocalAddr().String()})
	fp := chain.FastPath.(*fastPath)

	l, err := b.ListenTCP(net.JoinHostPort(b.IPv4.IP.String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_, _ = io.Copy(c, c)
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialTCP(ctx, net.JoinHostPort(b.IPv4.IP.String(), "5001"))
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 1000)
	_, _ = c.Write(msg)
	_, _ = io.ReadFull(c, msg)
	c.Close()
	short, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if c, err := a.DialTCP(short, net.JoinHostPort(b.IPv4.IP.String(), "5002")); err == nil {
		c.Close()
		t.Fatal("tcp/5002 connected")
	}
	time.Sleep(300 * time.Millisecond) // FINs
	if _, err := fp.gc(sdk.KtimeNow() + uint64(6*24*time.Hour)); err != nil {
		t.Fatal(err)
	}

	type rec struct{ event, src, dst, dport, proto, packets, octets, ifname, direction, selector string }
	var recs []rec
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		mu.Lock()
		got := append([][]byte(nil), msgs...)
		mu.Unlock()
		file := filepath.Join(dir, "ipfix.pcap")
		writeUDPPcap(t, file, 4739, got)
		rows := testkit.TsharkFields(t, file, "cflow.firewall_event", "cflow.srcaddr", "cflow.dstaddr", "cflow.dstport",
			"cflow.protocol", "cflow.packets", "cflow.octets", "cflow.if_name", "cflow.direction", "cflow.selector_id")
		recs = recs[:0]
		for _, r := range rows {
			cols := make([][]string, len(r))
			for i, v := range r {
				cols[i] = strings.Split(v, ",")
			}
			for j := range cols[0] {
				at := func(i int) string {
					if j < len(cols[i]) {
						return cols[i][j]
					}
					return ""
				}
				if at(0) != "" {
					recs = append(recs, rec{at(0), at(1), at(2), at(3), at(4), at(5), at(6), at(7), at(8), at(9)})
				}
			}
		}
		var created, denied, ended bool
		for _, r := range recs {
			base := r.src == a.IPv4.IP.String() && r.dst == b.IPv4.IP.String() && r.proto == "6" && r.ifname == b.TapName && r.direction == "1"
			switch {
			// selectorId: rule tcp-5001 is index 0 (1); the to-vm
			// default denied 5002 (0).
			case base && r.event == "1" && r.dport == "5001" && r.selector == "1":
				created = true
			case base && r.event == "3" && r.dport == "5002" && r.selector == "0":
				denied = true
			case r.event == "2" && r.dport == "5001" && r.ifname == b.TapName && atoi(r.packets) >= 6 && atoi(r.octets) > 2000 && r.selector == "1":
				ended = true
			}
		}
		if created && denied && ended {
			out, err := exec.Command("tshark", "-r", file, "-d", "udp.port==4739,cflow", "-q", "-z", "expert,warn").CombinedOutput()
			if err != nil || strings.Contains(string(out), "Warning") || strings.Contains(string(out), "Error") {
				t.Errorf("tshark expert info: %v\n%s", err, out)
			}
			t.Logf("%d IPFIX messages, %d records decoded by tshark", len(got), len(recs))
			return
		}
	}
	t.Fatalf("IPFIX records decoded: %+v; want a created (1) 5001 and a deleted (2) 5001 with packets and octets, both by rule 1, and a denied (3) 5002 by the default (0)", recs)
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestIPFIXRuleAndVM: the rule (selectorId = index + 1, selectorName) and
// the VM (virtualStationName) of each flow-log event reach the collector
// as IPFIX that tshark decodes with the expected values: a rule's event,
// a default's (id 0, no name), an unknown VM, a UTF-8 VM name and one too
// long for a one-byte length (cut at 254 bytes, on a rune boundary).
func TestIPFIXRuleAndVM(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.Tshark)
	host := testkit.NewHost(t)
	var coll *net.UDPConn
	var x *ipfixExporter
	if err := host.Do(func() (err error) {
		if err = exec.Command("ip", "link", "set", "lo", "up").Run(); err != nil {
			return err
		}
		if coll, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		x, err = newIPFIXExporter(coll.LocalAddr().String(), 7)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer coll.Close()
	defer x.close()

	long := strings.Repeat("é", 200) // 400 bytes
	idx := func(i int) *int { return &i }
	port := func(p uint16) *uint16 { return &p }
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	events := []FlowEvent{
		{Time: now, VNIC: "vnet7", VM: "web01", Event: "allow", Dir: "to-vm", Proto: "tcp", Src: "10.0.0.1", Dst: "10.0.0.2", SrcPort: port(40000), DstPort: port(443), Rule: "https-in", RuleIndex: idx(3), Len: 74},
		{Time: now, VNIC: "vnet7", VM: "db-ü", Event: "deny", Dir: "from-vm", Proto: "udp", Src: "fd00::1", Dst: "fd00::2", SrcPort: port(5353), DstPort: port(53), Len: 90},
		{Time: now, VNIC: "vnet8", Event: "end", Dir: "to-vm", Proto: "tcp", Src: "10.0.0.3", Dst: "10.0.0.2", SrcPort: port(40001), DstPort: port(22), Rule: "ssh", RuleIndex: idx(0), Packets: 9, Bytes: 2638, Seconds: 1.5},
		{Time: now, VNIC: "vnet9", VM: long, Event: "reject", Dir: "to-vm", Proto: "tcp", Src: "10.0.0.4", Dst: "10.0.0.2", SrcPort: port(1), DstPort: port(23), Rule: "no-telnet", RuleIndex: idx(1), Len: 60},
	}
	want := [][]string{ // event, vNIC, selector id, selector name, VM
		{"1", "vnet7", "4", "https-in", "web01"},
		{"3", "vnet7", "0", "", "db-ü"},
		{"2", "vnet8", "1", "ssh", ""},
		{"3", "vnet9", "2", "no-telnet", strings.Repeat("é", 127)},
	}
	var msgs [][]byte
	buf := make([]byte, 65536)
	for i := range events {
		// One record per message, so tshark shows one row per record.
		if err := x.record(&events[i]); err != nil {
			t.Fatal(err)
		}
		if err := x.flush(); err != nil {
			t.Fatal(err)
		}
		coll.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, err := coll.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, append([]byte(nil), buf[:n]...))
	}
	file := filepath.Join(t.TempDir(), "ipfix.pcap")
	writeUDPPcap(t, file, 4739, msgs)
	rows := testkit.TsharkFields(t, file, "cflow.firewall_event", "cflow.if_name", "cflow.selector_id", "cflow.selector_name", "cflow.virtual_station_name")
	if len(rows) != len(want) {
		t.Fatalf("tshark shows %d messages, want %d: %q", len(rows), len(want), rows)
	}
	for i, r := range rows {
		for len(r) < len(want[i]) {
			r = append(r, "") // tshark leaves trailing empty fields out
		}
		if strings.Join(r, "|") != strings.Join(want[i], "|") {
			t.Errorf("record %d (%s): tshark decodes %q, want %q", i, events[i].Event, r, want[i])
		}
	}
	out, err := exec.Command("tshark", "-r", file, "-q", "-z", "expert,note").CombinedOutput()
	if err != nil || strings.Contains(string(out), "Warning") || strings.Contains(string(out), "Error") {
		t.Errorf("tshark expert info: %v\n%s", err, out)
	}
}
