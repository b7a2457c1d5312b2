package mirror

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// pcapng block types and options (draft-ietf-opsawg-pcapng).
const (
	blockSHB = 0x0A0D0D0A
	blockIDB = 0x00000001
	blockEPB = 0x00000006

	optEnd      = 0
	optComment  = 1
	shbUserAppl = 4
	ifName      = 2
	ifDesc      = 3
	ifTsresol   = 9
	epbFlags    = 2

	linkEthernet = 1

	// epb_flags bits 0-1: direction.
	flagInbound  = 1
	flagOutbound = 2
)

// epbDirection maps a direction to the EPB flag, as seen at the VM's vNIC
// (the host end of its tap): frames the VM sends come in on it (inbound),
// frames delivered to the VM go out of it (outbound).
func epbDirection(d sdk.Direction) uint32 {
	if d == sdk.FromVM {
		return flagInbound
	}
	return flagOutbound
}

// pcapngWriter writes one pcapng section. It is safe for concurrent use:
// several instances (vNICs) may share a file, each with its own interface.
type pcapngWriter struct {
	mu     sync.Mutex
	w      *bufio.Writer
	c      io.Closer
	nextID uint32
	buf    []byte
}

func newPcapngWriter(w io.Writer, c io.Closer) (*pcapngWriter, error) {
	p := &pcapngWriter{w: bufio.NewWriterSize(w, 1<<16), c: c}
	var body []byte
	body = binary.LittleEndian.AppendUint32(body, 0x1A2B3C4D)
	body = binary.LittleEndian.AppendUint16(body, 1)
	body = binary.LittleEndian.AppendUint16(body, 0)
	body = binary.LittleEndian.AppendUint64(body, ^uint64(0)) // section length unknown
	body = appendOpt(body, shbUserAppl, []byte("vnicfilter mirror"))
	body = appendOpt(body, optEnd, nil)
	if err := p.block(blockSHB, body); err != nil {
		return nil, err
	}
	return p, p.w.Flush()
}

func appendOpt(b []byte, code uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func (p *pcapngWriter) block(typ uint32, body []byte) error {
	n := uint32(12 + len(body))
	var h [8]byte
	binary.LittleEndian.PutUint32(h[0:], typ)
	binary.LittleEndian.PutUint32(h[4:], n)
	p.w.Write(h[:])
	p.w.Write(body)
	_, err := p.w.Write(h[4:8])
	return err
}

// addInterface writes an IDB for a vNIC and returns its interface id.
func (p *pcapngWriter) addInterface(name, desc string, snaplen uint32) (uint32, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var body []byte
	body = binary.LittleEndian.AppendUint16(body, linkEthernet)
	body = binary.LittleEndian.AppendUint16(body, 0)
	body = binary.LittleEndian.AppendUint32(body, snaplen)
	body = appendOpt(body, ifName, []byte(name))
	body = appendOpt(body, ifDesc, []byte(desc))
	body = appendOpt(body, ifTsresol, []byte{9}) // nanoseconds
	body = appendOpt(body, optEnd, nil)
	if err := p.block(blockIDB, body); err != nil {
		return 0, err
	}
	id := p.nextID
	p.nextID++
	return id, p.w.Flush()
}

// writePacket writes an EPB: the frame, its original length, the direction
// flag and a comment carrying the mirror sequence number.
func (p *pcapngWriter) writePacket(iface uint32, unixNS int64, r *Record) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	b := p.buf[:0]
	ts := uint64(unixNS)
	b = binary.LittleEndian.AppendUint32(b, iface)
	b = binary.LittleEndian.AppendUint32(b, uint32(ts>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(ts))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(r.Data)))
	b = binary.LittleEndian.AppendUint32(b, r.OrigLen)
	b = append(b, r.Data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	var fl [4]byte
	binary.LittleEndian.PutUint32(fl[:], epbDirection(r.Dir))
	b = appendOpt(b, epbFlags, fl[:])
	b = appendOpt(b, optComment, fmt.Appendf(nil, "mirror seq %d %s", r.Seq, r.Dir))
	b = appendOpt(b, optEnd, nil)
	p.buf = b
	return p.block(blockEPB, b)
}

func (p *pcapngWriter) flush() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Flush()
}

// Shared pcapng files: instances naming the same path share one section,
// one interface per vNIC.
var pcapngFiles = struct {
	sync.Mutex
	m map[string]*sharedPcapng
}{m: map[string]*sharedPcapng{}}

type sharedPcapng struct {
	w    *pcapngWriter
	refs int
}

// openPcapng opens (or joins) path and adds the vNIC's interface. The file
// is appended to: a restarted filterd starts a new section.
func openPcapng(path, vnic string, ifindex int, snaplen uint32) (*pcapngWriter, uint32, func() error, error) {
	pcapngFiles.Lock()
	defer pcapngFiles.Unlock()
	s := pcapngFiles.m[path]
	if s == nil {
		var f io.WriteCloser
		var err error
		if strings.HasPrefix(path, sdk.StreamPrefix) {
			// An API stream (vfctl capture): the pcapng goes to the client.
			f, err = sdk.OpenStream(path)
		} else {
			f, err = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		}
		if err != nil {
			return nil, 0, nil, fmt.Errorf("%w: parameter \"sink\": %v", sdk.ErrInvalidParam, err)
		}
		w, err := newPcapngWriter(f, f)
		if err != nil {
			f.Close()
			return nil, 0, nil, fmt.Errorf("write %s: %w", path, err)
		}
		s = &sharedPcapng{w: w}
		pcapngFiles.m[path] = s
	}
	id, err := s.w.addInterface(vnic, fmt.Sprintf("vnicfilter mirror of vNIC %s (ifindex %d)", vnic, ifindex), snaplen)
	if err != nil {
		if s.refs == 0 {
			s.w.c.Close()
			delete(pcapngFiles.m, path)
		}
		return nil, 0, nil, fmt.Errorf("write %s: %w", path, err)
	}
	s.refs++
	release := func() error {
		pcapngFiles.Lock()
		defer pcapngFiles.Unlock()
		err := s.w.flush()
		s.refs--
		if s.refs == 0 {
			delete(pcapngFiles.m, path)
			if cerr := s.w.c.Close(); err == nil {
				err = cerr
			}
		}
		return err
	}
	return s.w, id, release, nil
}
