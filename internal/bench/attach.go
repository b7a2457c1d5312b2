package bench

import (
	"fmt"
	"time"
)

// Figures of the attach benchmark.
const (
	attachCase       = "attach"
	metricAttachTotl = "attach_total_s"
	metricAttachP50  = "attach_p50_ms"
	metricAttachP99  = "attach_p99_ms"
	metricAttachMax  = "attach_max_ms"
	metricDetachTotl = "detach_total_s"
)

// summarizeAttach reports the attach benchmark: total wall time of the
// sequential PUTs and the per-attach latency percentiles, judged against
// the targets (p99 < 50 ms, total < 5 s); detach time is informative.
func summarizeAttach(attach []time.Duration, attachTotal, detachTotal time.Duration) []Result {
	ms := make([]float64, len(attach))
	for i, d := range attach {
		ms[i] = float64(d) / float64(time.Millisecond)
	}
	rs := []Result{
		{Case: attachCase, Metric: metricAttachTotl, Value: attachTotal.Seconds(), Unit: "s"},
		{Case: attachCase, Metric: metricAttachP50, Value: percentile(ms, 50), Unit: "ms"},
		{Case: attachCase, Metric: metricAttachP99, Value: percentile(ms, 99), Unit: "ms"},
		{Case: attachCase, Metric: metricAttachMax, Value: percentile(ms, 100), Unit: "ms"},
		{Case: attachCase, Metric: metricDetachTotl, Value: detachTotal.Seconds(), Unit: "s"},
	}
	for i := range rs {
		judge(&rs[i])
	}
	return rs
}

// attachTitle heads the attach table.
func attachTitle(n int, mode string) string {
	return fmt.Sprintf("vfbench --attach %d: PUT /v1/vnics/<veth> {\"filters\":[{\"name\":\"count\"}]}, one after another (attach mode %s)", n, mode)
}
