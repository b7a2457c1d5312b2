package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// connResult is a connection-rate measurement.
type connResult struct {
	rate   float64 // completed connects per second
	failed uint64  // connects that failed in the window
}

const (
	// connClients are the client threads of the connection loop, all in
	// VM A on the client CPU: enough to keep the CPU busy while some wait
	// for their SYN-ACK.
	connClients = 4
	// connServers accept (and close) in VM B on the server CPU.
	connServers = 2
	connWarmup  = 500 * time.Millisecond
)

// connRate measures new TCP connections per second from VM A to dst:
// connClients threads each loop socket, connect (blocking), close, with
// SO_LINGER 0 so the close is a RST. The RST keeps the client out of
// TIME_WAIT, which would otherwise exhaust A's 28,000 ephemeral ports in a
// second and make the loop measure port reuse instead; every connection is
// still a full SYN, SYN-ACK, ACK through the datapath, a new flow for a
// stateful filter. B accepts and closes each one.
func connRate(ctx context.Context, t *topology, dst net.IP, d time.Duration) (connResult, error) {
	cpus := pickCPUs()
	var stop atomic.Bool
	var done, failed atomic.Uint64
	var lastErr atomic.Value
	ready := make(chan error, 1)
	var srvWG sync.WaitGroup
	srvErr := make(chan error, connServers+1)
	srvWG.Add(1)
	go func() {
		defer srvWG.Done()
		srvErr <- t.b.ns.Do(func() error {
			restore, err := pinThread(cpus.server, cpus.ok)
			if err != nil {
				ready <- err
				return err
			}
			defer restore()
			ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				ready <- err
				return err
			}
			defer unix.Close(ln)
			_ = unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
			_ = unix.SetsockoptTimeval(ln, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			addr := anyAddr4(connPort)
			if err := unix.Bind(ln, &addr); err != nil {
				ready <- fmt.Errorf("bind port %d: %w", connPort, err)
				return err
			}
			if err := unix.Listen(ln, 4096); err != nil {
				ready <- err
				return err
			}
			// The other acceptors share the listening socket; each runs on
			// its own locked thread in B, and the socket is closed only
			// once they are all done.
			var extra sync.WaitGroup
			defer extra.Wait()
			for range connServers - 1 {
				extra.Add(1)
				go func() {
					defer extra.Done()
					srvErr <- t.b.ns.doPinned(cpus.server, cpus.ok, func() error {
						return acceptLoop(ln, &stop)
					})
				}()
			}
			ready <- nil
			return acceptLoop(ln, &stop)
		})
	}()
	if err := <-ready; err != nil {
		stop.Store(true)
		srvWG.Wait()
		return connResult{}, fmt.Errorf("accept loop in %s: %w", t.b.ns.name, err)
	}
	var cliWG sync.WaitGroup
	cliErr := make(chan error, connClients)
	var counting atomic.Bool
	for range connClients {
		cliWG.Add(1)
		go func() {
			defer cliWG.Done()
			cliErr <- t.a.ns.doPinned(cpus.client, cpus.ok, func() error {
				addr := sockaddr4(dst, connPort)
				for !stop.Load() {
					err := connectClose(&addr)
					switch {
					case err == nil:
						if counting.Load() {
							done.Add(1)
						}
					case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE):
						return err
					default:
						if counting.Load() {
							failed.Add(1)
						}
						lastErr.Store(err.Error())
					}
				}
				return nil
			})
		}()
	}
	measure := func() (connResult, error) {
		if err := sleepCtx(ctx, connWarmup); err != nil {
			return connResult{}, err
		}
		counting.Store(true)
		t0 := time.Now()
		if err := sleepCtx(ctx, d); err != nil {
			return connResult{}, err
		}
		n, f, el := done.Load(), failed.Load(), time.Since(t0).Seconds()
		return connResult{rate: float64(n) / el, failed: f}, nil
	}
	r, err := measure()
	stop.Store(true)
	cliWG.Wait()
	srvWG.Wait()
	close(cliErr)
	close(srvErr)
	if err != nil {
		return r, err
	}
	for e := range cliErr {
		if e != nil {
			return r, fmt.Errorf("connect loop in %s: %w", t.a.ns.name, e)
		}
	}
	for e := range srvErr {
		if e != nil {
			return r, fmt.Errorf("accept loop in %s: %w", t.b.ns.name, e)
		}
	}
	if r.rate == 0 {
		last, _ := lastErr.Load().(string)
		return r, fmt.Errorf("no connection completed (%d failed; last error: %s)", r.failed, last)
	}
	return r, nil
}

// connectClose opens one TCP connection to addr and resets it.
func connectClose(addr *unix.SockaddrInet4) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	// A connect the datapath drops gives up after 2 s instead of the
	// kernel's two minutes of SYN retries.
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
	_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
	for {
		err = unix.Connect(fd, addr)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

// acceptLoop accepts and closes connections until stop.
func acceptLoop(ln int, stop *atomic.Bool) error {
	for !stop.Load() {
		fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
			unix.Close(fd)
		case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
		default:
			return fmt.Errorf("accept: %w", err)
		}
	}
	return nil
}
