package filterd

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// A state bundle carries the movable state of one vNIC's filters from one
// host to another (GET/PUT /v1/vnics/{vnic}/state):
//
//	"VNICFILTER-STATE\n"  magic
//	u32 LE                bundle version (1)
//	u32 LE                length of the JSON header
//	JSON                  bundleHeader
//	payloads              one per header slot, in order, each its length
//
// Every payload carries its filter's name, its format and a SHA-256, all
// checked before a filter reads a byte of it.
const (
	bundleMagic   = "VNICFILTER-STATE\n"
	bundleVersion = 1
	// maxBundleHeader and maxBundle bound what an import reads.
	maxBundleHeader = 1 << 20
	maxBundle       = 1 << 30
)

// ErrBadBundle: a state bundle is not one, is damaged, or does not fit
// the destination chain.
var ErrBadBundle = errors.New("bad state bundle")

type bundleHeader struct {
	VNIC       string        `json:"vnic"`
	ExportedAt time.Time     `json:"exported_at"`
	Slots      []bundleEntry `json:"slots"`
}

type bundleEntry struct {
	Slot    int    `json:"slot"`
	Filter  string `json:"filter"`
	Version string `json:"version"`
	Format  uint32 `json:"format"`
	Length  int64  `json:"length"`
	SHA256  string `json:"sha256"`
}

// bundlePart is one slot's payload with its description.
type bundlePart struct {
	bundleEntry
	data []byte
}

func writeBundle(w io.Writer, vnic string, at time.Time, parts []bundlePart) error {
	h := bundleHeader{VNIC: vnic, ExportedAt: at.UTC(), Slots: []bundleEntry{}}
	for _, p := range parts {
		sum := sha256.Sum256(p.data)
		e := p.bundleEntry
		e.Length, e.SHA256 = int64(len(p.data)), hex.EncodeToString(sum[:])
		h.Slots = append(h.Slots, e)
	}
	hb, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var pre bytes.Buffer
	pre.WriteString(bundleMagic)
	_ = binary.Write(&pre, binary.LittleEndian, uint32(bundleVersion))
	_ = binary.Write(&pre, binary.LittleEndian, uint32(len(hb)))
	pre.Write(hb)
	if _, err := w.Write(pre.Bytes()); err != nil {
		return err
	}
	for _, p := range parts {
		if _, err := w.Write(p.data); err != nil {
			return err
		}
	}
	return nil
}

// readBundle parses and checks a whole bundle: magic, version, header,
// every payload's length and checksum. It never panics on any input.
func readBundle(b []byte) (*bundleHeader, []bundlePart, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadBundle, fmt.Sprintf(format, a...))
	}
	if len(b) > maxBundle {
		return nil, nil, bad("%d bytes, at most %d", len(b), maxBundle)
	}
	if !bytes.HasPrefix(b, []byte(bundleMagic)) {
		return nil, nil, bad("not a vnicfilter state bundle (no %q magic)", bundleMagic[:len(bundleMagic)-1])
	}
	b = b[len(bundleMagic):]
	if len(b) < 8 {
		return nil, nil, bad("truncated after the magic")
	}
	if v := binary.LittleEndian.Uint32(b); v != bundleVersion {
		return nil, nil, bad("bundle version %d, this filterd reads version %d", v, bundleVersion)
	}
	hl := binary.LittleEndian.Uint32(b[4:])
	b = b[8:]
	if hl > maxBundleHeader || int(hl) > len(b) {
		return nil, nil, bad("header of %d bytes, %d left", hl, len(b))
	}
	var h bundleHeader
	dec := json.NewDecoder(bytes.NewReader(b[:hl]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, nil, bad("header: %v", err)
	}
	b = b[hl:]
	parts := make([]bundlePart, 0, len(h.Slots))
	seen := map[int]bool{}
	for i, e := range h.Slots {
		switch {
		case e.Length < 0 || e.Length > int64(len(b)):
			return nil, nil, bad("slot %d (%s): payload of %d bytes, %d left: truncated", e.Slot, e.Filter, e.Length, len(b))
		case seen[e.Slot]:
			return nil, nil, bad("slot %d appears twice", e.Slot)
		case e.Filter == "":
			return nil, nil, bad("entry %d names no filter", i)
		}
		seen[e.Slot] = true
		data := b[:e.Length]
		b = b[e.Length:]
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != e.SHA256 {
			return nil, nil, bad("slot %d (%s): checksum mismatch: the payload is damaged", e.Slot, e.Filter)
		}
		parts = append(parts, bundlePart{bundleEntry: e, data: data})
	}
	if len(b) != 0 {
		return nil, nil, bad("%d bytes after the last payload", len(b))
	}
	return &h, parts, nil
}
