package mirror

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// The spec is parsed once; each instance copies it.
var mirrorSpec = sync.OnceValues(loadMirror)

// Fast-path counters (mirror_stats keys, MS_* in mirror.c).
var bpfCounters = []struct{ name, help string }{
	{"mirrored_packets_total", "Frames copied to the mirror ring buffer."},
	{"sampled_out_packets_total", "Frames skipped by 1-in-N sampling."},
	{"rate_limited_packets_total", "Frames not mirrored because of the rate limit."},
	{"ring_full_packets_total", "Frames not mirrored because the ring buffer was full."},
	{"unmatched_packets_total", "Frames not matching the mirror's match."},
	{"span_failed_packets_total", "Frames the kernel refused to clone to the monitor vNIC (vnic:// sink)."},
}

type fastPath struct {
	objs mirrorObjects
	cfg  Config
	log  *slog.Logger
	rd   *ringbuf.Reader
	sink sink
	done chan struct{}
	// monoToUnix converts CLOCK_MONOTONIC ns to wall-clock ns.
	monoToUnix int64

	records, sinkErrors, seqGaps atomic.Uint64
	closeOnce                    sync.Once
	closeErr                     error
}

var _ sdk.FastPath = (*fastPath)(nil)

// sink receives mirrored records from the reader goroutine.
type sink interface {
	write(r *Record, unixNS int64) error
	flush() error
	close() error
}

