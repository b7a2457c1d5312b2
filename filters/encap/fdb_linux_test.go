package encap

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const fdbTable = `{"segments": [{"vni": 100, "hosts": ["192.0.2.1", "192.0.2.2"]},
              {"vni": 200, "hosts": ["192.0.2.2"]}],
 "entries": [{"vni": 100, "mac": "02:00:00:00:00:01", "host": "192.0.2.1", "ips": ["10.0.0.1"]},
             {"vni": 100, "mac": "02:00:00:00:00:02", "host": "192.0.2.2", "ips": ["10.0.0.2"]},
             {"vni": 200, "mac": "02:00:00:00:00:01", "host": "192.0.2.2"}]}`

// TestHostFDBChanges checks the table logic of HostFDB without instances
// (no kernel): generations, merges by key, errors named after the
// request, refused changes leaving the table as it was, persistence.
func TestHostFDBChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state", "encap-fdb.json")
	h, err := OpenHostFDB(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Table(0); !errors.Is(err, ErrNoTable) {
		t.Fatalf("empty HostFDB: %v, want ErrNoTable", err)
	}
	if _, err := h.Merge(Table{}, 0); !errors.Is(err, ErrNoTable) {
		t.Fatalf("merge before a table: %v, want ErrNoTable", err)
	}
	f, err := ParseFIB([]byte(fdbTable))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := h.Replace(f, 0)
	if err != nil || ch.Generation != 1 {
		t.Fatalf("first table: %+v, %v", ch, err)
	}
	f.Generation = 1
	if _, err := h.Replace(f, 0); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("same generation again: %v, want ErrStaleGeneration", err)
	}
	if _, err := h.Replace(f, 7); !errors.Is(err, ErrStaleGeneration) {
		t.Fatalf("if_generation 7 against 1: %v, want ErrStaleGeneration", err)
	}
	f.Generation = 10
	if ch, err = h.Replace(f, 1); err != nil || ch.Generation != 10 {
		t.Fatalf("generation 10: %+v, %v", ch, err)
	}

	// A move: the entry is replaced, not added.
	ch, err = h.Merge(Table{Entries: []TableEntry{{VNI: 100, MAC: "02:00:00:00:00:01", Host: "192.0.2.2", IPs: []string{"10.0.0.1"}}}}, 10)
	if err != nil || ch.Generation != 11 {
		t.Fatalf("move: %+v, %v", ch, err)
	}
	seg, err := h.Table(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(seg.Entries) != 2 || len(seg.Segments) != 1 {
		t.Fatalf("segment 100 after the move: %+v", seg)
	}
	for _, e := range seg.Entries {
		if e.MAC == "02:00:00:00:00:01" && e.Host != "192.0.2.2" {
			t.Errorf("moved entry still on %s", e.Host)
		}
	}
	before, _ := h.Table(0)
	for _, c := range []struct {
		name string
		do   func() error
		want string
	}{
		{"stale", func() error { _, err := h.Merge(Table{}, 10); return err }, "made against generation 10, the live one is 11"},
		{"unknown host", func() error {
			_, err := h.Merge(Table{Entries: []TableEntry{{VNI: 200, MAC: "02:00:00:00:00:09", Host: "192.0.2.1"}}}, 0)
			return err
		}, "entries[0].host: unknown host 192.0.2.1: not a member of segment 200 (hosts: 192.0.2.2)"},
		{"conflict within the request", func() error {
			_, err := h.Merge(Table{Entries: []TableEntry{
				{VNI: 100, MAC: "02:00:00:00:00:09", Host: "192.0.2.1"},
				{VNI: 100, MAC: "02:00:00:00:00:09", Host: "192.0.2.2"}}}, 0)
			return err
		}, "entries[1].mac: conflicting entries: 02:00:00:00:00:09 in segment 100 is also placed by entries[0].mac"},
		{"address of a kept entry", func() error {
			_, err := h.Merge(Table{Entries: []TableEntry{{VNI: 100, MAC: "02:00:00:00:00:09", Host: "192.0.2.1", IPs: []string{"10.0.0.2"}}}}, 0)
			return err
		}, "entries[0].ips[0]: conflicting entries: 10.0.0.2 in segment 100 is also claimed by entry (vni 100, mac 02:00:00:00:00:02).ips[0]"},
		{"segment drops a host of a kept entry", func() error {
			_, err := h.Merge(Table{Segments: []TableSegment{{VNI: 100, Hosts: []string{"192.0.2.1"}}}}, 0)
			return err
		}, ".host: unknown host 192.0.2.2: not a member of segment 100 (hosts: 192.0.2.1)"},
		{"VNI out of range", func() error {
			_, err := h.Merge(Table{Segments: []TableSegment{{VNI: 1 << 24, Hosts: []string{"192.0.2.1"}}}}, 0)
			return err
		}, "segments[0].vni: VNI 16777216 out of range"},
		{"no such entry", func() error { _, err := h.DeleteEntry(100, [6]byte{2, 0, 0, 0, 0, 0x77}, 0); return err }, "no entry for 02:00:00:00:00:77 in segment 100"},
		{"segment with entries", func() error { _, err := h.DeleteSegment(200, 0); return err }, "segment 200 still has 1 entries"},
	} {
		err := c.do()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if after, _ := h.Table(0); !reflect.DeepEqual(before, after) {
		t.Errorf("refused changes changed the table:\n%+v\n%+v", before, after)
	}
	if _, err := h.DeleteEntry(200, [6]byte{2, 0, 0, 0, 0, 1}, 11); err != nil {
		t.Fatal(err)
	}
	if ch, err = h.DeleteSegment(200, 0); err != nil || ch.Generation != 13 {
		t.Fatalf("delete segment 200: %+v, %v", ch, err)
	}

	// Persisted: a new HostFDB on the same file holds the same table.
	want, _ := h.Table(0)
	h2, err := OpenHostFDB(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := h2.Table(0)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened: %+v, %v\nwant %+v", got, err, want)
	}
	// Dropped: no table, no saved copy; the next push starts again.
	if ch, err := h2.Drop(0); err != nil || ch.Generation != 0 {
		t.Fatalf("drop: %+v, %v", ch, err)
	}
	if _, err := h2.Table(0); !errors.Is(err, ErrNoTable) {
		t.Errorf("after the drop: %v, want ErrNoTable", err)
	}
	if h3, err := OpenHostFDB(path); err != nil || h3.fib != nil {
		t.Errorf("reopened after the drop: %v, %v", h3, err)
	}
	f.Generation = 0
	if ch, err := h2.Replace(f, 0); err != nil || ch.Generation != 1 {
		t.Errorf("push after the drop: %+v, %v", ch, err)
	}
	// And the written form parses back to the same table.
	f2, err := ParseTable(got)
	if err != nil || !reflect.DeepEqual(f2.Table(), got) {
		t.Fatalf("ParseTable(Table()): %+v, %v", f2, err)
	}
}
