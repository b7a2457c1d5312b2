package mirror

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

func TestParseConfig(t *testing.T) {
	for _, c := range []struct {
		params map[string]string
		ok     bool
		kind   SinkKind
	}{
		{map[string]string{"sink": "/tmp/x.pcapng"}, true, SinkPcapng},
		{map[string]string{"sink": "erspan2://10.0.0.9"}, true, SinkERSPAN2},
		{map[string]string{"sink": "erspan3://10.0.0.9", "session": "1023"}, true, SinkERSPAN3},
		{map[string]string{"sink": "erspan3://fd00::1"}, false, 0},
		{map[string]string{"sink": "erspan2://collector"}, false, 0},
		{map[string]string{"sink": "udp://10.0.0.9"}, false, 0},
		{map[string]string{"sink": "x", "cidr": "fd00::/8"}, true, SinkPcapng},
		{map[string]string{"sink": "x", "match": "src=fd00::/8,dport=443-444,bidir"}, true, SinkPcapng},
		{map[string]string{"sink": "x", "match": "dport=80", "port": "53"}, false, 0},
		{map[string]string{"sink": "x", "match": "dst=10.0.0.0/33"}, false, 0},
		{map[string]string{"sink": "x", "port": "53", "proto": "1"}, false, 0},
		{map[string]string{"sink": "x", "session": "1024"}, false, 0},
		{map[string]string{}, false, 0},
	} {
		p, err := sdk.ValidateParams(Descriptor.Params, c.params)
		var cfg Config
		if err == nil {
			cfg, err = ParseConfig(p)
		}
		if (err == nil) != c.ok {
			t.Errorf("%v: err %v, want ok %v", c.params, err, c.ok)
			continue
		}
		if err != nil && !errors.Is(err, sdk.ErrInvalidParam) {
			t.Errorf("%v: %v does not wrap ErrInvalidParam", c.params, err)
		}
		if c.ok && cfg.Kind != c.kind {
			t.Errorf("%v: kind %v, want %v", c.params, cfg.Kind, c.kind)
		}
	}
}

func TestERSPANHeaders(t *testing.T) {
	r := &Record{Seq: 0x01020304, Ifindex: 7, OrigLen: 100, Dir: sdk.ToVM, Data: []byte{0xaa, 0xbb}}
	v2 := appendERSPAN(nil, false, 42, r, 0)
	want2 := []byte{0x10, 0x00, 0x88, 0xbe, 1, 2, 3, 4, 0x10, 0x00, 0x04, 42, 0, 0, 0, 7, 0xaa, 0xbb}
	if !bytes.Equal(v2, want2) {
		t.Errorf("type II:\n got % x\nwant % x", v2, want2)
	}
	v3 := appendERSPAN(nil, true, 42, r, 1_000_000_000)
	want3 := []byte{0x10, 0x00, 0x22, 0xeb, 1, 2, 3, 4, 0x20, 0x00, 0x04, 42, 0, 0, 0x27, 0x10, 0, 0, 0x80, 0x08, 0xaa, 0xbb}
	if !bytes.Equal(v3, want3) {
		t.Errorf("type III:\n got % x\nwant % x", v3, want3)
	}
}

