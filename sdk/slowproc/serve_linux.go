package slowproc

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Filter is what an external slow-path filter process serves.
type Filter struct {
	// Name and Version must match the manifest filterd loaded.
	Name    string
	Version string
	// Params is the parameter schema (the manifest's); each instance's
	// parameters are validated against it before New.
	Params []sdk.ParamSpec
	// New makes the slow path of one instance (a filter in one slot of one
	// vNIC's chain). Process is called from one goroutine per direction.
	New func(*sdk.SlowPathContext) (sdk.SlowPath, error)
	// Logger receives the process's events; default: text on stderr,
	// which filterd copies into its own log.
	Logger *slog.Logger
}

// Serve talks to filterd on the socket it passed (FDEnv) until filterd
// closes it, then closes every instance and returns nil. It returns an
// error at once when the process was not started by filterd.
func Serve(f Filter) error {
	s := os.Getenv(FDEnv)
	if s == "" {
		return fmt.Errorf("%s is not set: this program is a vnicfilter slow-path filter and is started by filterd (load its manifest with `vfctl filter load`)", FDEnv)
	}
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return fmt.Errorf("%s=%q: want a descriptor number ≥ 3", FDEnv, s)
	}
	file := os.NewFile(uintptr(fd), "filterd-socket")
	c, err := NewConn(file)
	file.Close()
	if err != nil {
		return err
	}
	defer c.Close()
	return serveConn(c, f)
}

// ServeConn is Serve on an already open socket (tests, embedding).
func ServeConn(c *Conn, f Filter) error { return serveConn(c, f) }

