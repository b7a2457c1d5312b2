package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/filters/encrypt"
	"github.com/vnicfilter/vnicfilter/filters/encrypt/cryptlab"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// The crypt suite (issue 10): VMs on two simulated hosts, built by
// filters/encrypt/cryptlab as BenchmarkCrossHost builds them. The protected
// pair (pa on host-1, pb on host-2, the encrypt filter on both vNICs, its
// tunnels in this process) and the clear pair (ua, ub: no filter, routed
// over the same underlay) are measured alternately in the same run; the
// clear pair is the case's baseline, so the ratio is "encrypted / the same
// cross-host path unencrypted". Client and server are pinned to one CPU
// each as in every case (iperf3 --affinity, doPinned); wireguard-go's
// goroutines run in vfbench, unpinned: the CPU they used during the TCP
// measurement (iperf3 runs in its own processes) is reported.

// runOwnCases measures the cases that build their own topology. A case
// that cannot be set up reports its figures as errors.
func runOwnCases(ctx context.Context, o Options, cs []benchCase) []Result {
	var out []Result
	for _, bc := range cs {
		rs, err := runCrypt(ctx, o, bc)
		if err != nil && ctx.Err() == nil {
			logf(o.Log, "ERROR: %s: %v", bc.name, err)
			for _, m := range reported(caseMetrics(bc, o.Metrics)) {
				out = append(out, Result{Case: bc.name, Metric: m, Unit: units[m], Error: err.Error()})
			}
			continue
		}
		out = append(out, rs...)
	}
	return out
}

// writeOwn prints a run of own-topology cases only.
func writeOwn(o Options, rs []Result) error {
	title := fmt.Sprintf("vfbench %s: %d rep(s) x %v per measurement\n"+
		"values are medians; each case is compared with its own baseline measured alternately with it",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), o.Reps, o.Duration)
	return printResults(o, title, rs, nil)
}

// labFailed is how labTB stops a lab build that failed.
type labFailed struct{ msg string }

// labTB lets vfbench build a cryptlab topology: the testing.TB methods the
// lab uses, with Fatal/Skip turned into an error (recovered by build) and
// cleanups run by close. Methods it does not define panic (nil embedded
// interface), which build also reports.
type labTB struct {
	testing.TB
	ctx      context.Context
	dir      string
	cleanups []func()
	errs     []string
}

func (l *labTB) Helper()                      {}
func (l *labTB) Name() string                 { return "vfbench-crypt" }
func (l *labTB) Context() context.Context     { return l.ctx }
func (l *labTB) Cleanup(f func())             { l.cleanups = append(l.cleanups, f) }
func (l *labTB) Fatal(args ...any)            { panic(labFailed{fmt.Sprint(args...)}) }
func (l *labTB) Fatalf(f string, args ...any) { panic(labFailed{fmt.Sprintf(f, args...)}) }
func (l *labTB) FailNow()                     { panic(labFailed{"failed"}) }
func (l *labTB) Skip(args ...any)             { panic(labFailed{fmt.Sprint(args...)}) }
func (l *labTB) Skipf(f string, args ...any)  { panic(labFailed{fmt.Sprintf(f, args...)}) }
func (l *labTB) Error(args ...any)            { l.errs = append(l.errs, fmt.Sprint(args...)) }
func (l *labTB) Errorf(f string, args ...any) { l.errs = append(l.errs, fmt.Sprintf(f, args...)) }
func (l *labTB) Failed() bool                 { return len(l.errs) > 0 }
func (l *labTB) Log(args ...any)              {}
func (l *labTB) Logf(string, ...any)          {}
func (l *labTB) TempDir() string {
	if l.dir == "" {
		d, err := os.MkdirTemp("", "vfbench-crypt-")
		if err != nil {
			l.Fatal(err)
		}
		l.dir = d
		l.Cleanup(func() { os.RemoveAll(d) })
	}
	d, err := os.MkdirTemp(l.dir, "t")
	if err != nil {
		l.Fatal(err)
	}
	return d
}

// build runs fn, turning a lab failure into an error.
func (l *labTB) build(fn func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if f, ok := r.(labFailed); ok {
				err = errors.New(f.msg)
				return
			}
			err = fmt.Errorf("lab: %v", r)
		}
	}()
	fn()
	return nil
}

// close runs the cleanups, last first.
func (l *labTB) close() error {
	for i := len(l.cleanups) - 1; i >= 0; i-- {
		_ = l.build(l.cleanups[i])
	}
	if len(l.errs) > 0 {
		return errors.New(strings.Join(l.errs, "; "))
	}
	return nil
}

// vmNS opens a testkit VM's namespace as the traffic code's namedNS.
func vmNS(v *testkit.VM) (*namedNS, error) {
	h, err := netns.GetFromPath(v.Path)
	if err != nil {
		return nil, fmt.Errorf("open netns of %s: %w", v.Label, err)
	}
	return &namedNS{name: v.Name, path: v.Path, handle: h}, nil
}

