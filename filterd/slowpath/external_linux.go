package slowpath

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/slowproc"
)

// SupervisorOptions tune a Supervisor; the zero value is the default.
type SupervisorOptions struct {
	Logger *slog.Logger
	// Heartbeat is how often the process is pinged; default 200ms. A
	// process that misses MissedPongs pings in a row is killed (SIGKILL)
	// and restarted.
	Heartbeat   time.Duration
	MissedPongs int // default 3
	// StartTimeout bounds the wait for the process's hello and for each
	// instance's opened answer; default 5s.
	StartTimeout time.Duration
	// MinBackoff and MaxBackoff bound the restart delay, doubled after
	// each crash and reset after a run of a minute; defaults 100ms, 10s.
	MinBackoff, MaxBackoff time.Duration
}

func (o SupervisorOptions) withDefaults() SupervisorOptions {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.MissedPongs <= 0 {
		o.MissedPongs = 3
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 5 * time.Second
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = 100 * time.Millisecond
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 10 * time.Second
	}
	return o
}

// SupervisorStatus describes the process for the API.
type SupervisorStatus struct {
	State     string `json:"state"` // running, starting, backoff, stopped
	PID       int    `json:"pid,omitempty"`
	Restarts  int    `json:"restarts"`
	LastError string `json:"last_error,omitempty"`
	Instances int    `json:"instances"`
}

// Supervisor runs the process of one external slow-path filter, restarts
// it with backoff when it dies, and hands it the punt taps of the filter's
// instances (see package sdk/slowproc for the protocol).
type Supervisor struct {
	name string
	argv []string
	dir  string
	opts SupervisorOptions
	log  *slog.Logger

	mu       sync.Mutex
	conn     *slowproc.Conn // nil while no process has said hello
	state    string
	pid      int
	restarts int
	lastErr  string
	nextID   uint64
	insts    map[uint64]*extInstance

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

type extInstance struct {
	p      *Punt
	params map[string]string
	opened chan struct{} // closed at the first answer to an open
}

// NewSupervisor starts the process argv (argv[0] resolved against dir
// when relative) of filter name and waits for its hello: an error means
// it could not start or does not speak the protocol, and nothing keeps
// running. Afterwards it is restarted whenever it ends, until Stop.
func NewSupervisor(name string, argv []string, dir string, opts SupervisorOptions) (*Supervisor, error) {
	if len(argv) == 0 {
		return nil, fmt.Errorf("slow-path filter %s: empty command", name)
	}
	opts = opts.withDefaults()
	s := &Supervisor{
		name: name, argv: append([]string(nil), argv...), dir: dir, opts: opts,
		log:   opts.Logger.With("filter", name),
		insts: map[uint64]*extInstance{},
		state: "starting",
		stop:  make(chan struct{}), done: make(chan struct{}),
	}
	r, err := s.launch()
	if err != nil {
		return nil, err
	}
	go s.run(r)
	return s, nil
}

// run keeps the process alive: serve the current one, then restart.
func (s *Supervisor) run(r *running) {
	defer close(s.done)
	backoff := s.opts.MinBackoff
	for {
		started := time.Now()
		err := s.serve(r)
		select {
		case <-s.stop:
			s.setState("stopped", 0, "")
			return
		default:
		}
		if time.Since(started) > time.Minute {
			backoff = s.opts.MinBackoff
		}
		s.log.Error("slow-path filter process ended; its vNICs apply their failure mode until it is back", "err", err, "restart_in", backoff)
		s.mu.Lock()
		s.restarts++
		s.lastErr = err.Error()
		s.state, s.pid = "backoff", 0
		s.mu.Unlock()
		for {
			select {
			case <-s.stop:
				s.setState("stopped", 0, "")
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, s.opts.MaxBackoff)
			if r, err = s.launch(); err == nil {
				break
			}
			s.log.Error("restart slow-path filter process", "err", err, "retry_in", backoff)
			s.mu.Lock()
			s.restarts++
			s.lastErr = err.Error()
			s.mu.Unlock()
		}
	}
}

func (s *Supervisor) setState(state string, pid int, lastErr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.pid = state, pid
	if lastErr != "" {
		s.lastErr = lastErr
	}
}

// running is one started process that said hello.
type running struct {
	cmd  *exec.Cmd
	conn *slowproc.Conn
}

func (r *running) kill() {
	_ = r.cmd.Process.Kill()
	_ = r.conn.Close()
	_ = r.cmd.Wait()
}

// launch starts the process and waits for its hello.
func (s *Supervisor) launch() (_ *running, err error) {
	conn, child, err := slowproc.Pair()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Dir = s.dir
	cmd.ExtraFiles = []*os.File{child} // descriptor 3
	cmd.Env = append(os.Environ(), slowproc.FDEnv+"=3", "VNICFILTER_FILTER="+s.name)
	cmd.Stdout = &lineLogger{log: s.log, stream: "stdout"}
	cmd.Stderr = &lineLogger{log: s.log, stream: "stderr"}
	cmd.WaitDelay = time.Second
	// The taps die with filterd anyway; the process should too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Start()
	child.Close() // the process's copy is all that must keep it open
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("slow-path filter %s: start %s: %w", s.name, s.argv[0], err)
	}
	r := &running{cmd: cmd, conn: conn}
	defer func() {
		if err != nil {
			r.kill()
		}
	}()
	type recv struct {
		m   *slowproc.Msg
		err error
	}
	ch := make(chan recv, 1)
	go func() {
		m, files, err := conn.Recv()
		closeFiles(files)
		ch <- recv{m, err}
	}()
	var h recv
	select {
	case h = <-ch:
	case <-time.After(s.opts.StartTimeout):
		return nil, fmt.Errorf("slow-path filter %s: process %d sent no hello within %v (does it call slowproc.Serve?)", s.name, cmd.Process.Pid, s.opts.StartTimeout)
	}
	switch {
	case h.err != nil:
		return nil, fmt.Errorf("slow-path filter %s: process %d ended before its hello: %w", s.name, cmd.Process.Pid, h.err)
	case h.m.Op != slowproc.OpHello:
		return nil, fmt.Errorf("slow-path filter %s: process sent %q before hello", s.name, h.m.Op)
	case h.m.ABI != sdk.ABIVersion:
		return nil, fmt.Errorf("slow-path filter %s: %w: process speaks ABI %d, filterd %d", s.name, sdk.ErrABIMismatch, h.m.ABI, sdk.ABIVersion)
	case h.m.Filter != s.name:
		return nil, fmt.Errorf("slow-path filter %s: process says it is filter %q", s.name, h.m.Filter)
	}
	s.log.Info("slow-path filter process up", "pid", cmd.Process.Pid, "version", h.m.Version)
	return r, nil
}