func serveConn(c *Conn, f Filter) error {
	if f.New == nil || f.Name == "" {
		return errors.New("slowproc: Filter needs a Name and a New function")
	}
	if f.Logger == nil {
		f.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	if err := c.Send(&Msg{Op: OpHello, ABI: sdk.ABIVersion, Filter: f.Name, Version: f.Version, PID: os.Getpid()}); err != nil {
		return fmt.Errorf("hello to filterd: %w", err)
	}
	insts := map[uint64]*instance{}
	defer func() {
		for _, in := range insts {
			in.stop()
		}
	}()
	for {
		m, files, err := c.Recv()
		if err != nil {
			if IsClosed(err) {
				return nil
			}
			return err
		}
		switch m.Op {
		case OpOpen:
			if old := insts[m.ID]; old != nil {
				old.stop()
				delete(insts, m.ID)
			}
			in, err := openInstance(f, m, files)
			reply := &Msg{Op: OpOpened, ID: m.ID}
			if err != nil {
				reply.Error = err.Error()
				f.Logger.Error("open instance", "id", m.ID, "err", err)
			} else {
				insts[m.ID] = in
			}
			if err := c.Send(reply); err != nil {
				return err
			}
		case OpClose:
			closeFiles(files)
			if in := insts[m.ID]; in != nil {
				in.stop()
				delete(insts, m.ID)
			}
		case OpPing:
			closeFiles(files)
			pong := &Msg{Op: OpPong, Seq: m.Seq}
			for _, in := range insts {
				pong.Status = append(pong.Status, in.status()...)
			}
			if err := c.Send(pong); err != nil {
				return err
			}
		default:
			closeFiles(files)
			f.Logger.Warn("unknown message from filterd", "op", m.Op)
		}
	}
}

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// instance is one slow path with a reader per direction.
type instance struct {
	id       uint64
	h        sdk.SlowPath
	readers  []*reader
	panicked atomic.Bool
	wg       sync.WaitGroup
	log      *slog.Logger
}

type reader struct {
	dir   sdk.Direction
	tap   *os.File
	calls atomic.Uint64 // Process entries and exits: odd while a call runs

	frames, passed, dropped, errors atomic.Uint64
}

func openInstance(f Filter, m *Msg, files []*os.File) (_ *instance, err error) {
	defer func() {
		if err != nil {
			for _, f := range files {
				if f != nil {
					f.Close()
				}
			}
		}
	}()
	if m.VNIC == nil {
		return nil, errors.New("open without a vNIC")
	}
	if len(files) != len(m.Dirs) || len(files) == 0 {
		return nil, fmt.Errorf("open %s slot %d: %d directions but %d descriptors", m.VNIC.Name, m.Slot, len(m.Dirs), len(files))
	}
	params, err := sdk.ValidateParams(f.Params, m.Params)
	if err != nil {
		return nil, fmt.Errorf("parameters: %w", err)
	}
	var dirs sdk.Directions
	for _, d := range m.Dirs {
		dirs |= 1 << d
	}
	log := f.Logger.With("vnic", m.VNIC.Name, "slot", m.Slot)
	inst := sdk.Instance{VNIC: *m.VNIC, Slot: m.Slot, Directions: dirs, FailMode: m.FailMode, Params: params}
	h, err := f.New(&sdk.SlowPathContext{Instance: inst, Logger: log})
	if err != nil {
		return nil, err
	}
	in := &instance{id: m.ID, h: h, log: log}
	for i, file := range files {
		// A descriptor of our own, non-blocking, so the runtime poller
		// reads it and Close wakes the reader. (O_NONBLOCK is shared with
		// filterd's descriptor, which never reads this tap.)
		fd, err := unix.Dup(int(file.Fd()))
		if err == nil {
			err = unix.SetNonblock(fd, true)
		}
		if err != nil {
			in.stopReaders()
			h.Close()
			return nil, fmt.Errorf("tap descriptor: %w", err)
		}
		unix.CloseOnExec(fd)
		file.Close()
		files[i] = nil
		in.readers = append(in.readers, &reader{dir: m.Dirs[i], tap: os.NewFile(uintptr(fd), "punt-tap")})
	}
	for _, r := range in.readers {
		in.wg.Add(1)
		go in.read(r)
	}
	return in, nil
}

func (in *instance) stopReaders() {
	for _, r := range in.readers {
		r.tap.Close()
	}
	in.wg.Wait()
}

func (in *instance) stop() {
	in.stopReaders()
	if err := in.h.Close(); err != nil {
		in.log.Warn("close slow path", "err", err)
	}
}

func (in *instance) status() []Status {
	out := make([]Status, 0, len(in.readers))
	for _, r := range in.readers {
		out = append(out, Status{ID: in.id, Dir: r.dir, Frames: r.frames.Load(), Passed: r.passed.Load(), Dropped: r.dropped.Load(),
			Errors: r.errors.Load(), Calls: r.calls.Load(), Panicked: in.panicked.Load()})
	}
	if sc, ok := in.h.(sdk.SlowCounters); ok && len(out) > 0 {
		out[0].Counters = sc.Counters()
	}
	return out
}

// read is the hot loop of one direction, as filterd's in-process runner.
func (in *instance) read(r *reader) {
	defer in.wg.Done()
	buf := make([]byte, VnetHdrLen+64<<10+256)
	f := sdk.Frame{Direction: r.dir}
	for {
		n, err := r.tap.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				in.log.Error("read punt tap; reader ends", "dir", r.dir, "err", err)
			}
			return
		}
		if n < VnetHdrLen+14 {
			r.errors.Add(1)
			continue
		}
		r.frames.Add(1)
		f.GSO = DecodeVnetHdr(buf)
		f.Data = buf[VnetHdrLen:n]
		v := sdk.Drop
		if !in.panicked.Load() {
			v = in.process(r, &f)
		}
		if v != sdk.Pass {
			r.dropped.Add(1)
			continue
		}
		EncodeVnetHdr(buf, f.GSO)
		if _, err := r.tap.Write(buf[:n]); err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			r.errors.Add(1)
			continue
		}
		r.passed.Add(1)
	}
}

// process calls the handler; a panic marks the instance panicked (filterd
// sees it in the next pong and applies the failure mode) and drops.
func (in *instance) process(r *reader, f *sdk.Frame) (v sdk.SlowVerdict) {
	r.calls.Add(1)
	defer func() {
		r.calls.Add(1)
		if p := recover(); p != nil {
			v = sdk.Drop
			if in.panicked.CompareAndSwap(false, true) {
				in.log.Error("slow path panicked; its failure mode applies until filterd reopens it", "dir", r.dir, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			}
		}
	}()
	return in.h.Process(f)
}
