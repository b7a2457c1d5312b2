package bench

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// sockaddr4 is ip:port as a sockaddr.
func sockaddr4(ip net.IP, port int) unix.SockaddrInet4 {
	return unix.SockaddrInet4{Port: port, Addr: [4]byte(ip.To4())}
}

// anyAddr4 is 0.0.0.0:port: B's servers answer on all its addresses (the
// VIP's backends are three of them).
func anyAddr4(port int) unix.SockaddrInet4 { return unix.SockaddrInet4{Port: port} }

// iperfTCP runs one iperf3 test of streams parallel TCP streams from VM A to
// dst (VM B or the VIP) and returns the received Gb/s. The server is started for this test
// only (--one-off) and stopped by pid, whatever happens.
func iperfTCP(ctx context.Context, t *topology, dst net.IP, d time.Duration, streams int) (iperfResult, error) {
	cpus := pickCPUs()
	srv, err := startIn(t.b.ns.path, nil, append([]string{"iperf3", "--server", "--one-off", "--port", strconv.Itoa(iperfPort)},
		iperfAffinity(cpus.server, cpus.ok)...)...)
	if err != nil {
		return iperfResult{}, err
	}
	defer srv.stop(2 * time.Second)
	if err := waitListening(ctx, srv, t.b.ns.path, iperfPort); err != nil {
		return iperfResult{}, err
	}
	secs := max(1, int(math.Ceil(d.Seconds())))
	cctx, cancel := context.WithTimeout(ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	args := append([]string{"--net=" + t.a.ns.path, "--",
		"iperf3", "--client", dst.String(), "--port", strconv.Itoa(iperfPort),
		"--time", strconv.Itoa(secs), "--parallel", strconv.Itoa(streams), "--json"},
		iperfAffinity(cpus.client, cpus.ok)...)
	cmd := exec.CommandContext(cctx, "nsenter", args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, runErr := cmd.Output()
	if ctx.Err() != nil {
		return iperfResult{}, ctx.Err()
	}
	res, err := parseIperf(out)
	if err != nil {
		if runErr != nil {
			return iperfResult{}, fmt.Errorf("iperf3 client (%v): %w", runErr, err)
		}
		return iperfResult{}, err
	}
	return res, nil
}

// waitListening waits until the process p, once inside the namespace at
// nsPath, has a TCP socket listening on port. It reads the process's own
// /proc/<pid>/net/tcp{,6}, which show its namespace: nothing has to connect
// to the server (an iperf3 server counts every connection as a test).
func waitListening(ctx context.Context, p *child, nsPath string, port int) error {
	var want unix.Stat_t
	if err := unix.Stat(nsPath, &want); err != nil {
		return fmt.Errorf("stat %s: %w", nsPath, err)
	}
	pid := p.cmd.Process.Pid
	hexPort := fmt.Sprintf(":%04X", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var st unix.Stat_t
		// Before nsenter's setns the process is still in our namespace.
		if unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st) == nil && st.Ino == want.Ino && st.Dev == want.Dev {
			for _, f := range []string{"tcp", "tcp6"} {
				if listening(fmt.Sprintf("/proc/%d/net/%s", pid, f), hexPort) {
					return nil
				}
			}
		}
		if p.exited() {
			return fmt.Errorf("%s exited before listening on port %d (%v): %s", p.name, port, p.err, strings.TrimSpace(p.out.String()))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening on port %d after 10s", p.name, port)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// listening reports whether a /proc/net/tcp-format file has a socket in
// LISTEN state (0A) on the local port hexPort (":1451").
func listening(path, hexPort string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 3 && strings.HasSuffix(fs[1], hexPort) && fs[3] == "0A" {
			return true
		}
	}
	return false
}

// udpResult is one UDP blast: packets per second sent and received over the
// measured window.
type udpResult struct{ sent, received float64 }

const (
	udpPayload = 64
	// udpBatch datagrams per sendmmsg/recvmmsg call: the syscall's cost is
	// shared, so the blaster saturates the path rather than its own CPU.
	udpBatch = 64
	// udpWarmup is blasted before the window opens: ARP, the receiver's
	// wake-up, the chain's first packets.
	udpWarmup = 500 * time.Millisecond
	// udpStartWait bounds how much longer than the warm-up the window
	// waits for the first datagram to arrive.
	udpStartWait = 5 * time.Second
)

// mmsghdr is struct mmsghdr; Go pads it as C does.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// udpBlast sends 64-byte UDP payloads from VM A to dst as fast as one
// blocking socket on one locked thread can (sendmmsg, batches of 64) and
// counts what a receiver in VM B gets (recvmmsg) during d, after a warm-up.
// Raw syscalls on blocking sockets keep Go's netpoller out of the per-packet
// path: the rate is the datapath's, not the runtime's.
func udpBlast(ctx context.Context, t *topology, dst net.IP, d time.Duration) (udpResult, error) {
	var sent, recvd atomic.Uint64
	var stop atomic.Bool
	f, err := startUDPFlow(t, dst, udpPort,
		func(fd int) error { return recvLoop(fd, &recvd, nil, &stop) },
		func(fd int) error { return sendLoop(fd, &sent, &stop) })
	if err != nil {
		return udpResult{}, fmt.Errorf("udp receiver in %s: %w", t.b.ns.name, err)
	}
	measure := func() (r udpResult, err error) {
		if err := sleepCtx(ctx, udpWarmup); err != nil {
			return r, err
		}
		// On a busy machine the pinned threads may not have run yet: the
		// window opens once datagrams flow (at most udpStartWait more).
		for end := time.Now().Add(udpStartWait); recvd.Load() == 0 && time.Now().Before(end); {
			if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
				return r, err
			}
		}
		s0, r0, t0 := sent.Load(), recvd.Load(), time.Now()
		if err := sleepCtx(ctx, d); err != nil {
			return r, err
		}
		s1, r1, el := sent.Load(), recvd.Load(), time.Since(t0).Seconds()
		return udpResult{sent: float64(s1-s0) / el, received: float64(r1-r0) / el}, nil
	}
	r, err := measure()
	stop.Store(true)
	txErr, rxErr := f.wait()
	if err != nil {
		return r, err
	}
	if txErr != nil {
		return r, fmt.Errorf("udp blaster in %s: %w", t.a.ns.name, txErr)
	}
	if rxErr != nil {
		return r, fmt.Errorf("udp receiver in %s: %w", t.b.ns.name, rxErr)
	}
	if r.received == 0 {
		return r, fmt.Errorf("udp: nothing received (sent %.0f pps)", r.sent)
	}
	return r, nil
}

// udpFlow is a UDP sender in VM A and its receiver in VM B, each running on
// its own locked thread in its namespace, pinned to the client and server
// CPU (pickCPUs). udpBlast and measureSwap both drive one.
type udpFlow struct {
	wg           sync.WaitGroup
	txErr, rxErr error
}

// startUDPFlow binds a receiver socket to port in VM B and runs rx on it;
// once it is bound, it connects a sender socket in VM A to dst:port and runs
// tx on it. An error is the receiver's setup failing (nothing is left
// running then). The caller makes rx and tx return (their stop flags) and
// then calls wait.
func startUDPFlow(t *topology, dst net.IP, port int, rx, tx func(fd int) error) (*udpFlow, error) {
	f := &udpFlow{}
	cpus := pickCPUs()
	ready := make(chan error, 1)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.rxErr = t.b.ns.Do(func() error {
			restore, err := pinThread(cpus.server, cpus.ok)
			if err != nil {
				ready <- err
				return err
			}
			defer restore()
			fd, err := udpSocket(anyAddr4(port), true)
			if err != nil {
				ready <- err
				return err
			}
			defer unix.Close(fd)
			ready <- nil
			return rx(fd)
		})
	}()
	if err := <-ready; err != nil {
		f.wg.Wait()
		return nil, err
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.txErr = t.a.ns.doPinned(cpus.client, cpus.ok, func() error {
			fd, err := udpSocket(sockaddr4(dst, port), false)
			if err != nil {
				return err
			}
			defer unix.Close(fd)
			return tx(fd)
		})
	}()
	return f, nil
}

// wait waits for the sender and the receiver to return, and returns their
// errors.
func (f *udpFlow) wait() (txErr, rxErr error) {
	f.wg.Wait()
	return f.txErr, f.rxErr
}

// udpSocket returns a blocking UDP socket bound to (server) or connected to
// (client) addr. The receiver gets a large buffer so a scheduling hiccup
// shows as lost rate, not as drops that bias the count; its receive timeout
// lets the loop notice stop.
func udpSocket(addr unix.SockaddrInet4, server bool) (int, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("udp socket: %w", err)
	}
	if server {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
		tv := unix.NsecToTimeval(int64(100 * time.Millisecond))
		err = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
		if err == nil {
			err = unix.Bind(fd, &addr)
		}
	} else {
		err = unix.Connect(fd, &addr)
	}
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("udp socket %v:%d: %w", addr.Addr, addr.Port, err)
	}
	return fd, nil
}

