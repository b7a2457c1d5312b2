package filterd

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func sampleBundle(t testing.TB) []byte {
	var buf bytes.Buffer
	err := writeBundle(&buf, "vnet7", time.Unix(1700000000, 0), []bundlePart{
		{bundleEntry: bundleEntry{Slot: 0, Filter: "firewall", Version: "1.0.0", Format: 1}, data: []byte("flows...")},
		{bundleEntry: bundleEntry{Slot: 2, Filter: "dlb", Version: "1.0.0", Format: 3}, data: []byte{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBundleRoundTrip(t *testing.T) {
	h, parts, err := readBundle(sampleBundle(t))
	if err != nil {
		t.Fatal(err)
	}
	if h.VNIC != "vnet7" || len(parts) != 2 || string(parts[0].data) != "flows..." || parts[1].Format != 3 || parts[1].Slot != 2 {
		t.Errorf("read back %+v %+v", h, parts)
	}
}

func TestBundleErrors(t *testing.T) {
	good := sampleBundle(t)
	flip := func(i int) []byte { b := bytes.Clone(good); b[i] ^= 0xff; return b }
	for _, tc := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "no \"VNICFILTER-STATE\" magic"},
		{"other file", []byte("{\"json\": true}"), "magic"},
		{"version", flip(len(bundleMagic)), "bundle version"},
		{"header length", flip(len(bundleMagic) + 4 + 3), "header of"},
		{"damaged payload", flip(len(good) - 1), "checksum mismatch"},
		{"truncated", good[:len(good)-3], "truncated"},
		{"trailing", append(bytes.Clone(good), 'x'), "after the last payload"},
		{"bad header json", bytes.Replace(good, []byte(`"vnic"`), []byte(`"vnix"`), 1), "unknown field"},
	} {
		_, _, err := readBundle(tc.b)
		if !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadBundle naming %q", tc.name, err, tc.want)
		}
	}
}

// FuzzReadBundle: any input is refused or read, never a panic, and what
// is read is what the checksums vouch for.
func FuzzReadBundle(f *testing.F) {
	f.Add(sampleBundle(f))
	f.Add([]byte(bundleMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, parts, err := readBundle(b)
		if err != nil {
			return
		}
		if len(parts) != len(h.Slots) {
			t.Fatalf("%d parts for %d slots", len(parts), len(h.Slots))
		}
		var buf bytes.Buffer
		if err := writeBundle(&buf, h.VNIC, h.ExportedAt, parts); err != nil {
			t.Fatal(err)
		}
		if _, _, err := readBundle(buf.Bytes()); err != nil {
			t.Fatalf("re-written bundle refused: %v", err)
		}
	})
}

// A version 1 bundle (SHA-256 checksums, before CRC-32C) from an older
// filterd is still read, and its checksum still checked.
func TestBundleVersion1(t *testing.T) {
	data := []byte("flows...")
	sum := sha256.Sum256(data)
	hb, err := json.Marshal(bundleHeader{VNIC: "vnet7", Slots: []bundleEntry{{Slot: 0, Filter: "firewall", Version: "1.0.0", Format: 2, Length: int64(len(data)), SHA256: hex.EncodeToString(sum[:])}}})
	if err != nil {
		t.Fatal(err)
	}
	b := append([]byte(bundleMagic), 1, 0, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(hb)))
	b = append(append(b, hb...), data...)
	if _, parts, err := readBundle(b); err != nil || string(parts[0].data) != "flows..." {
		t.Fatalf("version 1 bundle: %v", err)
	}
	b[len(b)-1] ^= 1
	if _, _, err := readBundle(b); !errors.Is(err, ErrBadBundle) || !strings.Contains(err.Error(), "checksum mismatch") {
		t.Fatalf("damaged version 1 bundle: %v", err)
	}
}
