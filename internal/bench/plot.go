package bench

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"image/color"
	"io"
	"math"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// ReadResults reads the output of a --json run: one Result per line.
// Lines that are not JSON objects (make's echo of the command, when the
// output of `make bench` was saved) are skipped.
func ReadResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var res Result
		if err := json.Unmarshal([]byte(line), &res); err != nil {
			return nil, fmt.Errorf("line %d: not a vfbench --json result: %w", n, err)
		}
		out = append(out, res)
	}
	return out, sc.Err()
}

// fwSeries are the lines of the firewall plot: a name and its case
// prefix (the rule count follows: "-1", "-1k", …).
var fwSeries = []struct{ name, prefix string }{
	{"vnicfilter firewall (conntrack)", "fw-"},
	{"nftables, one rule per line", "nft-linear-"},
	{"nftables, ct + concatenated sets", "nft-sets-"},
}

// fwRuleCounts are the x values of the firewall plot and their case
// suffixes.
var fwRuleCounts = []struct {
	suffix string
	n      float64
}{{"1", 1}, {"1k", 1e3}, {"10k", 1e4}, {"100k", 1e5}}

// PlotFW draws the firewall suite's 64-byte UDP rate against the rule
// count (both axes logarithmic) as a PNG: one line per implementation and
// the unfiltered baseline. Cases missing from rs leave gaps; at least one
// firewall or nftables figure must be there.
func PlotFW(rs []Result, w io.Writer, title string) error {
	val := map[string]float64{}
	for _, r := range rs {
		if r.Metric == MetricUDP64 && r.Vs == "" && r.Error == "" && r.Skipped == "" && r.Value > 0 {
			val[r.Case] = r.Value
		}
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "rules in the policy"
	p.Y.Label.Text = "64-byte UDP, packets/s received"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker = plot.ConstantTicks([]plot.Tick{{Value: 1, Label: "1"}, {Value: 1e3, Label: "1,000"}, {Value: 1e4, Label: "10,000"}, {Value: 1e5, Label: "100,000"}})
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min, p.X.Max = 0.7, 1.5e5
	p.Legend.Top, p.Legend.Left = false, true
	p.Legend.YOffs = vg.Points(-4)
	p.Add(plotter.NewGrid())

	colors := []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xd6, 0x27, 0x28, 0xff}, color.RGBA{0x2c, 0xa0, 0x2c, 0xff}}
	lo, hi := math.Inf(1), math.Inf(-1)
	lines := 0
	for i, s := range fwSeries {
		var pts plotter.XYs
		for _, rc := range fwRuleCounts {
			if v, ok := val[s.prefix+rc.suffix]; ok {
				pts = append(pts, plotter.XY{X: rc.n, Y: v})
				lo, hi = min(lo, v), max(hi, v)
			}
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", s.name, err)
		}
		l.Color, sc.Color = colors[i], colors[i]
		l.Width = vg.Points(2)
		sc.Shape = draw.CircleGlyph{}
		sc.Radius = vg.Points(3)
		p.Add(l, sc)
		p.Legend.Add(s.name, l, sc)
		lines++
	}
	if lines == 0 {
		return errors.New("no udp64_pps figure of a fw-, nft-linear- or nft-sets- case to plot")
	}
	if b, ok := val[baselineCase]; ok {
		l, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: b}, {X: p.X.Max, Y: b}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{0x60}
		l.Width = vg.Points(1.5)
		l.Dashes = []vg.Length{vg.Points(6), vg.Points(4)}
		p.Add(l)
		p.Legend.Add("no filter (baseline)", l)
		lo, hi = min(lo, b), max(hi, b)
	}
	p.Y.Min, p.Y.Max = lo/2, hi*2
	wt, err := p.WriterTo(8*vg.Inch, 5*vg.Inch, "png")
	if err != nil {
		return fmt.Errorf("render plot: %w", err)
	}
	_, err = wt.WriteTo(w)
	return err
}