// cpuSeconds is this process's user+system CPU time.
func cpuSeconds() float64 {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// runCrypt measures the crypt case.
func runCrypt(ctx context.Context, o Options, bc benchCase) (rs []Result, err error) {
	lab := &labTB{ctx: ctx}
	defer func() { err = errors.Join(err, wrapErr("remove the crypt lab", lab.close())) }()
	var pair, clear *topology
	err = lab.build(func() {
		m := cryptlab.New(lab, 2, cryptlab.Filter{Descriptor: encrypt.Descriptor, HostKey: encrypt.HostPublicKey})
		h1, h2 := m.Hosts[0], m.Hosts[1]
		for _, h := range m.Hosts {
			m.WritePolicy(h, map[string]any{"space": []string{"10.99.0.0/16"}})
		}
		pa, ua := m.AddVM(h1, "protected-a"), m.AddVM(h1, "clear-a")
		pb, ub := m.AddVM(h2, "protected-b"), m.AddVM(h2, "clear-b")
		fa := m.Protect(h1, pa, map[string]string{"keepalive": "5s", "peer_timeout": "15s"})
		fb := m.Protect(h2, pb, map[string]string{"keepalive": "5s", "peer_timeout": "15s"})
		cryptlab.WaitUp(lab, fa, h2.Name())
		cryptlab.WaitUp(lab, fb, h1.Name())
		topo := func(a, b *testkit.VM) *topology {
			na, err := vmNS(a)
			if err != nil {
				lab.Fatal(err)
			}
			lab.Cleanup(func() { na.handle.Close() })
			nb, err := vmNS(b)
			if err != nil {
				lab.Fatal(err)
			}
			lab.Cleanup(func() { nb.handle.Close() })
			return &topology{a: &vm{ns: na, ip4: &a.IPv4}, b: &vm{ns: nb, ip4: &b.IPv4}}
		}
		pair, clear = topo(pa, pb), topo(ua, ub)
		logf(o.Log, "crypt: protected %s -> %s, clear %s -> %s; lab: %s %s %s %s %s %s %s %s",
			pa.IPv4.IP, pb.IPv4.IP, ua.IPv4.IP, ub.IPv4.IP, m.Underlay.Path, h1.H.Path, h2.H.Path, pa.Path, pb.Path, ua.Path, ub.Path, lab.dir)
	})
	if err != nil {
		return nil, fmt.Errorf("build two hosts: %w", err)
	}
	metrics := caseMetrics(bc, o.Metrics)
	base := map[string][]float64{}
	val := map[string][]float64{}
	sent := map[string][]float64{}
	cpu := map[string][]float64{} // vfbench's CPUs on the protected run minus on the clear one
	fails := map[string]string{}
	for rep := range o.Reps {
		for _, m := range metrics {
			clearCPU := 0.0
			for _, side := range []struct {
				name string
				t    *topology
				into map[string][]float64
			}{{"crypt-clear", clear, base}, {bc.name, pair, val}} {
				c0, t0 := cpuSeconds(), time.Now()
				var v, s float64
				var err error
				switch m {
				case MetricTCP1, MetricTCP2:
					streams := 1
					if m == MetricTCP2 {
						streams = 2
					}
					var g iperfResult
					g, err = iperfTCP(ctx, side.t, side.t.b.ip4.IP, o.Duration, streams)
					v = g.gbps
				case MetricUDP64:
					var r udpResult
					r, err = udpBlast(ctx, side.t, side.t.b.ip4.IP, o.Duration)
					v, s = r.received, r.sent
				default:
					continue
				}
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if err != nil {
					fails[m] = fmt.Sprintf("%s: %v", side.name, err)
					logf(o.Log, "rep %d/%d %-11s %-10s FAILED: %v", rep+1, o.Reps, side.name, m, err)
					continue
				}
				used := (cpuSeconds() - c0) / time.Since(t0).Seconds()
				side.into[m] = append(side.into[m], v)
				if side.name != bc.name {
					clearCPU = used
				} else {
					cpu[m] = append(cpu[m], used-clearCPU)
					if m == MetricUDP64 {
						sent[m] = append(sent[m], s)
					}
				}
				logf(o.Log, "rep %d/%d %-11s %-10s %s (vfbench: %.2f CPUs)", rep+1, o.Reps, side.name, m, formatValue(v, units[m]), used)
			}
		}
	}
	for _, m := range metrics {
		r := Result{Case: bc.name, Metric: m, Unit: units[m]}
		if e, ok := fails[m]; ok && (len(val[m]) == 0 || len(base[m]) == 0) {
			r.Error = e
			rs = append(rs, r)
			continue
		}
		r.Value, r.Baseline, r.HasBaseline = median(val[m]), median(base[m]), true
		r.Ratio = ratio(r.Value, r.Baseline)
		r.Samples = val[m]
		if m == MetricUDP64 {
			r.SentPPS = median(sent[m])
		}
		r.Note = "baseline = the same two hosts in clear"
		if m != MetricUDP64 {
			// The UDP blaster and receiver run in vfbench too, flat out
			// on both paths: there the difference says nothing.
			r.Note += fmt.Sprintf("; wireguard-go (both hosts' tunnels, in vfbench, unpinned) used %.2f CPUs", median(cpu[m]))
		}
		rs = append(rs, r)
	}
	return rs, nil
}
