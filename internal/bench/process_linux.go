package bench

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// child is a subprocess started inside a namespace with nsenter. Its own
// process group keeps a terminal's Ctrl-C for vfbench, which then stops the
// child in order; Pdeathsig ends it if vfbench itself is killed.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done
	out  *lockedBuffer // stdout+stderr, when not redirected
}

// lockedBuffer is a bytes.Buffer written by exec's copier goroutine and read
// by us.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startIn starts argv inside the namespace at nsPath. Output goes to out, or
// to an in-memory buffer when out is nil.
func startIn(nsPath string, out *os.File, argv ...string) (*child, error) {
	c := &child{name: argv[0], done: make(chan struct{})}
	c.cmd = exec.Command("nsenter", append([]string{"--net=" + nsPath, "--"}, argv...)...)
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if out != nil {
		c.cmd.Stdout, c.cmd.Stderr = out, out
	} else {
		c.out = &lockedBuffer{}
		c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", strings.Join(argv, " "), err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

// exited reports whether the process has ended.
func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// stop ends the process by pid: SIGTERM, then SIGKILL after grace.
func (c *child) stop(grace time.Duration) {
	if c.exited() {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(grace):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}
