package dlb

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// BenchmarkFastPath: the program's cost per frame (BPF_PROG_TEST_RUN,
// from the VM), 64-byte UDP: a pinned flow (the service's backend is the
// VIP itself, so the rewritten frame stays on the pinned flow run after
// run) and a frame to no VIP (parse, one connection-table miss, one
// service miss).
func BenchmarkFastPath(b *testing.B) {
	fp, _ := testInstance(b, []byte(`{"services": [{"name": "dns", "vip": "10.0.0.1", "port": 53, "protocol": "udp",
		"table_size": 251, "backends": [{"addr": "10.0.0.1", "port": 53, "weight": 1}]}]}`), "1024", "4096")
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct {
		name string
		dst  netip.Addr
	}{{"pinned", netip.MustParseAddr("10.0.0.1")}, {"no-vip", netip.MustParseAddr("10.0.0.9")}} {
		f := frame(rng, netip.MustParseAddr("10.1.0.5"), c.dst, 40000, 53, ProtoUDP)
		b.Run(c.name, func(b *testing.B) {
			if ret, _, _ := runFrame(b, fp.Program(), f, 0); ret != tcActOK {
				b.Fatalf("first frame: tc action %d", ret)
			}
			_, per, err := fp.Program().Benchmark(f, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/frame")
		})
	}
}
