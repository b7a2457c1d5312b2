package slowproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// Conn is one end of the filter socket: whole messages, file descriptors
// alongside. Send is safe for concurrent use; Recv is not.
type Conn struct {
	uc  *net.UnixConn
	wmu sync.Mutex
	buf []byte
	oob []byte
}

// NewConn wraps a SOCK_SEQPACKET unix socket; f is duplicated, so the
// caller closes its own copy.
func NewConn(f *os.File) (*Conn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("filter socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("filter socket: %T is not a unix socket", c)
	}
	return &Conn{uc: uc, buf: make([]byte, MaxMsg), oob: make([]byte, unix.CmsgSpace(4*8))}, nil
}

// Pair makes a connected socket pair: ours, and the file to hand the
// filter process (close it after starting the process).
func Pair() (*Conn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "filter-socket")
	theirs := os.NewFile(uintptr(fds[1]), "filter-socket-child")
	c, err := NewConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return c, theirs, nil
}

// Send writes m, with files' descriptors attached.
func (c *Conn) Send(m *Msg, files ...*os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > MaxMsg {
		return fmt.Errorf("filter socket: %s message of %d bytes exceeds %d", m.Op, len(b), MaxMsg)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, _, err = c.uc.WriteMsgUnix(b, oob, nil)
	return err
}

// Recv reads the next message and the descriptors that came with it (as
// files the caller owns). io.EOF means the peer closed the socket.
func (c *Conn) Recv() (*Msg, []*os.File, error) {
	n, oobn, flags, _, err := c.uc.ReadMsgUnix(c.buf, c.oob)
	if err != nil {
		return nil, nil, err
	}
	var files []*os.File
	if oobn > 0 {
		cmsgs, err := unix.ParseSocketControlMessage(c.oob[:oobn])
		if err != nil {
			return nil, nil, fmt.Errorf("filter socket: control message: %w", err)
		}
		for _, cm := range cmsgs {
			fds, err := unix.ParseUnixRights(&cm)
			if err != nil {
				continue
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "passed-fd"))
			}
		}
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if n == 0 {
		closeAll()
		return nil, nil, errEOF
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll()
		return nil, nil, fmt.Errorf("filter socket: message truncated")
	}
	var m Msg
	if err := json.Unmarshal(c.buf[:n], &m); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("filter socket: bad message: %w", err)
	}
	return &m, files, nil
}

// Close closes the socket; a Recv blocked on it returns.
func (c *Conn) Close() error { return c.uc.Close() }

var errEOF = errors.New("filter socket closed by peer")

// IsClosed reports whether err from Recv means the peer went away.
func IsClosed(err error) bool {
	return errors.Is(err, errEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ECONNRESET)
}
