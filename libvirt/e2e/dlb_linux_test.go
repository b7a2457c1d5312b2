package e2e

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
)

// TestGuestReachesVIP: a QEMU guest whose domain XML puts the dlb filter
// on its NIC reaches a routed VIP served by three backends (addresses of
// the host on the guest's bridge); every backend gets connections and the
// guest only ever talks to the VIP.
func TestGuestReachesVIP(t *testing.T) {
	l := libvirtd(t)
	img := image(t)
	startFilterd(t)
	br := testlab.NewBridge(t)
	net4 := subnet()
	gw := hostOnBridge(t, br, net4)
	link, err := netlink.LinkByName(br)
	if err != nil {
		t.Fatal(err)
	}
	// Three backends: more host addresses on the bridge, each with an
	// HTTP server naming itself.
	var backends []string
	for i, last := range []string{"2", "3", "4"} {
		ip := net4 + last
		addr, _ := netlink.ParseAddr(ip + "/32")
		if err := netlink.AddrAdd(link, addr); err != nil {
			t.Fatalf("backend address %s: %v", ip, err)
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(ip, "8080"))
		if err != nil {
			t.Fatal(err)
		}
		name := "backend" + string(rune('1'+i))
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name+"\n") })}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		backends = append(backends, `{"addr": "`+ip+`", "port": 8080}`)
	}
	vip := "10.201." + strings.Split(net4, ".")[2] + ".10"
	services := filepath.Join(t.TempDir(), "lb.json")
	if err := os.WriteFile(services, []byte(`{"services": [{"name": "web", "vip": "`+vip+`", "port": 80, "protocol": "tcp", "backends": [`+strings.Join(backends, ", ")+`]}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	// busybox nc, not wget: the static busybox's wget crashes in this guest.
	cmd := "i=0; while [ $i -lt 30 ]; do echo VFHIT $(printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 " + vip + " 80 | tail -n 1); i=$((i+1)); done; echo VFDONE"
	g := l.DefineGuest(t, img, testlab.GuestSpec{
		Name:     "vfe-lb-" + randHex(2),
		NICs:     []testlab.NIC{{Bridge: br, MAC: mac(21)}},
		Metadata: metadata(map[string][]string{mac(21): {"dlb:services=" + services}}),
		Cmdline:  map[string]string{"ipv6.disable": "1", "vf.ip": net4 + "21/24", "vf.gw": gw, "vf.http": "off", "vf.cmd": cmd},
	})
	if _, err := l.Virsh("start", g.Name); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	if err := g.WaitConsole(ctx, "VFDONE"); err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, g.Console())
	}
	hits := map[string]int{}
	for _, line := range strings.Split(g.Console(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "VFHIT"); ok {
			hits[strings.TrimSpace(rest)]++
		}
	}
	t.Logf("30 connections from the guest to %s: %v", vip, hits)
	if hits[""] > 0 {
		t.Logf("console:\n%s", g.Console())
	}
	if hits["backend1"]+hits["backend2"]+hits["backend3"] != 30 || hits["backend1"] == 0 || hits["backend2"] == 0 || hits["backend3"] == 0 {
		t.Fatalf("connections to the VIP went %v; want all 30 answered, by all three backends", hits)
	}
}