// serve hands the process every instance, pings it and reads its answers
// until it dies (or Stop); then every instance loses its lease.
func (s *Supervisor) serve(r *running) error {
	s.mu.Lock()
	s.conn, s.state, s.pid = r.conn, "running", r.cmd.Process.Pid
	ids := make([]uint64, 0, len(s.insts))
	for id := range s.insts {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.conn = nil
		for _, in := range s.insts {
			in.p.extUp.Store(false)
			in.p.end()
		}
		s.mu.Unlock()
		r.kill()
	}()
	for _, id := range ids {
		if err := s.sendOpen(r.conn, id); err != nil {
			return err
		}
	}
	pongs := make(chan uint64, 1)
	quit := make(chan struct{})
	defer close(quit)
	go s.ping(r, pongs, quit)
	for {
		m, files, err := r.conn.Recv()
		closeFiles(files)
		if err != nil {
			select {
			case <-s.stop:
				return nil
			default:
			}
			if st := r.cmd.ProcessState; st != nil {
				return fmt.Errorf("process %d: %s", r.cmd.Process.Pid, st)
			}
			return fmt.Errorf("process %d: socket: %w", r.cmd.Process.Pid, err)
		}
		switch m.Op {
		case slowproc.OpOpened:
			s.opened(m)
		case slowproc.OpPong:
			select {
			case pongs <- m.Seq:
			default:
			}
			s.pong(m)
		default:
			s.log.Warn("unexpected message from slow-path filter process", "op", m.Op)
		}
	}
}

// ping sends a ping every heartbeat and kills the process when it has
// not answered MissedPongs of them: a hung process fails its vNICs fast.
func (s *Supervisor) ping(r *running, pongs <-chan uint64, quit <-chan struct{}) {
	t := time.NewTicker(s.opts.Heartbeat)
	defer t.Stop()
	var seq, answered uint64
	for {
		select {
		case <-quit:
			return
		case a := <-pongs:
			answered = max(answered, a)
			continue
		case <-t.C:
		}
		if seq-answered >= uint64(s.opts.MissedPongs) {
			s.log.Error("slow-path filter process stopped answering; killing it", "pid", r.cmd.Process.Pid, "missed", seq-answered)
			_ = r.cmd.Process.Kill()
			_ = r.conn.Close()
			return
		}
		seq++
		if err := r.conn.Send(&slowproc.Msg{Op: slowproc.OpPing, Seq: seq}); err != nil {
			return
		}
	}
}

