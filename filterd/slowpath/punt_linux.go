package slowpath

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/slowproc"
)

// frameBuf fits the largest GSO frame a tap hands out (64 KiB plus the
// Ethernet header) behind the virtio_net_hdr.
const frameBuf = slowproc.VnetHdrLen + 64<<10 + 256

// Punt runs one filter instance's slow path: a punt tap and a reader per
// handled direction, a heartbeat and a watchdog.
type Punt struct {
	vnic sdk.VNIC
	slot int
	h    sdk.SlowPath
	hb   Heartbeater
	opts Options
	log  *slog.Logger

	pipes [sdk.NumDirections]*pipe // nil: direction not handled

	// External slow path (nil: in-process, h reads the taps). ext
	// owns the process; extUp is true while it has the instance open.
	ext   *Supervisor
	extID uint64
	extUp atomic.Bool
	// extCounters are the process's sdk.SlowCounters, from its last pong.
	extCounters atomic.Pointer[[]sdk.Counter]

	panicked atomic.Bool
	stopped  atomic.Bool
	hbMu     sync.Mutex // serialises Heartbeater calls with state checks
	kick     chan struct{}
	done     chan struct{}
	monitor  sync.WaitGroup
	readers  sync.WaitGroup
	stopOnce sync.Once
	stopErr  error
}

// pipe is one direction: its tap, re-injection program, reader state.
type pipe struct {
	dir     sdk.Direction
	name    string
	ifindex int
	file    *os.File
	reinj   *reinjector

	// seq counts Process entries and exits: odd while a call runs. The
	// watchdog compares samples, so the hot loop never reads the clock.
	seq     atomic.Uint64
	stalled atomic.Bool

	frames, passed, dropped, errors atomic.Uint64
}

// Start creates the punt taps of slot on vnic for dirs, starts feeding
// their frames to h, and renews the slot's lease through hb (a first time
// before it returns, so the slot punts at once). It must run on a thread in
// the vNIC's network namespace: the taps are created there. The Punt stops
// when ctx is done or Stop is called; h is not closed by the runner.
func Start(ctx context.Context, vnic sdk.VNIC, slot int, dirs sdk.Directions, h sdk.SlowPath, hb Heartbeater, opts Options) (*Punt, error) {
	if h == nil {
		return nil, fmt.Errorf("start slow path of %s slot %d: nil handler", vnic.Name, slot)
	}
	return start(ctx, vnic, slot, dirs, h, nil, nil, hb, opts)
}

// StartExternal is Start for a slow path that runs in an external filter
// process: the taps and re-injection programs are made here as for
// Start, then the taps are handed to the process through sup, which reads
// and re-injects the frames itself. The lease is renewed only while the
// process has the instance open and answers heartbeats. params are the
// instance's validated parameters, passed to the process.
func StartExternal(ctx context.Context, vnic sdk.VNIC, slot int, dirs sdk.Directions, sup *Supervisor, params map[string]string, hb Heartbeater, opts Options) (*Punt, error) {
	if sup == nil {
		return nil, fmt.Errorf("start slow path of %s slot %d: nil supervisor", vnic.Name, slot)
	}
	return start(ctx, vnic, slot, dirs, nil, sup, params, hb, opts)
}

func start(ctx context.Context, vnic sdk.VNIC, slot int, dirs sdk.Directions, h sdk.SlowPath, sup *Supervisor, params map[string]string, hb Heartbeater, opts Options) (_ *Punt, err error) {
	switch {
	case slot < 0 || slot >= sdk.MaxSlots:
		return nil, fmt.Errorf("start slow path of %s: slot %d out of range 0..%d", vnic.Name, slot, sdk.MaxSlots-1)
	case dirs&sdk.DirBoth == 0:
		return nil, fmt.Errorf("start slow path of %s slot %d: no direction", vnic.Name, slot)
	case hb == nil:
		return nil, fmt.Errorf("start slow path of %s slot %d: nil heartbeater", vnic.Name, slot)
	}
	opts = opts.withDefaults()
	l, err := netlink.LinkByIndex(vnic.Ifindex)
	if err != nil {
		return nil, fmt.Errorf("start slow path of %s slot %d: vNIC ifindex %d not in this network namespace: %w", vnic.Name, slot, vnic.Ifindex, err)
	}
	p := &Punt{
		vnic: vnic, slot: slot, h: h, hb: hb, opts: opts, ext: sup,
		log:  opts.Logger.With("vnic", vnic.Name, "slot", slot),
		kick: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			p.closePipes()
		}
	}()
	for _, dir := range (dirs & sdk.DirBoth).List() {
		pp := &pipe{dir: dir, name: TapName(vnic.Ifindex, slot, dir, opts.Generation)}
		p.pipes[dir] = pp
		if pp.file, pp.ifindex, err = openTap(pp.name, l.Attrs().MTU); err != nil {
			return nil, fmt.Errorf("start slow path of %s slot %d: %w", vnic.Name, slot, err)
		}
		if pp.reinj, err = attachReinject(pp.ifindex, pp.name, vnic.Ifindex, dir, slot+1); err != nil {
			return nil, fmt.Errorf("start slow path of %s slot %d: tap %s: %w", vnic.Name, slot, pp.name, err)
		}
	}
	if sup != nil {
		// Waits (bounded) for the process to open the instance, so the
		// slot punts as soon as it is placed; a process that is down
		// now gets the instance when it is back.
		sup.open(p, params)
	}
	if err := p.renew(); err != nil {
		if sup != nil {
			sup.close(p)
		}
		return nil, fmt.Errorf("start slow path of %s slot %d: %w", vnic.Name, slot, err)
	}
	if sup == nil {
		for _, pp := range p.pipes {
			if pp != nil {
				p.readers.Add(1)
				go p.read(pp)
			}
		}
	}
	p.monitor.Add(1)
	go p.watch()
	go func() {
		select {
		case <-ctx.Done():
			_ = p.Stop()
		case <-p.done:
		}
	}()
	return p, nil
}