// batch returns n mmsghdrs, each with its own iovec onto its own buf-sized
// slice of one buffer.
func batch(n, size int) ([]mmsghdr, []byte) {
	buf := make([]byte, n*size)
	iov := make([]unix.Iovec, n)
	msgs := make([]mmsghdr, n)
	for i := range msgs {
		iov[i].Base = &buf[i*size]
		iov[i].SetLen(size)
		msgs[i].hdr.Iov = &iov[i]
		msgs[i].hdr.SetIovlen(1)
	}
	return msgs, buf
}

func sendLoop(fd int, sent *atomic.Uint64, stop *atomic.Bool) error {
	msgs, _ := batch(udpBatch, udpPayload)
	for !stop.Load() {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
		switch errno {
		case 0:
			sent.Add(uint64(n))
		// A full queue, or the ICMP port-unreachable of a packet sent
		// before the receiver was bound: keep blasting.
		case unix.EAGAIN, unix.ENOBUFS, unix.ECONNREFUSED, unix.EINTR:
		default:
			return fmt.Errorf("sendmmsg: %w", errno)
		}
	}
	return nil
}

// recvLoop counts the datagrams received until stop and, unless maxSeq is
// nil, the highest sequence number seen (seqSendLoop's first 8 bytes).
func recvLoop(fd int, recvd, maxSeq *atomic.Uint64, stop *atomic.Bool) error {
	// Buffers larger than the payload: a truncated datagram would be
	// counted all the same, but the flag would hide a sizing mistake.
	msgs, buf := batch(udpBatch, 2*udpPayload)
	for !stop.Load() {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), unix.MSG_WAITFORONE, 0, 0)
		switch errno {
		case 0:
			recvd.Add(uint64(n))
			if maxSeq != nil {
				for i := range int(n) {
					if s := binary.BigEndian.Uint64(buf[i*2*udpPayload:]); s > maxSeq.Load() {
						maxSeq.Store(s)
					}
				}
			}
		case unix.EAGAIN, unix.EINTR: // receive timeout: look at stop
		default:
			return fmt.Errorf("recvmmsg: %w", errno)
		}
	}
	return nil
}

