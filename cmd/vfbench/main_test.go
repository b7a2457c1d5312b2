package main

import (
	"io"
	"slices"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		attach  int // 0: not the attach benchmark
		json    bool
		cases   []string
		suites  []string
		dur     time.Duration
		badCode int // non-zero: parse must fail with this code
	}{
		{name: "defaults", dur: 5 * time.Second},
		{name: "json", args: []string{"--json"}, json: true, dur: 5 * time.Second},
		{name: "cases and duration", args: []string{"--cases", "fast-1, slow-punt", "--duration", "1s"}, cases: []string{"fast-1", "slow-punt"}, dur: time.Second},
		{name: "suites", args: []string{"--suite", "fw,dlb"}, suites: []string{"fw", "dlb"}, dur: 5 * time.Second},
		{name: "bare attach", args: []string{"--attach"}, attach: 200, dur: 5 * time.Second},
		{name: "attach N", args: []string{"--attach", "50", "--json"}, attach: 50, json: true, dur: 5 * time.Second},
		{name: "attach=N", args: []string{"--attach=7"}, attach: 7, dur: 5 * time.Second},
		{name: "attach bad", args: []string{"--attach=x"}, badCode: 2},
		{name: "stray argument", args: []string{"fast-1"}, badCode: 2},
		{name: "zero reps", args: []string{"--reps", "0"}, badCode: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, code, ok := parse(tc.args, io.Discard)
			if tc.badCode != 0 {
				if ok || code != tc.badCode {
					t.Fatalf("ok %v code %d, want failure %d", ok, code, tc.badCode)
				}
				return
			}
			if !ok {
				t.Fatalf("parse failed with code %d", code)
			}
			if got := map[bool]int{true: c.attach.n}[c.attach.set]; got != tc.attach {
				t.Errorf("attach = %d (set %v), want %d", c.attach.n, c.attach.set, tc.attach)
			}
			if c.opts.JSON != tc.json || c.opts.Duration != tc.dur || !slices.Equal(c.opts.Cases, tc.cases) || !slices.Equal(c.opts.Suites, tc.suites) {
				t.Errorf("opts = %+v", c.opts)
			}
		})
	}
}