// Ifindex is the punt tap of dir, 0 if the Punt does not handle dir.
func (p *Punt) Ifindex(dir sdk.Direction) int {
	if int(dir) >= len(p.pipes) || p.pipes[dir] == nil {
		return 0
	}
	return p.pipes[dir].ifindex
}

// State is the Punt's health.
func (p *Punt) State() State {
	switch {
	case p.stopped.Load():
		return Down
	case p.panicked.Load():
		return Panicked
	case p.ext != nil && !p.extUp.Load():
		return Disconnected
	}
	for _, pp := range p.pipes {
		if pp != nil && pp.stalled.Load() {
			return Stalled
		}
	}
	return Running
}

// Stats are the counters of dir (zero if dir is not handled).
func (p *Punt) Stats(dir sdk.Direction) Stats {
	if int(dir) >= len(p.pipes) || p.pipes[dir] == nil {
		return Stats{}
	}
	pp := p.pipes[dir]
	return Stats{Frames: pp.frames.Load(), Passed: pp.passed.Load(), Dropped: pp.dropped.Load(), Errors: pp.errors.Load()}
}

// Stop ends the lease at once (the slot's failure mode applies from now
// on), stops the goroutines and removes the taps with their re-injection
// programs. A reader stuck in a stalled Process call is not waited for
// beyond the watchdog; it exits when the call returns. Stop is idempotent.
func (p *Punt) Stop() error {
	p.stopOnce.Do(func() {
		p.stopped.Store(true)
		close(p.done)
		p.monitor.Wait()
		if p.ext != nil {
			p.ext.close(p)
		}
		var errs []error
		p.hbMu.Lock()
		for _, pp := range p.pipes {
			if pp != nil {
				if err := p.hb.Heartbeat(p.slot, pp.dir, 0, time.Time{}); err != nil {
					errs = append(errs, fmt.Errorf("end lease of %s slot %d %s: %w", p.vnic.Name, p.slot, pp.dir, err))
				}
			}
		}
		p.hbMu.Unlock()
		errs = append(errs, p.closePipes())
		waited := make(chan struct{})
		go func() { p.readers.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(p.opts.Watchdog):
			p.log.Warn("slow path still inside Process after stop; leaving its reader behind")
		}
		p.stopErr = errors.Join(errs...)
	})
	return p.stopErr
}