func loadFastPath(ctx *sdk.FastPathContext) (sdk.FastPath, error) {
	cfg, err := ParseConfig(ctx.Instance.Params)
	if err != nil {
		return nil, err
	}
	base, err := mirrorSpec()
	if err != nil {
		return nil, err
	}
	spec := base.Copy()
	var cost uint64
	if cfg.Rate > 0 {
		cost = uint64(time.Second) / uint64(cfg.Rate)
	}
	vars := cfg.Match.rodata()
	vars["mirror_snaplen"], vars["mirror_sample"], vars["mirror_cost_ns"] = cfg.Snaplen, cfg.Sample, cost
	vars["mirror_span"] = uint32(0)
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("mirror: set %s: %w", name, err)
		}
	}
	fp := &fastPath{cfg: cfg, log: ctx.Logger, done: make(chan struct{})}
	if fp.log == nil {
		fp.log = slog.New(slog.DiscardHandler)
	}
	vnic := ctx.Instance.VNIC
	switch cfg.Kind {
	case SinkVNIC:
		var idx uint32
		if idx, err = monitorIfindex(cfg.Monitor, vnic); err == nil {
			err = spec.Variables["mirror_span"].Set(idx)
			fp.sink = nopSink{}
		}
	case SinkPcapng:
		fp.sink, err = newPcapngSink(cfg.Path, vnic.Name, vnic.Ifindex, cfg.Snaplen)
	default:
		fp.sink, err = newERSPANSink(cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	if err := ctx.Load(spec, &fp.objs); err != nil {
		fp.sink.close()
		return nil, fmt.Errorf("mirror: %w", err)
	}
	fp.rd, err = ringbuf.NewReader(fp.objs.MirrorEvents)
	if err != nil {
		fp.sink.close()
		fp.objs.Close()
		return nil, fmt.Errorf("mirror: ring buffer reader: %w", err)
	}
	var mono unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	fp.monoToUnix = time.Now().UnixNano() - mono.Nano()
	go fp.run()
	return fp, nil
}

// run delivers ring buffer records to the sink until the reader closes.
func (f *fastPath) run() {
	defer close(f.done)
	var rec ringbuf.Record
	var r Record
	var next uint32
	first := true
	for {
		if err := f.rd.ReadInto(&rec); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			f.log.Warn("mirror: read ring buffer", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if err := parseRecord(rec.RawSample, &r); err != nil {
			f.sinkErrors.Add(1)
			continue
		}
		f.records.Add(1)
		if !first && r.Seq != next {
			f.seqGaps.Add(uint64(r.Seq - next))
		}
		first, next = false, r.Seq+1
		if err := f.sink.write(&r, int64(r.MonoNS)+f.monoToUnix); err != nil {
			if f.sinkErrors.Add(1) == 1 {
				f.log.Warn("mirror: sink", "err", err)
			}
		}
		if rec.Remaining == 0 {
			if err := f.sink.flush(); err != nil {
				f.sinkErrors.Add(1)
			}
		}
	}
}

func (f *fastPath) Program() *ebpf.Program { return f.objs.VfMirror }

// Counters reports the fast path's counters and the Go side's.
func (f *fastPath) Counters() ([]sdk.Counter, error) {
	var out []sdk.Counter
	for i, c := range bpfCounters {
		p, _, err := sdk.SumPerCPU(f.objs.MirrorStats, uint32(i))
		if err != nil {
			return nil, fmt.Errorf("read mirror_stats: %w", err)
		}
		out = append(out, sdk.Counter{Name: c.name, Help: c.help, Value: float64(p)})
	}
	out = append(out,
		sdk.Counter{Name: "delivered_records_total", Help: "Records read from the ring buffer and handed to the sink.", Value: float64(f.records.Load())},
		sdk.Counter{Name: "sink_errors_total", Help: "Records the sink failed to write or send.", Value: float64(f.sinkErrors.Load())},
		sdk.Counter{Name: "sequence_gaps_total", Help: "Sequence numbers missing between delivered records.", Value: float64(f.seqGaps.Load())})
	return out, nil
}

// Close stops the reader, flushes and closes the sink, then the objects.
// Later calls return the first call's result.
func (f *fastPath) Close() error {
	f.closeOnce.Do(func() {
		err := f.rd.Close()
		<-f.done
		if serr := f.sink.close(); err == nil {
			err = serr
		}
		if oerr := f.objs.Close(); err == nil {
			err = oerr
		}
		f.closeErr = err
	})
	return f.closeErr
}

type pcapngSink struct {
	w       *pcapngWriter
	iface   uint32
	release func() error
}

func newPcapngSink(path, vnic string, ifindex int, snaplen uint32) (*pcapngSink, error) {
	w, id, release, err := openPcapng(path, vnic, ifindex, snaplen)
	if err != nil {
		return nil, err
	}
	return &pcapngSink{w: w, iface: id, release: release}, nil
}

func (s *pcapngSink) write(r *Record, unixNS int64) error { return s.w.writePacket(s.iface, unixNS, r) }
func (s *pcapngSink) flush() error                        { return s.w.flush() }
func (s *pcapngSink) close() error                        { return s.release() }

// erspanSink sends GRE/ERSPAN packets through a raw IPPROTO_GRE socket
// connected to the collector; the kernel adds the IPv4 header and routes.
type erspanSink struct {
	fd      int
	v3      bool
	session uint16
	buf     []byte
}

func newERSPANSink(cfg Config) (*erspanSink, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_GRE)
	if err != nil {
		return nil, fmt.Errorf("raw GRE socket: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	// Never read: drop whatever GRE the host receives before it queues.
	drop := []unix.SockFilter{{Code: 0x06, K: 0}} // BPF_RET|BPF_K 0
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]}); err != nil {
		return nil, fmt.Errorf("raw GRE socket filter: %w", err)
	}
	// Large mirrored frames are fragmented rather than refused.
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DONT); err != nil {
		return nil, fmt.Errorf("raw GRE socket: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	sa := &unix.SockaddrInet4{Addr: cfg.Collector.As4()}
	if err := unix.Connect(fd, sa); err != nil {
		return nil, fmt.Errorf("%w: parameter \"sink\": collector %s unreachable: %v", sdk.ErrInvalidParam, cfg.Collector, err)
	}
	ok = true
	return &erspanSink{fd: fd, v3: cfg.Kind == SinkERSPAN3, session: cfg.Session}, nil
}

func (s *erspanSink) write(r *Record, unixNS int64) error {
	s.buf = appendERSPAN(s.buf[:0], s.v3, s.session, r, unixNS)
	_, err := unix.Write(s.fd, s.buf)
	if err != nil {
		// A pending ICMP error (e.g. from the collector) is reported once
		// on the next send: try again once.
		_, err = unix.Write(s.fd, s.buf)
	}
	return err
}

func (s *erspanSink) flush() error { return nil }
func (s *erspanSink) close() error { return unix.Close(s.fd) }

// monitorIfindex resolves the monitor vNIC of a vnic:// sink in filterd's
// network namespace.
func monitorIfindex(name string, self sdk.VNIC) (uint32, error) {
	if name == self.Name {
		return 0, fmt.Errorf("%w: parameter \"sink\": vnic://%s is the mirrored vNIC itself", sdk.ErrInvalidParam, name)
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return 0, fmt.Errorf("%w: parameter \"sink\": monitor vNIC %s: %v", sdk.ErrInvalidParam, name, err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return 0, fmt.Errorf("%w: parameter \"sink\": monitor vNIC %s is down", sdk.ErrInvalidParam, name)
	}
	return uint32(ifi.Index), nil
}

// nopSink: a SPAN mirror clones in the kernel; its ring stays empty.
type nopSink struct{}

func (nopSink) write(*Record, int64) error { return nil }
func (nopSink) flush() error               { return nil }
func (nopSink) close() error               { return nil }
