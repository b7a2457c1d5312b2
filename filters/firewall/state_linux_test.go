package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// newScratch loads a firewall instance against scratch vNIC maps (no
// device): enough to fill and read its connection table.
func newScratch(t testing.TB, policy string, conntrack int) *fastPath {
	t.Helper()
	path := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(path, []byte(policy), 0o644); err != nil {
		t.Fatal(err)
	}
	maps, err := sdk.ScratchVNICMaps()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range maps {
			m.Close()
		}
	})
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"policy": path, "conntrack_size": strconv.Itoa(conntrack)})
	if err != nil {
		t.Fatal(err)
	}
	inst := sdk.Instance{VNIC: sdk.VNIC{Name: "scratch", Ifindex: 1}, Directions: sdk.DirBoth, Params: params}
	fp, err := Descriptor.FastPath(sdk.NewFastPathContext(inst, false, nil, maps, ""))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fp.Close() })
	return fp.(*fastPath)
}

// fill writes n established TCP flows with an hour to live.
func fill(t testing.TB, f *fastPath, n int) {
	t.Helper()
	now := sdk.KtimeNow()
	keys := make([]firewallFwCtKey, n)
	vals := make([]firewallFwCtVal, n)
	for i := range keys {
		k := &keys[i]
		k.Family, k.Proto = 4, 6
		copy(k.Local[:4], []byte{10, 0, 0, 1})
		copy(k.Remote[:4], []byte{10, 1, byte(i >> 16), byte(i >> 8)})
		k.LocalPort, k.RemotePort = uint16(1024+i%60000), 5001
		vals[i] = firewallFwCtVal{Expires: now + uint64(time.Hour), State: 3, P1: 6, P2: 5001}
	}
	for done := 0; done < n; {
		m, err := f.objs.FwConntrack.BatchUpdate(keys[done:min(done+4096, n)], vals[done:min(done+4096, n)], nil)
		done += m
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestCtLayout pins the entry layout the state codec writes.
func TestCtLayout(t *testing.T) {
	if k, v := binary.Size(firewallFwCtKey{}), binary.Size(firewallFwCtVal{}); k != ctKeySize || v != ctValSize {
		t.Fatalf("fw_ct_key/fw_ct_val are %d+%d bytes, the state codec writes %d+%d: update putCtEntry/getCtEntry and bump stateFormat", k, v, ctKeySize, ctValSize)
	}
	k := firewallFwCtKey{LocalPort: 1, RemotePort: 2, Proto: 6, Family: 4}
	k.Local[0], k.Remote[15] = 10, 7
	v := firewallFwCtVal{Expires: 1 << 40, Created: 7, Packets: 8, Bytes: 9, Gen: 3, P1: 4, P2: 5, State: 6, OrigDir: 1, Fins: 2, Flags: 1, Rule: 10}
	var b [ctKeySize + ctValSize]byte
	putCtEntry(b[:], &k, &v)
	var k2 firewallFwCtKey
	var v2 firewallFwCtVal
	getCtEntry(b[:], &k2, &v2)
	if k2 != k || v2 != v {
		t.Errorf("round trip: %+v %+v, want %+v %+v", k2, v2, k, v)
	}
}

const allowAll = `{"version": 1, "defaults": {"from-vm": "allow", "to-vm": "allow"}}`

func TestStateRoundTrip(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	src, dst := newScratch(t, allowAll, 1024), newScratch(t, allowAll, 1024)
	fill(t, src, 1000)
	var buf bytes.Buffer
	if err := src.ExportState(&buf); err != nil {
		t.Fatal(err)
	}
	n, err := dst.ImportState(bytes.NewReader(buf.Bytes()))
	if err != nil || n != 1000 {
		t.Fatalf("import: %d flows, %v", n, err)
	}
	var epoch uint32
	if err := dst.objs.FwConfig.Lookup(uint32(0), &epoch); err != nil {
		t.Fatal(err)
	}
	it := dst.objs.FwConntrack.Iterate()
	var k firewallFwCtKey
	var v firewallFwCtVal
	count, now := 0, sdk.KtimeNow()
	for it.Next(&k, &v) {
		count++
		if v.Gen == epoch {
			t.Fatalf("imported flow stamped with the live epoch %d: it would skip re-validation", epoch)
		}
		if v.Expires < now+uint64(59*time.Minute) || v.Expires > now+uint64(61*time.Minute) {
			t.Fatalf("imported flow expires in %v, want ~1h", time.Duration(v.Expires-now))
		}
	}
	if count != 1000 {
		t.Errorf("%d flows in the destination table", count)
	}

	// Refusals change nothing.
	small := newScratch(t, allowAll, 16)
	b := buf.Bytes()
	for what, p := range map[string][]byte{
		"truncated":     b[:len(b)-5],
		"trailing data": append(bytes.Clone(b), 0),
		"other layout":  append([]byte{99, 0, 0, 0}, b[4:]...),
		"empty":         nil,
	} {
		if n, err := dst.ImportState(bytes.NewReader(p)); !errors.Is(err, sdk.ErrInvalidParam) || n != 0 {
			t.Errorf("%s: imported %d, %v; want ErrInvalidParam and nothing", what, n, err)
		}
	}
	if _, err := small.ImportState(bytes.NewReader(b)); !errors.Is(err, sdk.ErrInvalidParam) {
		t.Errorf("1000 flows into a 16-flow table: %v", err)
	}
}

// BenchmarkStateMove100k moves 100,000 connections: export from one
// instance, import into another (issue 12: < 200 ms).
func BenchmarkStateMove100k(b *testing.B) {
	testkit.Need(b, testkit.Root, testkit.BPF)
	const n = 100_000
	src := newScratch(b, allowAll, 131072)
	fill(b, src, n)
	var size int
	for b.Loop() {
		b.StopTimer()
		dst := newScratch(b, allowAll, 131072) // not part of the move
		b.StartTimer()
		var buf bytes.Buffer
		if err := src.ExportState(&buf); err != nil {
			b.Fatal(err)
		}
		got, err := dst.ImportState(bytes.NewReader(buf.Bytes()))
		if err != nil || got != n {
			b.Fatalf("imported %d: %v", got, err)
		}
		size = buf.Len()
	}
	b.ReportMetric(float64(size), "bytes")
}