func (s *Supervisor) opened(m *slowproc.Msg) {
	s.mu.Lock()
	in := s.insts[m.ID]
	s.mu.Unlock()
	if in == nil {
		return
	}
	if m.Error != "" {
		in.p.log.Error("slow-path filter process refused the instance; failure mode applies", "err", m.Error)
	} else {
		in.p.panicked.Store(false)
		for _, pp := range in.p.pipes {
			if pp != nil {
				pp.stalled.Store(false)
			}
		}
		in.p.extUp.Store(true)
		in.p.wake()
	}
	select {
	case <-in.opened:
	default:
		close(in.opened)
	}
}

func (s *Supervisor) pong(m *slowproc.Msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range m.Status {
		in := s.insts[st.ID]
		if in == nil || int(st.Dir) >= len(in.p.pipes) || in.p.pipes[st.Dir] == nil {
			continue
		}
		p, pp := in.p, in.p.pipes[st.Dir]
		pp.frames.Store(st.Frames)
		pp.passed.Store(st.Passed)
		pp.dropped.Store(st.Dropped)
		pp.errors.Store(st.Errors)
		if st.Counters != nil {
			p.setCounters(st.Counters)
		}
		if st.Panicked && p.panicked.CompareAndSwap(false, true) {
			p.log.Error("external slow path panicked; failure mode applies until the process is restarted")
			p.end()
		}
		// The process's call counter feeds the Punt's own watchdog
		// (watch), as the in-process reader's does: odd and unchanged
		// for a watchdog period is a stall; a change ends one.
		if prev := pp.seq.Swap(st.Calls); prev != st.Calls && pp.stalled.Load() {
			p.unstall(pp)
		}
	}
}

func (s *Supervisor) sendOpen(c *slowproc.Conn, id uint64) error {
	s.mu.Lock()
	in := s.insts[id]
	s.mu.Unlock()
	if in == nil {
		return nil
	}
	p := in.p
	m := &slowproc.Msg{Op: slowproc.OpOpen, ID: id, VNIC: &p.vnic, Slot: p.slot, FailMode: p.opts.FailMode, Params: in.params}
	var files []*os.File
	for _, pp := range p.pipes {
		if pp != nil {
			m.Dirs = append(m.Dirs, pp.dir)
			files = append(files, pp.file)
		}
	}
	return c.Send(m, files...)
}

// open registers p and, if the process is up, hands it p's taps and waits
// (at most StartTimeout) for its answer.
func (s *Supervisor) open(p *Punt, params map[string]string) {
	s.mu.Lock()
	s.nextID++
	id := s.nextID
	p.extID = id
	in := &extInstance{p: p, params: params, opened: make(chan struct{})}
	s.insts[id] = in
	c := s.conn
	s.mu.Unlock()
	if c == nil {
		return
	}
	if err := s.sendOpen(c, id); err != nil {
		p.log.Error("hand instance to slow-path filter process", "err", err)
		return
	}
	select {
	case <-in.opened:
	case <-time.After(s.opts.StartTimeout):
		p.log.Error("slow-path filter process did not open the instance in time; failure mode applies until it does", "timeout", s.opts.StartTimeout)
	}
}

// close forgets p and tells the process to close it.
func (s *Supervisor) close(p *Punt) {
	s.mu.Lock()
	delete(s.insts, p.extID)
	c := s.conn
	s.mu.Unlock()
	p.extUp.Store(false)
	if c != nil {
		_ = c.Send(&slowproc.Msg{Op: slowproc.OpClose, ID: p.extID})
	}
}

// Status reports the process's state.
func (s *Supervisor) Status() SupervisorStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SupervisorStatus{State: s.state, PID: s.pid, Restarts: s.restarts, LastError: s.lastErr, Instances: len(s.insts)}
}

// Stop ends the process (its instances must be stopped first; any left
// lose their lease) and waits for the supervisor to finish.
func (s *Supervisor) Stop() {
	s.once.Do(func() {
		close(s.stop)
		s.mu.Lock()
		c := s.conn
		s.mu.Unlock()
		if c != nil {
			_ = c.Close() // serve sees the socket closed and kills the process
		}
		<-s.done
	})
}

// waitRestarts is for tests: it returns when ctx is done or the process has
// restarted n times in all.
func (s *Supervisor) waitRestarts(ctx context.Context, n int) error {
	for {
		if s.Status().Restarts >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// lineLogger copies a process's output into filterd's log, line by line.
type lineLogger struct {
	log    *slog.Logger
	stream string
	buf    []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		l.log.Info("slow-path filter output", "stream", l.stream, "line", string(l.buf[:i]))
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 {
		l.log.Info("slow-path filter output", "stream", l.stream, "line", string(l.buf))
		l.buf = l.buf[:0]
	}
	return len(b), nil
}
