package firewall

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// TestExportStateSince: the final push of a migration carries the flows
// that saw a packet since the pull, not the idle ones the destination
// already has, in the format ImportState reads.
func TestExportStateSince(t *testing.T) {
	testkit.Need(t, testkit.Root, testkit.BPF)
	src := newScratch(t, allowAll, 4096)
	fill(t, src, 1000) // established, last packet days ago
	now := sdk.KtimeNow()
	for i := range 10 { // established, a packet just now
		k := firewallFwCtKey{Family: 4, Proto: 6, LocalPort: uint16(30000 + i), RemotePort: 443}
		copy(k.Local[:4], []byte{10, 0, 0, 1})
		copy(k.Remote[:4], []byte{10, 2, 0, byte(i)})
		v := firewallFwCtVal{Expires: now + uint64(ctTimeouts[ctEstablished]), State: ctEstablished}
		if err := src.objs.FwConntrack.Put(&k, &v); err != nil {
			t.Fatal(err)
		}
	}
	var delta, full bytes.Buffer
	if err := src.ExportStateSince(&delta, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := src.ExportState(&full); err != nil {
		t.Fatal(err)
	}
	if n := binary.LittleEndian.Uint64(delta.Bytes()[8:]); n != 10 {
		t.Errorf("delta holds %d flows, want the 10 active ones", n)
	}
	if n := binary.LittleEndian.Uint64(full.Bytes()[8:]); n != 1010 {
		t.Errorf("full export holds %d flows, want 1010", n)
	}
	dst := newScratch(t, allowAll, 4096)
	if n, err := dst.ImportState(bytes.NewReader(delta.Bytes())); err != nil || n != 10 {
		t.Errorf("import of the delta: %d, %v", n, err)
	}
}
