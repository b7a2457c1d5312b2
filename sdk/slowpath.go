package sdk

import (
	"fmt"
	"io"
	"log/slog"
)

// SlowVerdict is a slow path's decision on one frame.
type SlowVerdict uint8

const (
	// Pass re-injects the frame; the chain resumes at the next slot.
	Pass SlowVerdict = iota
	// Drop discards the frame.
	Drop
)

func (v SlowVerdict) String() string {
	switch v {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	}
	return fmt.Sprintf("verdict(%d)", uint8(v))
}

// GSO is the segmentation offload metadata a frame arrives with (the
// kernel's struct virtio_net_hdr). A GSO frame is one large frame the
// kernel would segment on the wire; passing it back unchanged keeps the
// offload.
type GSO struct {
	Flags      uint8  `json:"flags"`
	Type       uint8  `json:"type"` // VIRTIO_NET_HDR_GSO_*: 0 none, 1 TCPv4, 3 UDP, 4 TCPv6, 5 UDP_L4
	HdrLen     uint16 `json:"hdr_len"`
	Size       uint16 `json:"size"`
	CsumStart  uint16 `json:"csum_start"`
	CsumOffset uint16 `json:"csum_offset"`
}

// Frame is one Ethernet frame handed to a slow path.
type Frame struct {
	// Direction the frame is travelling.
	Direction Direction
	// GSO metadata; zero for a plain frame.
	GSO GSO
	// Data is the Ethernet frame. It is valid only during Process; a
	// handler that keeps it must copy it. A handler may modify it in
	// place (same length) to rewrite the frame.
	Data []byte
}

// SlowPath is the Go part of a filter instance. filterd calls Process for
// each frame the fast path punts, from one goroutine per direction, so an
// implementation handling both directions must be safe for two concurrent
// callers. A panic or a Process call that stalls beyond the runner's
// watchdog fails the instance according to its failure mode; filterd stays
// up.
type SlowPath interface {
	Process(f *Frame) SlowVerdict
	io.Closer
}

// SlowPathContext is what filterd hands a filter's SlowPath function.
type SlowPathContext struct {
	// Instance describes the vNIC, slot and parameters.
	Instance Instance
	// Logger is scoped to the instance.
	Logger *slog.Logger
}

// SlowCounters is implemented by slow paths that report counters.
type SlowCounters interface {
	Counters() []Counter
}
