package dlb

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// backendServer is a backend VM's data listener (8080: its name, then an
// echo) and HTTP health endpoint (8081, GET /healthz), which the test can
// stop and start again.
type backendServer struct {
	vm   *testkit.VM
	data net.Listener
	hsrv *http.Server
}

func (s *backendServer) start(t *testing.T) {
	t.Helper()
	var err error
	if s.data, err = s.vm.ListenTCP(net.JoinHostPort(s.vm.IPv4.IP.String(), "8080")); err != nil {
		t.Fatal(err)
	}
	go accept(s.data, s.vm.Label)
	hl, err := s.vm.ListenTCP(net.JoinHostPort(s.vm.IPv4.IP.String(), "8081"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	s.hsrv = &http.Server{Handler: mux}
	go s.hsrv.Serve(hl)
}

// stop closes both listeners; connections already accepted on 8080 stay.
func (s *backendServer) stop() {
	s.data.Close()
	s.hsrv.Close()
}

// healthOf returns the state of backend addr (ip:port) of the instance's
// first service.
func (f *fastPath) healthOf(addr string) Health {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.cfg.Services[0]
	for _, b := range s.Backends {
		if b.Key() == addr && s.Health != nil {
			if c := f.checks[checkKeyOf(b, s.Health)]; c != nil {
				h, _, _ := c.status()
				return h
			}
		}
	}
	return Unchecked
}

// inTable reports whether backend addr (ip:port) has slots in the live
// Maglev tables.
func (f *fastPath) inTable(addr string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	want := -1
	i := 0
	for _, s := range f.cfg.Services {
		for _, b := range s.Backends {
			if b.Key() == addr {
				want = i
			}
			i++
		}
	}
	if want < 0 {
		return false
	}
	idx := f.live.BackendBase + uint32(want)
	for _, bi := range f.live.Maglev {
		if bi == idx {
			return true
		}
	}
	return false
}

// TestHealthE2E: three backends behind a VIP, an HTTP health check run
// from the client VM's namespace. Killing b1's servers takes b1 out of
// the table within interval × fall (+ one interval); 30 streams kept
// open across the change (to every backend) never break; b1 returns
// after rise successful checks once its servers are back.
func TestHealthE2E(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	host := testkit.NewHost(t)
	client := host.AddVM(t, "client")
	var servers []*backendServer
	var bs []map[string]any
	for _, name := range []string{"b1", "b2", "b3"} {
		s := &backendServer{vm: host.AddVM(t, name)}
		s.start(t)
		t.Cleanup(s.stop)
		servers = append(servers, s)
		bs = append(bs, map[string]any{"addr": s.vm.IPv4.IP.String(), "port": 8080, "mac": s.vm.MAC.String()})
	}
	const interval, rise, fall = 500 * time.Millisecond, 2, 3
	data, _ := json.Marshal(map[string]any{"services": []map[string]any{{
		"name": "web", "vip": e2eVIP, "port": 80, "protocol": "tcp", "table_size": 65537, "backends": bs,
		"health": map[string]any{"type": "http", "port": 8081, "path": "/healthz", "interval": interval.String(), "timeout": "250ms",
			"rise": rise, "fall": fall, "netns": client.Path},
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := client.Command(ctx, "ip", "neigh", "replace", e2eVIP, "lladdr", e2eVIPMAC, "dev", "eth0", "nud", "permanent").CombinedOutput(); err != nil {
		t.Fatalf("static neighbour for the VIP: %v: %s", err, out)
	}
	path := filepath.Join(t.TempDir(), "services.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"services": path})
	if err != nil {
		t.Fatal(err)
	}
	fp := client.AttachFilter(t, Descriptor, params.Map()).FastPath.(*fastPath)
	b1 := net.JoinHostPort(servers[0].vm.IPv4.IP.String(), "8080")
	for _, s := range servers {
		addr := net.JoinHostPort(s.vm.IPv4.IP.String(), "8080")
		waitFor(t, 10*time.Second, s.vm.Label+" up", func() bool { return fp.healthOf(addr) == Up })
	}

	dial := func() (net.Conn, *bufio.Reader, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := client.DialTCP(ctx, net.JoinHostPort(e2eVIP, "80"))
		if err != nil {
			return nil, nil, "", err
		}
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		r := bufio.NewReader(c)
		name, err := r.ReadString('\n')
		if err != nil {
			c.Close()
			return nil, nil, "", fmt.Errorf("read backend name: %w", err)
		}
		return c, r, strings.TrimSpace(name), nil
	}
	newConns := func(n int) map[string]int {
		t.Helper()
		got := map[string]int{}
		for range n {
			c, _, name, err := dial()
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
			got[name]++
		}
		return got
	}

	// Streams: each keeps exchanging lines until stop.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex
	perBackend := map[string]int{}
	exchanges := map[string]int{}
	streamErr := map[string][]error{}
	for i := range 30 {
		c, r, name, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		perBackend[name]++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				c.SetDeadline(time.Now().Add(3 * time.Second))
				msg := fmt.Sprintf("stream %d line %d\n", i, n)
				_, err := io.WriteString(c, msg)
				var got string
				if err == nil {
					got, err = r.ReadString('\n')
				}
				if err == nil && got != msg {
					err = fmt.Errorf("echo %q, want %q", got, msg)
				}
				mu.Lock()
				if err != nil {
					streamErr[name] = append(streamErr[name], fmt.Errorf("stream %d: %w", i, err))
				} else {
					exchanges[name]++
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	t.Logf("30 streams open, per backend %v", perBackend)
	if perBackend["b1"] == 0 || perBackend["b2"] == 0 || perBackend["b3"] == 0 {
		t.Fatalf("streams do not cover every backend: %v", perBackend)
	}

	killed := time.Now()
	servers[0].stop()
	for fp.inTable(b1) {
		if time.Since(killed) > 10*interval {
			t.Fatalf("b1 still %v %v after its servers stopped", fp.healthOf(b1), time.Since(killed))
		}
		time.Sleep(5 * time.Millisecond)
	}
	tookDown := time.Since(killed)
	limit := interval*fall + interval
	if h := fp.healthOf(b1); h != Down {
		t.Errorf("b1 left the table while %v", h)
	}
	t.Logf("b1 down and out of the table %v after its servers stopped (interval %v × fall %d = %v, limit %v)", tookDown.Round(time.Millisecond), interval, fall, interval*fall, limit)
	if tookDown > limit {
		t.Errorf("b1 left the table after %v, want within %v", tookDown, limit)
	}
	if st, err := fp.Inspect(context.Background(), nil); err != nil {
		t.Fatal(err)
	} else if b := st.(*State).Services[0].Backends[0]; b.Health != "down" || b.Since.Before(killed) || b.LastError == "" || b.PinnedFlows < uint64(perBackend["b1"]) {
		t.Errorf("inspect while b1 is down: %+v", b)
	} else {
		t.Logf("inspect: b1 %s since %v (%v after the kill), pinned flows %d, last error %q", b.Health, b.Since.Format(time.RFC3339Nano), b.Since.Sub(killed).Round(time.Millisecond), b.PinnedFlows, b.LastError)
	}
	if after := newConns(300); after["b1"] != 0 {
		t.Errorf("new connections reached b1 while down: %v", after)
	} else {
		t.Logf("300 new connections with b1 down: %v", after)
	}

	restarted := time.Now()
	servers[0].start(t)
	for !fp.inTable(b1) {
		if time.Since(restarted) > 10*interval {
			t.Fatalf("b1 still %v %v after its servers came back", fp.healthOf(b1), time.Since(restarted))
		}
		time.Sleep(5 * time.Millisecond)
	}
	tookUp := time.Since(restarted)
	t.Logf("b1 up and back in the table %v after its servers came back (interval %v × rise %d = %v)", tookUp.Round(time.Millisecond), interval, rise, interval*rise)
	if tookUp > interval*rise+interval {
		t.Errorf("b1 came back after %v, want within %v", tookUp, interval*rise+interval)
	}
	back := newConns(300)
	if back["b1"] == 0 {
		t.Errorf("no new connection reached b1 once up: %v", back)
	}
	t.Logf("300 new connections with b1 up again: %v", back)

	close(stop)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	for name, errs := range streamErr {
		t.Errorf("streams to %s broke: %v", name, errors.Join(errs...))
	}
	t.Logf("lines exchanged per backend over %v: %v", time.Since(killed).Round(time.Millisecond), exchanges)
	for _, name := range []string{"b1", "b2", "b3"} {
		if exchanges[name] == 0 {
			t.Errorf("no line exchanged on the streams to %s", name)
		}
	}
}
