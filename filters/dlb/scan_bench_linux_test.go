package dlb

import (
	"fmt"
	"testing"
)

// BenchmarkPinnedScan measures the scan behind backend_pinned_flows and
// Inspect's pinned_flows: a full connection table (65,536 flows, 131,072
// entries) walked in batches.
func BenchmarkPinnedScan(b *testing.B) {
	fp := fullTable(b, 65536)
	b.ResetTimer()
	for b.Loop() {
		m, err := fp.pinnedFlows()
		if err != nil {
			b.Fatal(err)
		}
		if n := len(m); n != 4 {
			b.Fatalf("%d backends counted", n)
		}
	}
}

// BenchmarkSwap measures one generation swap (what a reload or a
// backend's health change costs): 4 backends, a 65,537-slot table.
func BenchmarkSwap(b *testing.B) {
	fp := fullTable(b, 16)
	cfg := fp.cfg
	for b.Loop() {
		if err := fp.Update(cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// fullTable loads an instance of one service with 4 backends and pins
// flows flows (forward and reverse entries) straight into dlb_ct.
func fullTable(b *testing.B, flows int) *fastPath {
	cfg := []byte(`{"services": [{"name": "web", "vip": "10.0.0.1", "port": 80, "protocol": "tcp",
	  "backends": [{"addr": "10.1.0.1"}, {"addr": "10.1.0.2"}, {"addr": "10.1.0.3"}, {"addr": "10.1.0.4"}]}]}`)
	fp, _ := testInstance(b, cfg, fmt.Sprint(flows), "1048576")
	keys := make([]dlbDlbCtKey, 0, 2*flows)
	vals := make([]dlbDlbCtVal, 0, 2*flows)
	vip, port := addrWord([4]byte{10, 0, 0, 1}), portWord(80)
	for i := range flows {
		client := addrWord([4]byte{10, 9, byte(i >> 8), byte(i)})
		be := addrWord([4]byte{10, 1, 0, byte(1 + i%4)})
		keys = append(keys, dlbDlbCtKey{Saddr: [4]uint32{client}, Daddr: [4]uint32{vip}, Sport: portWord(40000), Dport: port, Proto: ProtoTCP, Family: 4})
		vals = append(vals, dlbDlbCtVal{T: dlbDlbTarget{Addr: [4]uint32{be}, Port: port}})
		keys = append(keys, dlbDlbCtKey{Saddr: [4]uint32{be}, Daddr: [4]uint32{client}, Sport: port, Dport: portWord(40000), Proto: ProtoTCP, Kind: 1, Family: 4})
		vals = append(vals, dlbDlbCtVal{T: dlbDlbTarget{Addr: [4]uint32{vip}, Port: port}})
	}
	if _, err := fp.objs.DlbCt.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatal(err)
	}
	return fp
}