// TestPcapngReadBack: two vNICs share a file; tshark reads both interfaces
// and the packets with their direction flags, lengths and bytes.
func TestPcapngReadBack(t *testing.T) {
	testkit.Need(t, testkit.Tshark)
	dir := t.TempDir()
	path := filepath.Join(dir, "m.pcapng")
	w1, id1, rel1, err := openPcapng(path, "vnet1", 11, 9216)
	if err != nil {
		t.Fatal(err)
	}
	w2, id2, rel2, err := openPcapng(path, "vnet2", 12, 128)
	if err != nil {
		t.Fatal(err)
	}
	if w1 != w2 || id1 != 0 || id2 != 1 {
		t.Fatalf("shared file: ids %d %d", id1, id2)
	}
	frames := [][]byte{bytes.Repeat([]byte{1}, 61), bytes.Repeat([]byte{2}, 64)}
	w1.writePacket(id1, 1_700_000_000_123456789, &Record{Seq: 1, OrigLen: 61, Dir: sdk.FromVM, Data: frames[0]})
	w2.writePacket(id2, 1_700_000_000_223456789, &Record{Seq: 1, OrigLen: 1500, Dir: sdk.ToVM, Data: frames[1]})
	if err := rel1(); err != nil {
		t.Fatal(err)
	}
	if err := rel2(); err != nil {
		t.Fatal(err)
	}
	out := testkit.TsharkFields(t, path, "frame.interface_name", "frame.packet_flags_direction", "frame.cap_len", "frame.len", "frame.time_epoch", "frame.comment")
	want := [][]string{
		{"vnet1", "0x00000001", "61", "61", "1700000000.123456789", "mirror seq 1 from-vm"},
		{"vnet2", "0x00000002", "64", "1500", "1700000000.223456789", "mirror seq 1 to-vm"},
	}
	if !reflect.DeepEqual(out, want) {
		t.Errorf("tshark:\n got %q\nwant %q", out, want)
	}
	got := readPcapngFrames(t, path)
	if len(got) != 2 || !bytes.Equal(got[0], frames[0]) || !bytes.Equal(got[1], frames[1]) {
		t.Errorf("frames read back: % x", got)
	}
}

// tsharkFields runs tshark -r file -T fields on the fields, one row a packet.

// readPcapngFrames has tshark convert a pcapng file to pcap (so the bytes
// are what tshark read, not what our writer meant) and returns the frames.
func readPcapngFrames(t *testing.T, path string) [][]byte {
	t.Helper()
	out := path + ".pcap"
	if b, err := exec.Command("tshark", "-r", path, "-F", "pcap", "-w", out).CombinedOutput(); err != nil {
		t.Fatalf("tshark convert: %v: %s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 24 || binary.LittleEndian.Uint32(b) != 0xa1b2c3d4 && binary.LittleEndian.Uint32(b) != 0xa1b23c4d {
		t.Fatalf("%s: not a little-endian pcap file", out)
	}
	var frames [][]byte
	for b = b[24:]; len(b) >= 16; {
		n := int(binary.LittleEndian.Uint32(b[8:]))
		if 16+n > len(b) {
			t.Fatalf("%s: truncated record", out)
		}
		frames = append(frames, b[16:16+n])
		b = b[16+n:]
	}
	return frames
}

// writePcap writes Ethernet frames as a pcap file.
func writePcap(t *testing.T, path string, frames [][]byte) {
	t.Helper()
	var b []byte
	b = binary.LittleEndian.AppendUint32(b, 0xa1b2c3d4)
	b = binary.LittleEndian.AppendUint16(b, 2)
	b = binary.LittleEndian.AppendUint16(b, 4)
	b = binary.LittleEndian.AppendUint64(b, 0)
	b = binary.LittleEndian.AppendUint32(b, 65535)
	b = binary.LittleEndian.AppendUint32(b, 1)
	for i, f := range frames {
		b = binary.LittleEndian.AppendUint32(b, uint32(i))
		b = binary.LittleEndian.AppendUint32(b, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = binary.LittleEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestParseRecord(t *testing.T) {
	raw := make([]byte, hdrLen+3)
	binary.LittleEndian.PutUint64(raw, 99)
	binary.LittleEndian.PutUint32(raw[8:], 5)
	binary.LittleEndian.PutUint32(raw[12:], 3)
	binary.LittleEndian.PutUint32(raw[16:], 1000)
	binary.LittleEndian.PutUint16(raw[20:], 3)
	raw[22] = 1
	var r Record
	if err := parseRecord(raw, &r); err != nil || r.Seq != 5 || r.MonoNS != 99 || r.Dir != sdk.ToVM || len(r.Data) != 3 || r.OrigLen != 1000 {
		t.Fatalf("%+v %v", r, err)
	}
	binary.LittleEndian.PutUint16(raw[20:], 4)
	if err := parseRecord(raw, &r); err == nil {
		t.Fatal("overlong cap_len accepted")
	}
}