func (p *Punt) closePipes() error {
	var errs []error
	for _, pp := range p.pipes {
		if pp == nil {
			continue
		}
		if pp.reinj != nil {
			errs = append(errs, pp.reinj.Close())
		}
		if pp.file != nil {
			// Closing the last descriptor deletes the tap.
			if err := pp.file.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
				errs = append(errs, fmt.Errorf("close tap %s: %w", pp.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// renew extends the lease of every handled direction, if the handler is
// healthy. hbMu orders it with end, so a lease ended for a failure is
// never renewed by a heartbeat that raced with it.
func (p *Punt) renew() error {
	p.hbMu.Lock()
	defer p.hbMu.Unlock()
	return p.renewLocked()
}

func (p *Punt) renewLocked() error {
	if p.State() != Running {
		return nil
	}
	deadline := time.Now().Add(p.opts.Lease)
	var errs []error
	for _, pp := range p.pipes {
		if pp != nil {
			if err := p.hb.Heartbeat(p.slot, pp.dir, pp.ifindex, deadline); err != nil {
				errs = append(errs, fmt.Errorf("heartbeat %s slot %d %s: %w", p.vnic.Name, p.slot, pp.dir, err))
			}
		}
	}
	return errors.Join(errs...)
}

// unstall ends pp's stall and renews the lease in the same step, so the
// Punt never reads Running while its slot still applies the failure mode
// (waking the heartbeat goroutine left that window open under load).
func (p *Punt) unstall(pp *pipe) {
	p.hbMu.Lock()
	defer p.hbMu.Unlock()
	if !pp.stalled.Swap(false) {
		return
	}
	p.log.Info("slow path recovered from stall", "dir", pp.dir)
	if err := p.renewLocked(); err != nil {
		p.log.Error("renew slow-path lease after a stall", "err", err)
	}
}

// end ends the lease of every handled direction now: the fast path stops
// punting and applies the failure mode.
func (p *Punt) end() {
	p.hbMu.Lock()
	defer p.hbMu.Unlock()
	for _, pp := range p.pipes {
		if pp != nil {
			if err := p.hb.Heartbeat(p.slot, pp.dir, pp.ifindex, time.Time{}); err != nil {
				p.log.Error("end slow-path lease", "dir", pp.dir, "err", err)
			}
		}
	}
}

func (p *Punt) wake() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// watch renews the lease every Heartbeat and runs the watchdog.
func (p *Punt) watch() {
	defer p.monitor.Done()
	hb := time.NewTicker(p.opts.Heartbeat)
	defer hb.Stop()
	wd := time.NewTicker(max(p.opts.Watchdog/4, time.Millisecond))
	defer wd.Stop()
	type sample struct {
		seq   uint64
		since time.Time
	}
	var last [sdk.NumDirections]sample
	failing := false // last renew failed: log only the change
	for {
		select {
		case <-p.done:
			return
		case <-hb.C:
		case <-p.kick:
		case now := <-wd.C:
			for _, pp := range p.pipes {
				if pp == nil {
					continue
				}
				s, l := pp.seq.Load(), &last[pp.dir]
				if s%2 == 0 || s != l.seq {
					*l = sample{seq: s, since: now}
					continue
				}
				if now.Sub(l.since) >= p.opts.Watchdog && !pp.stalled.Load() {
					pp.stalled.Store(true)
					p.log.Error("slow path stalled: Process running beyond the watchdog; failure mode applies", "dir", pp.dir, "watchdog", p.opts.Watchdog)
					p.end()
				}
			}
			continue
		}
		if err := p.renew(); err != nil {
			if !failing {
				p.log.Error("renew slow-path lease", "err", err)
			}
			failing = true
		} else {
			failing = false
		}
	}
}

// read is the hot loop of one direction: no allocation per frame.
func (p *Punt) read(pp *pipe) {
	defer p.readers.Done()
	buf := make([]byte, frameBuf)
	f := sdk.Frame{Direction: pp.dir}
	for {
		n, err := pp.file.Read(buf)
		if err != nil {
			if p.stopped.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			pp.errors.Add(1)
			p.log.Error("read punt tap; reader ends", "tap", pp.name, "err", err)
			return
		}
		if n < slowproc.VnetHdrLen+ethHdrLen {
			pp.errors.Add(1)
			continue
		}
		pp.frames.Add(1)
		f.GSO = slowproc.DecodeVnetHdr(buf)
		f.Data = buf[slowproc.VnetHdrLen:n]
		v, ok := sdk.Drop, false
		if !p.panicked.Load() {
			v, ok = p.process(pp, &f)
		}
		if !ok && p.opts.FailMode == sdk.FailOpen {
			v = sdk.Pass
		}
		if v != sdk.Pass {
			pp.dropped.Add(1)
			continue
		}
		slowproc.EncodeVnetHdr(buf, f.GSO)
		if _, err := pp.file.Write(buf[:n]); err != nil {
			if p.stopped.Load() || errors.Is(err, os.ErrClosed) {
				return
			}
			pp.errors.Add(1)
			continue
		}
		pp.passed.Add(1)
	}
}

// process calls the handler, turning a panic into the Panicked state. ok
// is false when the handler panicked.
func (p *Punt) process(pp *pipe, f *sdk.Frame) (v sdk.SlowVerdict, ok bool) {
	pp.seq.Add(1)
	defer func() {
		pp.seq.Add(1)
		if r := recover(); r != nil {
			v, ok = sdk.Drop, false
			if p.panicked.CompareAndSwap(false, true) {
				p.log.Error("slow path panicked; failure mode applies until the instance is restarted",
					"dir", pp.dir, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				p.end()
			}
			return
		}
		if pp.stalled.Load() {
			p.unstall(pp)
		}
	}()
	return p.h.Process(f), true
}

func (p *Punt) setCounters(c []sdk.Counter) { p.extCounters.Store(&c) }

// ExternalCounters are the counters an external slow path reported last
// (nil for in-process slow paths: ask the handler).
func (p *Punt) ExternalCounters() []sdk.Counter {
	if c := p.extCounters.Load(); c != nil {
		return *c
	}
	return nil
}
