package bench

import (
	"encoding/json"
	"errors"
	"fmt"
)

// iperfReport is the part of `iperf3 -c … -J` output vfbench reads.
type iperfReport struct {
	End struct {
		SumReceived struct {
			BitsPerSecond float64 `json:"bits_per_second"`
		} `json:"sum_received"`
	} `json:"end"`
	// Error is set, with exit status 1, when the test could not run.
	Error string `json:"error"`
}

// parseIperf returns the receiver-side throughput in Gb/s of an iperf3 JSON
// report: what arrived, not what the sender pushed into its socket. With -P
// the sum_received figure already adds the streams up.
func parseIperf(out []byte) (float64, error) {
	var r iperfReport
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parse iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return 0, fmt.Errorf("iperf3: %s", r.Error)
	}
	if !(r.End.SumReceived.BitsPerSecond > 0) {
		return 0, errors.New("iperf3 report has no end.sum_received.bits_per_second")
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}
