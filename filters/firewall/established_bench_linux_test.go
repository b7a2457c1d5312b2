package firewall

import (
	"net/netip"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// BenchmarkEstablished is the per-frame cost of an established UDP flow
// (one conntrack lookup) in the kernel (BPF_PROG_TEST_RUN, 64-byte
// payload) under a 1-rule and a 100,000-rule policy: vfbench's udp64_pps
// case in the kernel alone, without the rest of the path. It reports ns
// per frame as the kernel timed them.
func BenchmarkEstablished(b *testing.B) {
	for _, n := range []int{1, 100000} {
		b.Run(map[int]string{1: "rules-1", 100000: "rules-100k"}[n], func(b *testing.B) {
			testkit.Need(b, testkit.Root, testkit.BPF)
			fp := newScratch(b, allowAll, 65536)
			if n > 1 {
				if _, err := fp.UpdatePolicy(scalePolicy(n)); err != nil {
					b.Fatal(err)
				}
			}
			f := flow{vm: netip.MustParseAddr("10.77.0.1"), remote: netip.MustParseAddr("10.77.0.2"), proto: ProtoUDP, vmPort: 40000, remotePort: 9000}
			s := f.spec(sdk.FromVM)
			s.payload = 64
			frame := s.build()
			if pass, _ := run(b, fp.Program(), frame, sdk.FromVM); !pass {
				b.Fatal("the flow's first frame does not pass")
			}
			// Program.Benchmark passes no context: cb[0] is 0, the
			// from-vm direction of slot 0, as wanted.
			var total time.Duration
			var frames int
			for b.Loop() {
				_, per, err := fp.Program().Benchmark(frame, 10000, nil)
				if err != nil {
					b.Fatal(err)
				}
				total += per * 10000
				frames += 10000
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(frames), "ns/frame")
		})
	}
}
