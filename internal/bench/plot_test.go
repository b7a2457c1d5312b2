package bench

import (
	"bytes"
	"encoding/json"
	"image/png"
	"testing"
)

// TestPlotFW draws the chart from --json lines (comparison lines and
// failed figures ignored) and refuses results without a firewall case.
func TestPlotFW(t *testing.T) {
	var in bytes.Buffer
	in.WriteString("bin/vfbench --suite fw --json\n") // make's echo
	for _, r := range []Result{
		{Case: "baseline", Metric: MetricUDP64, Value: 900000},
		{Case: "fw-1", Metric: MetricUDP64, Value: 850000},
		{Case: "fw-10k", Metric: MetricUDP64, Value: 840000},
		{Case: "fw-100k", Metric: MetricUDP64, Value: 830000},
		{Case: "fw-1k", Metric: MetricUDP64, Error: "no sample"},
		{Case: "fw-10k", Vs: "nft-linear-10k", Metric: MetricUDP64, Value: 1},
		{Case: "nft-linear-1", Metric: MetricUDP64, Value: 800000},
		{Case: "nft-linear-10k", Metric: MetricUDP64, Value: 20000},
		{Case: "nft-sets-10k", Metric: MetricUDP64, Value: 600000},
		{Case: "fw-10k", Metric: MetricTCP1, Value: 9},
	} {
		b, _ := json.Marshal(r)
		in.Write(append(b, '\n'))
	}
	rs, err := ReadResults(&in)
	if err != nil || len(rs) != 10 {
		t.Fatalf("ReadResults: %d results, %v", len(rs), err)
	}
	var out bytes.Buffer
	if err := PlotFW(rs, &out, "test"); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&out)
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 500 || b.Dy() < 300 {
		t.Errorf("image %v, want about 8x5 in", b)
	}
	if err := PlotFW(rs[:1], &out, "test"); err == nil {
		t.Error("PlotFW drew a chart without any firewall or nftables figure")
	}
	if _, err := ReadResults(bytes.NewBufferString("{\"Case\":1}\n")); err == nil {
		t.Error("ReadResults accepted a bad line")
	}
}
