package sdk

import (
	"encoding/binary"
	"fmt"
	"io"
)

// StateMover is an optional interface of a FastPath: the per-vNIC state
// that must follow the VM when it moves to another host (the firewall's
// connection table, the load balancer's pinned flows), so a default-deny
// policy never cuts a live session.
//
// filterd frames each slot's payload (filter name and version, the
// filter's own format number, length, CRC-32C) in a versioned bundle
// (GET/PUT /v1/vnics/{vnic}/state, `vfctl vnic export|import`) and checks
// the frame before ImportState sees a byte: a filter reads only payloads
// its own ExportState wrote, intact.
type StateMover interface {
	// StateFormat numbers the payload layout ExportState writes; bump it
	// whenever the layout changes. ImportState is only handed payloads
	// of this format.
	StateFormat() uint32
	// ExportState writes the movable state. Times are written relative
	// (remaining lifetime), never as this host's clock.
	ExportState(w io.Writer) error
	// ImportState adds the entries of a payload written by ExportState of
	// the same filter on another host, returning how many it took. The
	// destination re-validates them against its own configuration (an
	// entry the local policy would not allow must not pass because it was
	// imported). A malformed payload is an error wrapping
	// ErrInvalidParam, and nothing already running may be lost.
	ImportState(r io.Reader) (int, error)
}

// StateTableHeaderLen is the length of a table payload's header: {u32 key
// size, u32 value size, u64 count}, little-endian. A table payload (the
// firewall's connections, the load balancer's pins) is that header and
// count entries of key size + value size bytes.
const StateTableHeaderLen = 16

// PutStateTableHeader writes a table payload's header into out[:16].
func PutStateTableHeader(out []byte, keySize, valSize, count int) {
	le := binary.LittleEndian
	le.PutUint32(out[0:], uint32(keySize))
	le.PutUint32(out[4:], uint32(valSize))
	le.PutUint64(out[8:], uint64(count))
}

// ReadStateTable reads a whole table payload from r before anything is
// imported (a truncated one imports nothing): the header, whose entry
// sizes must be keySize and valSize and whose count at most maxEntries
// (the table's room), then the entries, then nothing. It returns the
// entries' bytes and their count. Errors wrap ErrInvalidParam and read
// "<filter> state: …"; unit and units name an entry ("flow", "flows").
func ReadStateTable(r io.Reader, filter, unit, units string, keySize, valSize int, maxEntries uint64) ([]byte, int, error) {
	var hdr [StateTableHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, 0, fmt.Errorf("%w: %s state: header: %v", ErrInvalidParam, filter, err)
	}
	le := binary.LittleEndian
	ks, vs, count := le.Uint32(hdr[0:]), le.Uint32(hdr[4:]), le.Uint64(hdr[8:])
	if ks != uint32(keySize) || vs != uint32(valSize) {
		return nil, 0, fmt.Errorf("%w: %s state: entries of %d+%d bytes, this %s's are %d+%d", ErrInvalidParam, filter, ks, vs, filter, keySize, valSize)
	}
	if count > maxEntries {
		return nil, 0, fmt.Errorf("%w: %s state: %d %s, the connection table here holds %d (raise conntrack_size)", ErrInvalidParam, filter, count, units, maxEntries)
	}
	entry := keySize + valSize
	raw := make([]byte, int(count)*entry)
	if n, err := io.ReadFull(r, raw); err != nil {
		return nil, 0, fmt.Errorf("%w: %s state: %s %d of %d: %v", ErrInvalidParam, filter, unit, n/entry, count, err)
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n != 0 {
		return nil, 0, fmt.Errorf("%w: %s state: data after %d %s", ErrInvalidParam, filter, count, units)
	}
	return raw, int(count), nil
}
