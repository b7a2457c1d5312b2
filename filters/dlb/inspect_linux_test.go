package dlb

import (
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestInspect: the state names every service and backend with its
// configuration, counts new and pinned flows and traffic as the frames
// run, survives a JSON round trip, and refuses query parameters.
func TestInspect(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0") // b1's health port
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	hport := l.Addr().(*net.TCPAddr).Port
	cfg := []byte(`{"services": [
	  {"name": "web", "vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251, "affinity": "client",
	   "backends": [{"addr": "127.0.0.1", "port": 8080, "weight": 3, "mac": "02:00:00:00:01:01"}, {"addr": "127.0.0.2", "port": 8080, "weight": 0}],
	   "health": {"type": "tcp", "port": ` + strconv.Itoa(hport) + `, "interval": "100ms", "rise": 1, "fall": 1}},
	  {"name": "dns", "vip": "fd00::1", "port": 53, "protocol": "udp", "table_size": 251, "backends": [{"addr": "fd01::1"}]}]}`)
	fp, _ := testInstance(t, cfg, "64", "4096")
	waitFor(t, 5*time.Second, "127.0.0.1 up", func() bool { return fp.healthOf("127.0.0.1:8080") == Up })
	waitFor(t, 5*time.Second, "127.0.0.2 down", func() bool { return fp.healthOf("127.0.0.2:8080") == Down })
	rng := rand.New(rand.NewPCG(2, 2))
	client, vip := netip.MustParseAddr("10.9.0.1"), netip.MustParseAddr("10.0.0.1")
	var sent uint64
	for p := range 5 { // 5 flows to web (weight 0 backend takes none), one reply each
		f := frame(rng, client, vip, uint16(40000+p), 80, ProtoTCP)
		sent += uint64(len(f))
		if ret, _, _ := runFrame(t, fp.Program(), f, 0); ret != tcActOK {
			t.Fatalf("tc action %d", ret)
		}
		r := frame(rng, netip.MustParseAddr("127.0.0.1"), client, 8080, uint16(40000+p), ProtoTCP)
		if ret, _, _ := runFrame(t, fp.Program(), r, 1); ret != tcActOK {
			t.Fatalf("tc action %d", ret)
		}
	}
	l.Close()
	waitFor(t, 5*time.Second, "127.0.0.1 down", func() bool { return fp.healthOf("127.0.0.1:8080") == Down })
	out, err := fp.Inspect(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	st := out.(*State)
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var back State
	if err := json.Unmarshal(data, &back); err != nil || !reflect.DeepEqual(&back, st) {
		t.Fatalf("JSON round trip: %v\n%s\n%+v", err, data, back)
	}
	if len(st.Services) != 2 {
		t.Fatalf("%s", data)
	}
	web, dns := st.Services[0], st.Services[1]
	if web.Name != "web" || web.VIP != vip || web.Port != 80 || web.Protocol != "tcp" || web.Affinity != "client" || web.TableSize != 251 ||
		web.Health == nil || web.Health.Type != "tcp" || web.Health.Interval != "100ms" || web.Health.Port != uint16(hport) {
		t.Errorf("service web: %+v", web)
	}
	if web.FromVM.Packets != 5 || web.FromVM.Bytes != sent || web.ToVM.Packets != 5 {
		t.Errorf("web traffic from-vm %+v (want 5 packets, %d bytes), to-vm %+v", web.FromVM, sent, web.ToVM)
	}
	b1, b2 := web.Backends[0], web.Backends[1]
	if b1.Addr.String() != "127.0.0.1" || b1.Port != 8080 || b1.Weight != 3 || b1.MAC != "02:00:00:00:01:01" || b1.NewFlows != 5 || b1.PinnedFlows != 5 ||
		b1.Health != "down" || b1.Since.IsZero() || b1.LastError == "" {
		t.Errorf("backend 1: %+v", b1)
	}
	if b2.Weight != 0 || b2.NewFlows != 0 || b2.PinnedFlows != 0 || b2.Health != "down" {
		t.Errorf("backend 2: %+v", b2)
	}
	if dns.Protocol != "udp" || dns.Affinity != "none" || dns.Health != nil || dns.Backends[0].Health != "unchecked" || !dns.Backends[0].Since.IsZero() {
		t.Errorf("service dns: %+v", dns)
	}
	if _, err := fp.Inspect(context.Background(), map[string]string{"limit": "5"}); !errors.Is(err, sdk.ErrInvalidParam) {
		t.Errorf("query parameter accepted: %v", err)
	}
	t.Logf("%s", data)
}