// rrResult holds the round-trip times of a request/response run.
type rrResult struct{ p50, p99 float64 } // microseconds

// rrWarmup round trips are made, and not timed, before the measured ones.
const rrWarmup = 2000

// rrIOTimeout bounds every read and accept, so a datapath that drops the
// flow fails the measurement instead of hanging the run.
const rrIOTimeout = 5 * time.Second

// tcpRR makes n one-byte request/response round trips on one TCP connection
// from VM A to dst (Nagle off, blocking sockets on locked threads, as
// netperf's TCP_RR) and returns the p50 and p99 of the per-round-trip times.
func tcpRR(ctx context.Context, t *topology, dst net.IP, n int) (rrResult, error) {
	addr := sockaddr4(dst, rrPort)
	ready := make(chan error, 1)
	srvErr := make(chan error, 1)
	cpus := pickCPUs()
	go func() {
		srvErr <- t.b.ns.Do(func() error {
			restore, err := pinThread(cpus.server, cpus.ok)
			if err == nil {
				defer restore()
				err = rrServe(anyAddr4(rrPort), ready)
			}
			if err != nil {
				select {
				case ready <- err:
				default:
				}
			}
			return err
		})
	}()
	if err := <-ready; err != nil {
		<-srvErr
		return rrResult{}, fmt.Errorf("rr server in %s: %w", t.b.ns.name, err)
	}
	var rtts []float64
	cliErr := t.a.ns.doPinned(cpus.client, cpus.ok, func() error {
		var err error
		rtts, err = rrClient(ctx, addr, n)
		return err
	})
	sErr := <-srvErr
	if cliErr != nil {
		return rrResult{}, fmt.Errorf("rr client in %s: %w", t.a.ns.name, cliErr)
	}
	if sErr != nil {
		return rrResult{}, fmt.Errorf("rr server in %s: %w", t.b.ns.name, sErr)
	}
	return rrResult{p50: percentile(rtts, 50), p99: percentile(rtts, 99)}, nil
}

