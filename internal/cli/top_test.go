package cli

import (
	"strings"
	"testing"
	"time"
)

func TestTopRows(t *testing.T) {
	prev := []statLine{
		{vnic: "vnet1", dir: "from-vm", entered: 100, nbytes: 1000, dropped: 10},
		{vnic: "vnet1", dir: "to-vm", entered: 50, nbytes: 500},
		{vnic: "vnet2", dir: "from-vm", entered: 1000, nbytes: 10},
		{vnic: "vnet3", dir: "-", none: true},
	}
	cur := []statLine{
		{vnic: "vnet1", dir: "from-vm", entered: 300, nbytes: 3000, dropped: 30},
		{vnic: "vnet1", dir: "to-vm", entered: 150, nbytes: 1500},
		{vnic: "vnet2", dir: "from-vm", entered: 10, nbytes: 5}, // chain recreated
		{vnic: "vnet3", dir: "-", none: true},
	}
	rows := topRows(prev, cur, 2*time.Second)
	sortTop(rows, "pps")
	if len(rows) != 3 || rows[0].vnic != "vnet1" || rows[0].inPPS != 100 || rows[0].outPPS != 50 || rows[0].inBPS != 8000 || rows[0].dropPS != 10 {
		t.Fatalf("rows %+v", rows)
	}
	if !rows[len(rows)-1].reset && !rows[1].reset {
		t.Errorf("vnet2's counters went back: want reset, got %+v", rows)
	}
	sortTop(rows, "drops")
	if rows[0].vnic != "vnet1" {
		t.Errorf("sorted by drops: %+v", rows)
	}
	var b strings.Builder
	printTop(&b, rows, 1, time.Unix(0, 0), time.Second)
	if out := b.String(); !strings.Contains(out, "vnet1") || strings.Contains(out, "vnet3") {
		t.Errorf("limit 1:\n%s", out)
	}
}
