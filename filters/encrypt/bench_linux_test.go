package encrypt_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// BenchmarkCrossHost measures cross-host throughput between two simulated
// hosts, protected (through wireguard-go) and unprotected (routed in
// clear), in the same run: TCP Gb/s and 64-byte UDP packets per second at
// the receiver. The setup is cryptlab's, as vfbench's crypt suite
// (`make bench ARGS="--suite crypt"`, which pins the endpoints and reports
// ratios). Run it alone on a quiet machine:
//
//	go test -run '^$' -bench CrossHost -benchtime 1x ./filters/encrypt/
func BenchmarkCrossHost(b *testing.B) {
	testkit.Need(b, testkit.Root, testkit.BPF, testkit.Iperf3)
	m := cryptlab.New(b, 2, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
	h1, h2 := m.Hosts[0], m.Hosts[1]
	for _, h := range m.Hosts {
		m.WritePolicy(h, map[string]any{"space": []string{"10.99.0.0/16"}})
	}
	pa, ua := m.AddVM(h1, "protected-a"), m.AddVM(h1, "clear-a")
	pb, ub := m.AddVM(h2, "protected-b"), m.AddVM(h2, "clear-b")
	fa := m.Protect(h1, pa, nil)
	fb := m.Protect(h2, pb, nil)
	cryptlab.WaitUp(b, fa, h2.Name())
	cryptlab.WaitUp(b, fb, h1.Name())
	pb.Iperf3Server(b, 5201)
	ub.Iperf3Server(b, 5201)

	const secs = 5
	run := func(from, to *testkit.VM, args ...string) map[string]any {
		b.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*secs*time.Second)
		defer cancel()
		out, err := from.Command(ctx, "iperf3", append([]string{"-c", to.IPv4.IP.String(), "-p", "5201", "-t", strconv.Itoa(secs), "-J"}, args...)...).Output()
		if err != nil {
			b.Fatalf("iperf3 %s -> %s: %v\n%s", from.Label, to.Label, err, out)
		}
		var res map[string]any
		if err := json.Unmarshal(out, &res); err != nil {
			b.Fatal(err)
		}
		return res
	}
	num := func(m map[string]any, path ...string) float64 {
		var v any = m
		for _, p := range path {
			mm, _ := v.(map[string]any)
			v = mm[p]
		}
		f, _ := v.(float64)
		return f
	}
	for _, c := range []struct {
		name     string
		from, to *testkit.VM
	}{{"clear", ua, ub}, {"protected", pa, pb}} {
		b.Run(c.name+"/tcp", func(b *testing.B) {
			res := run(c.from, c.to)
			gbps := num(res, "end", "sum_received", "bits_per_second") / 1e9
			b.ReportMetric(gbps, "Gb/s")
			b.Logf("%s TCP: %.2f Gb/s", c.name, gbps)
		})
		b.Run(c.name+"/udp64", func(b *testing.B) {
			res := run(c.from, c.to, "-u", "-l", "64", "-b", "0")
			s := num(res, "end", "sum", "seconds")
			if s == 0 {
				b.Fatal("iperf3 reported no duration")
			}
			got := num(res, "end", "sum", "packets") - num(res, "end", "sum", "lost_packets")
			b.ReportMetric(got/s, "pps")
			b.Logf("%s UDP 64 B: %.0f packets/s received (%.0f sent)", c.name, got/s, num(res, "end", "sum", "packets")/s)
		})
	}
}