func setTimeouts(fd int) error {
	tv := unix.NsecToTimeval(int64(rrIOTimeout))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return err
	}
	return unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
}

// rrServe accepts one connection and echoes each byte until the client
// closes it. ready gets nil once it listens.
func rrServe(addr unix.SockaddrInet4, ready chan<- error) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(ln)
	_ = unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := setTimeouts(ln); err != nil { // SO_RCVTIMEO bounds accept too
		return fmt.Errorf("set timeouts: %w", err)
	}
	if err := unix.Bind(ln, &addr); err != nil {
		return fmt.Errorf("bind port %d: %w", addr.Port, err)
	}
	if err := unix.Listen(ln, 1); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	ready <- nil
	fd, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
	if err != nil {
		return fmt.Errorf("accept: %w", err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	if err := setTimeouts(fd); err != nil {
		return fmt.Errorf("set timeouts: %w", err)
	}
	b := []byte{0}
	for {
		n, err := unix.Read(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if n == 0 {
			return nil // client done
		}
		if _, err := writeFull(fd, b); err != nil {
			return fmt.Errorf("write: %w", err)
		}
	}
}

func rrClient(ctx context.Context, addr unix.SockaddrInet4, n int) ([]float64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := setTimeouts(fd); err != nil {
		return nil, fmt.Errorf("set timeouts: %w", err)
	}
	if err := unix.Connect(fd, &addr); err != nil {
		return nil, fmt.Errorf("connect %v:%d: %w", addr.Addr, addr.Port, err)
	}
	_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	rtts := make([]float64, 0, n)
	b := []byte{'x'}
	for i := range rrWarmup + n {
		if i%1000 == 0 && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		t0 := time.Now()
		if _, err := writeFull(fd, b); err != nil {
			return nil, fmt.Errorf("write round trip %d: %w", i, err)
		}
		if err := readOne(fd, b); err != nil {
			return nil, fmt.Errorf("read round trip %d: %w", i, err)
		}
		if i >= rrWarmup {
			rtts = append(rtts, float64(time.Since(t0))/float64(time.Microsecond))
		}
	}
	return rtts, nil
}

func readOne(fd int, b []byte) error {
	for {
		n, err := unix.Read(fd, b)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EAGAIN):
			return fmt.Errorf("no answer within %v", rrIOTimeout)
		case err != nil:
			return err
		case n == 0:
			return errors.New("connection closed by server")
		}
		return nil
	}
}

func writeFull(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return n, err
	}
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-tm.C:
		return nil
	}
}
