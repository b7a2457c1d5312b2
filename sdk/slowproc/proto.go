package slowproc

import (
	"encoding/binary"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// FDEnv names the environment variable holding the socket's descriptor
// number in the filter process.
const FDEnv = "VNICFILTER_SLOWPATH_FD"

// MaxMsg bounds one message on the socket.
const MaxMsg = 1 << 20

// Message operations.
const (
	OpHello  = "hello"
	OpOpen   = "open"
	OpOpened = "opened"
	OpClose  = "close"
	OpPing   = "ping"
	OpPong   = "pong"
)

// Msg is one message on the filter socket; Op says which fields apply.
type Msg struct {
	Op string `json:"op"`

	// hello
	ABI     int    `json:"abi,omitempty"`
	Filter  string `json:"filter,omitempty"`
	Version string `json:"version,omitempty"`
	PID     int    `json:"pid,omitempty"`

	// open, opened, close: the instance, numbered by filterd.
	ID uint64 `json:"id,omitempty"`
	// open
	VNIC     *sdk.VNIC         `json:"vnic,omitempty"`
	Slot     int               `json:"slot,omitempty"`
	Dirs     []sdk.Direction   `json:"dirs,omitempty"` // one tap fd each, in this order
	FailMode sdk.FailMode      `json:"failmode,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
	// opened: why the instance could not start ("" if it did).
	Error string `json:"error,omitempty"`

	// ping, pong
	Seq    uint64   `json:"seq,omitempty"`
	Status []Status `json:"status,omitempty"`
}

// Status is one instance direction as a pong reports it.
type Status struct {
	ID      uint64        `json:"id"`
	Dir     sdk.Direction `json:"dir"`
	Frames  uint64        `json:"frames"`
	Passed  uint64        `json:"passed"`
	Dropped uint64        `json:"dropped"`
	Errors  uint64        `json:"errors"`
	// Calls counts Process entries and exits: odd while a call runs.
	// filterd's watchdog compares it between pongs (as for in-process
	// slow paths), so the frame loop never reads the clock.
	Calls    uint64        `json:"calls"`
	Panicked bool          `json:"panicked,omitempty"`
	Counters []sdk.Counter `json:"counters,omitempty"`
}

// VnetHdrLen is the size of struct virtio_net_hdr in front of every frame
// a punt tap hands out and takes back.
const VnetHdrLen = 10

// DecodeVnetHdr reads struct virtio_net_hdr (little-endian).
func DecodeVnetHdr(b []byte) sdk.GSO {
	return sdk.GSO{
		Flags:      b[0],
		Type:       b[1],
		HdrLen:     binary.LittleEndian.Uint16(b[2:]),
		Size:       binary.LittleEndian.Uint16(b[4:]),
		CsumStart:  binary.LittleEndian.Uint16(b[6:]),
		CsumOffset: binary.LittleEndian.Uint16(b[8:]),
	}
}

// EncodeVnetHdr writes g as struct virtio_net_hdr (little-endian).
func EncodeVnetHdr(b []byte, g sdk.GSO) {
	b[0], b[1] = g.Flags, g.Type
	binary.LittleEndian.PutUint16(b[2:], g.HdrLen)
	binary.LittleEndian.PutUint16(b[4:], g.Size)
	binary.LittleEndian.PutUint16(b[6:], g.CsumStart)
	binary.LittleEndian.PutUint16(b[8:], g.CsumOffset)
}
