package cryptlab

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"slices"
	"sync"

	"golang.org/x/sys/unix"
)

// Capture records every frame on any interface of the underlay namespace
// (the bridge forwards between its ports without passing frames up to
// br0), until Stop or the test's cleanup.
type Capture struct {
	mu     sync.Mutex
	frames [][]byte
	stop   func()
}

// Capture starts recording the underlay.
func (m *Mesh) Capture() *Capture {
	m.t.Helper()
	c := &Capture{}
	var fd int
	err := m.Underlay.Do(func() error {
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: 0})
	})
	if err != nil {
		m.t.Fatalf("capture on the underlay: %v", err)
	}
	tv := unix.Timeval{Usec: 100000}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1<<16)
		stopping := false
		for {
			select {
			case <-quit:
				stopping = true
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if stopping {
					return // drained: nothing for 100 ms after stop
				}
				continue
			}
			c.mu.Lock()
			c.frames = append(c.frames, bytes.Clone(buf[:n]))
			c.mu.Unlock()
		}
	}()
	var once sync.Once
	c.stop = func() {
		once.Do(func() {
			close(quit)
			<-done
			unix.Close(fd)
		})
	}
	m.t.Cleanup(c.stop)
	return c
}

// Stop ends the capture (after draining what the kernel holds).
func (c *Capture) Stop() { c.stop() }

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Contains reports whether any captured frame holds needle.
func (c *Capture) Contains(needle []byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range c.frames {
		if bytes.Contains(f, needle) {
			return true
		}
	}
	return false
}

// Frames returns the frames captured so far (shared: not to be changed).
func (c *Capture) Frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.frames)
}

// Reset forgets what was captured.
func (c *Capture) Reset() {
	c.mu.Lock()
	c.frames = nil
	c.mu.Unlock()
}

// Summary classifies captured IP frames.
type Summary struct {
	Frames    int
	WireGuard int // UDP to or from the WireGuard port (IPv4 or IPv6)
	// Between counts IP packets whose source and destination are both
	// among the addresses asked about (a flow seen in clear).
	Between int
}

// Summarize counts the WireGuard frames and the clear packets between
// any two of addrs.
func (c *Capture) Summarize(addrs ...netip.Addr) Summary {
	c.mu.Lock()
	defer c.mu.Unlock()
	var s Summary
	for _, f := range c.frames {
		s.Frames++
		src, dst, l4, proto, ok := ipInfo(f)
		if !ok {
			continue
		}
		if proto == unix.IPPROTO_UDP && len(l4) >= 4 &&
			(binary.BigEndian.Uint16(l4) == ListenPort || binary.BigEndian.Uint16(l4[2:]) == ListenPort) {
			s.WireGuard++
			continue
		}
		var in [2]bool
		for _, a := range addrs {
			in[0] = in[0] || a == src
			in[1] = in[1] || a == dst
		}
		if in[0] && in[1] {
			s.Between++
		}
	}
	return s
}

// ipInfo returns an IPv4 or IPv6 frame's addresses, transport bytes and
// protocol (IPv6: the fixed header's next header).
func ipInfo(f []byte) (src, dst netip.Addr, l4 []byte, proto byte, ok bool) {
	if len(f) < 14 {
		return
	}
	switch binary.BigEndian.Uint16(f[12:14]) {
	case unix.ETH_P_IP:
		ip := f[14:]
		if len(ip) < 20 {
			return
		}
		ihl := int(ip[0]&0xf) * 4
		if len(ip) < ihl {
			return
		}
		return netip.AddrFrom4([4]byte(ip[12:16])), netip.AddrFrom4([4]byte(ip[16:20])), ip[ihl:], ip[9], true
	case unix.ETH_P_IPV6:
		ip := f[14:]
		if len(ip) < 40 {
			return
		}
		return netip.AddrFrom16([16]byte(ip[8:24])), netip.AddrFrom16([16]byte(ip[24:40])), ip[40:], ip[6], true
	}
	return
}
