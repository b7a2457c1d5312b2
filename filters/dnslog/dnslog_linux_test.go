package dnslog

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket/layers"

	"github.com/vnicfilter/vnicfilter/filterd/datapath"
	"github.com/vnicfilter/vnicfilter/filterd/slowpath"
	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestFastPathVerdicts runs dnslog.c on crafted frames (BPF_PROG_TEST_RUN)
// with maps standing in for a vNIC's: a punt without a live slow path
// follows the slot's fail-open mode, so the fail_open counter counts punts.
func TestFastPathVerdicts(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	spec, err := dnslogSpec()
	if err != nil {
		t.Fatal(err)
	}
	maps := testkit.VNICMaps(t, spec)
	slot := struct {
		Flags, Punt uint32
		Alive       uint64
	}{Flags: sdk.SlotPresent | sdk.SlotFailOpen}
	if err := maps[sdk.MapSlots].Put(sdk.ChainIndex(sdk.FromVM, 0), slot); err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "test", Ifindex: 1}}
	fp, err := loadFastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer fp.Close()

	q := dnsMsg(t, 1, "example.com", layers.DNSTypeA, false, 0, 0)
	withOptions := frame(t, false, false, 40000, 53, q)
	withOptions = ipv4WithOptions(withOptions)
	fragment := frame(t, false, false, 40000, 53, q)
	fragment[14+6] = 0x00
	fragment[14+7] = 0x10 // fragment offset 16 (×8 bytes): no ports here
	icmp := frame(t, false, false, 40000, 53, q)
	icmp[14+9] = 1 // protocol ICMP
	cases := []struct {
		name  string
		frame []byte
		punt  bool
	}{
		{"udp4 to 53", frame(t, false, false, 40000, 53, q), true},
		{"udp4 from 53", frame(t, false, false, 53, 40000, q), true},
		{"tcp4 to 53", frame(t, false, true, 40000, 53, tcpDNS(q)), true},
		{"udp6 to 53", frame(t, true, false, 40000, 53, q), true},
		{"tcp6 from 53", frame(t, true, true, 53, 40000, nil), true},
		{"ipv4 options to 53", withOptions, true},
		{"udp4 to 5353", frame(t, false, false, 40000, 5353, q), false},
		{"tcp6 to 443", frame(t, true, true, 40000, 443, nil), false},
		{"icmp", icmp, false},
		{"later fragment", fragment, false},
		{"arp", arpFrame(), false},
	}
	count := func(stat sdk.Stat) uint64 {
		p, _, err := sdk.SumPerCPU(maps[sdk.MapStats], sdk.StatKey(sdk.FromVM, 0, stat))
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			punts, conts := count(sdk.StatFailOpen), count(sdk.StatContinue)
			if _, err := fp.Program().Run(&ebpf.RunOptions{Data: c.frame}); err != nil {
				t.Fatal(err)
			}
			gotPunt := count(sdk.StatFailOpen) > punts
			gotCont := count(sdk.StatContinue) > conts
			if gotPunt != c.punt || gotCont == c.punt {
				t.Errorf("punted %v, continued %v; want punt %v", gotPunt, gotCont, c.punt)
			}
		})
	}
}

// ipv4WithOptions inserts a 4-byte NOP option into an IPv4 frame's header.
func ipv4WithOptions(f []byte) []byte {
	out := append([]byte{}, f[:14+20]...)
	out = append(out, 1, 1, 1, 0) // NOP NOP NOP EOL
	out = append(out, f[14+20:]...)
	out[14] = 0x46
	tot := int(out[16])<<8 | int(out[17]) + 4
	out[16], out[17] = byte(tot>>8), byte(tot)
	out[24], out[25] = 0, 0
	var sum uint32
	for i := 14; i < 14+24; i += 2 {
		sum += uint32(out[i])<<8 | uint32(out[i+1])
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	out[24], out[25] = byte(^sum>>8), byte(^sum)
	return out
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestDNSThroughSlowPath: a VM's DNS query and the answer reach the slow
// path and are logged; ping is not punted.
func TestDNSThroughSlowPath(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	root := filepath.Join("/sys/fs/bpf", "vftest-"+hex.EncodeToString(rb[:]))
	t.Cleanup(func() { _ = os.RemoveAll(root) })

	params, err := sdk.ValidateParams(Descriptor.Params, nil)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	var v *datapath.VNIC
	var sp sdk.SlowPath
	var punt *slowpath.Punt
	err = host.Do(func() error {
		dp, err := datapath.New(datapath.Options{Root: root})
		if err != nil {
			return err
		}
		v, err = dp.Create(a.TapName, func(v *datapath.VNIC) error {
			inst := sdk.Instance{VNIC: sdk.VNIC{Name: v.Name, Ifindex: v.Ifindex}, Directions: Descriptor.Dirs(), FailMode: Descriptor.FailMode, Params: params}
			fp, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, v.Maps(), v.SlotDir(0)))
			if err != nil {
				return err
			}
			t.Cleanup(func() { fp.Close() })
			if err := v.SetSlot(0, fp.Program(), datapath.Slot{FailOpen: true, Dirs: inst.Directions}); err != nil {
				return err
			}
			sp, err = Descriptor.SlowPath(&sdk.SlowPathContext{Instance: inst, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				return err
			}
			punt, err = slowpath.Start(context.Background(), inst.VNIC, 0, inst.Directions, sp, v, slowpath.Options{FailMode: sdk.FailOpen})
			return err
		})
		return err
	})
	if err != nil {
		t.Fatalf("attach dnslog: %v", err)
	}
	t.Cleanup(func() { _ = host.Do(v.Detach) })
	t.Cleanup(func() { _ = punt.Stop(); _ = sp.Close() })

	// A tiny DNS responder in b: echoes the query with QR set.
	srv, err := b.ListenUDP(net.JoinHostPort(b.IPv4.IP.String(), "53"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			if n > 3 {
				buf[2] |= 0x80
				srv.WriteTo(buf[:n], from)
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.DialUDP(ctx, net.JoinHostPort(b.IPv4.IP.String(), "53"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write(dnsMsg(t, 0xbeef, "vm-a.example", layers.DNSTypeAAAA, false, 0, 0)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1500)
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("no DNS answer through dnslog: %v", err)
	}
	got := counters(sp.(*slowPath))
	if got["queries_total/from-vm"] != 1 || got["responses_total/to-vm"] != 1 {
		t.Errorf("counters %v: want one query from the VM and one answer to it", got)
	}
	for _, want := range []string{
		`msg="dns query" vnic=` + a.TapName + ` dir=from-vm id=48879 name=vm-a.example type=AAAA`,
		`msg="dns answer" vnic=` + a.TapName + ` dir=to-vm id=48879 name=vm-a.example type=AAAA rcode="No Error"`,
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}

	before, err := v.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Ping(t, b.IPv4.IP, 3); err != nil {
		t.Fatal(err)
	}
	after, err := v.Stats()
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		if after[dir][0][sdk.StatPunt] != before[dir][0][sdk.StatPunt] {
			t.Errorf("%v: ping was punted (%d → %d)", dir, before[dir][0][sdk.StatPunt].Packets, after[dir][0][sdk.StatPunt].Packets)
		}
		if after[dir][0][sdk.StatContinue].Packets <= before[dir][0][sdk.StatContinue].Packets {
			t.Errorf("%v: ping did not cross slot 0", dir)
		}
	}
	if p := after[sdk.FromVM][0][sdk.StatPunt].Packets; p != 1 {
		t.Errorf("from-vm: %d frames punted, want the one query", p)
	}
}
