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
		SumSent struct {
			Retransmits int `json:"retransmits"`
		} `json:"sum_sent"`
	} `json:"end"`
	// Error is set, with exit status 1, when the test could not run.
	Error string `json:"error"`
}

// iperfResult is what vfbench keeps of an iperf3 run.
type iperfResult struct {
	gbps float64
	// retransmits by the sender: on a path inside one machine, a datapath
	// that corrupts or drops segments shows here first.
	retransmits int
}

// parseIperf returns the receiver-side throughput in Gb/s of an iperf3 JSON
// report: what arrived, not what the sender pushed into its socket. With -P
// the sum_received figure already adds the streams up.
func parseIperf(out []byte) (iperfResult, error) {
	var r iperfReport
	if err := json.Unmarshal(out, &r); err != nil {
		return iperfResult{}, fmt.Errorf("parse iperf3 JSON: %w", err)
	}
	if r.Error != "" {
		return iperfResult{}, fmt.Errorf("iperf3: %s", r.Error)
	}
	if !(r.End.SumReceived.BitsPerSecond > 0) {
		return iperfResult{}, errors.New("iperf3 report has no end.sum_received.bits_per_second")
	}
	return iperfResult{gbps: r.End.SumReceived.BitsPerSecond / 1e9, retransmits: r.End.SumSent.Retransmits}, nil
}
