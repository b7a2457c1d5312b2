package dlb

import (
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
	"testing"
)

// TestAffinity: with "affinity": "client", every connection of a client
// address (40 source ports each, TCP and UDP services) lands on one
// backend in the kernel and in the model alike, while 200 clients still
// spread over all four backends; without it, one client's ports spread.
func TestAffinity(t *testing.T) {
	cfg := []byte(`{"services": [
	  {"name": "sticky", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "affinity": "client", "table_size": 4099,
	   "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.2"}, {"addr": "10.1.0.3"}, {"addr": "10.1.0.4"}]},
	  {"name": "sticky6", "vip": "fd00::1", "port": 53, "protocol": "udp", "affinity": "client", "table_size": 4099,
	   "backends": [{"addr": "fd01::1"}, {"addr": "fd01::2"}, {"addr": "fd01::3"}, {"addr": "fd01::4"}]},
	  {"name": "plain", "vip": "10.0.0.1", "port": 81, "protocol": "tcp", "table_size": 4099,
	   "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.2"}, {"addr": "10.1.0.3"}, {"addr": "10.1.0.4"}]}]}`)
	fp, _ := testInstance(t, cfg, "65536", "65536")
	c, err := ParseConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Services {
		c.Services[i].ID = fp.cfg.Services[i].ID
	}
	tab, err := Compile(c, fp.live.Gen, 65536)
	if err != nil {
		t.Fatal(err)
	}
	model := NewModel(2 * 65536)
	model.SetTables(tab)
	rng := rand.New(rand.NewPCG(3, 3))
	// backendOf runs a frame through both and returns the backend the
	// kernel chose (the rewritten destination).
	backendOf := func(f []byte) netip.Addr {
		t.Helper()
		ret, out, _ := runFrame(t, fp.Program(), f, 0)
		want := append([]byte(nil), f...)
		if v := model.Process(want, 0); ret != tcActOK || v != VerdictContinue {
			t.Fatalf("tc action %d, model verdict %d", ret, v)
		}
		if string(out) != string(want) {
			t.Fatalf("kernel and model differ:\n%x\n%x", out, want)
		}
		if binary.BigEndian.Uint16(out[12:]) == 0x86dd {
			return netip.AddrFrom16([16]byte(out[38:54]))
		}
		return netip.AddrFrom4([4]byte(out[30:34]))
	}
	for _, svc := range []struct {
		name  string
		vip   netip.Addr
		port  uint16
		proto uint8
	}{{"sticky", netip.MustParseAddr("10.0.0.1"), 80, ProtoTCP}, {"sticky6", netip.MustParseAddr("fd00::1"), 53, ProtoUDP}} {
		used := map[netip.Addr]int{}
		for i := range 200 {
			client := netip.AddrFrom4([4]byte{10, 9, byte(i / 250), byte(1 + i%250)})
			if svc.vip.Is6() {
				client = netip.AddrFrom16([16]byte{0: 0xfd, 1: 9, 14: byte(i / 250), 15: byte(1 + i%250)})
			}
			first := netip.Addr{}
			for p := range 40 {
				b := backendOf(frame(rng, client, svc.vip, uint16(20000+p*7), svc.port, svc.proto))
				if p == 0 {
					first = b
					used[b]++
				} else if b != first {
					t.Fatalf("%s: client %s port %d went to %s, its first connection to %s", svc.name, client, 20000+p*7, b, first)
				}
			}
		}
		if len(used) != 4 {
			t.Errorf("%s: 200 clients used backends %v, want all 4", svc.name, used)
		}
		t.Logf("%s: 200 clients × 40 ports, each client on one backend; clients per backend %v", svc.name, used)
	}
	spread := map[netip.Addr]int{}
	client := netip.MustParseAddr("10.9.9.9")
	for p := range 40 {
		spread[backendOf(frame(rng, client, netip.MustParseAddr("10.0.0.1"), uint16(30000+p), 81, ProtoTCP))]++
	}
	if len(spread) < 2 {
		t.Errorf("without affinity one client's 40 ports went to %v", spread)
	}
}
