// Package dnslog logs the DNS queries and answers of a vNIC. Its fast path
// punts only UDP/TCP port 53, so other traffic never leaves the kernel; its
// slow path decodes each DNS message, logs one rate-limited line and always
// passes the frame. It is fail-open: logging never blocks DNS.
package dnslog

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Name is the filter's registered name.
const Name = "dnslog"

// Descriptor registers the dnslog filter.
var Descriptor = &sdk.Descriptor{
	Name:       Name,
	Version:    "1.0.0",
	Summary:    "log DNS queries and answers (punts only port 53, never blocks)",
	Directions: sdk.DirBoth,
	FailMode:   sdk.FailOpen, // logging must never block DNS
	Params: []sdk.ParamSpec{
		{Name: "log", Type: sdk.Bool, Default: "true", Doc: "log one line per DNS query and answer"},
		{Name: "rate", Type: sdk.Int, Default: "50", Min: sdk.Bound(1), Doc: "most log lines per second; the rest are counted as suppressed"},
	},
	FastPath: loadFastPath,
	SlowPath: newSlowPath,
}

func init() { sdk.Register(Descriptor) }

// slowPath decodes and logs; counters are per direction where it matters.
type slowPath struct {
	vnic    string
	log     *slog.Logger
	enabled bool
	limit   limiter
	parsers [sdk.NumDirections]*Parser // one per reader goroutine

	queries, responses [sdk.NumDirections]atomic.Uint64
	parseErrors        atomic.Uint64
	suppressed         atomic.Uint64
}

var (
	_ sdk.SlowPath     = (*slowPath)(nil)
	_ sdk.SlowCounters = (*slowPath)(nil)
)

func newSlowPath(ctx *sdk.SlowPathContext) (sdk.SlowPath, error) {
	p := ctx.Instance.Params
	s := &slowPath{
		vnic:    ctx.Instance.VNIC.Name,
		log:     ctx.Logger,
		enabled: !p.Has("log") || p.Bool("log"),
		limit:   limiter{rate: int(max(p.Int("rate"), 1))},
	}
	if !p.Has("rate") {
		s.limit.rate = 50
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	for i := range s.parsers {
		s.parsers[i] = NewParser()
	}
	return s, nil
}

// Process logs the frame's DNS message and passes it, whatever it holds.
func (s *slowPath) Process(f *sdk.Frame) sdk.SlowVerdict {
	if int(f.Direction) >= len(s.parsers) {
		return sdk.Pass
	}
	m, err := s.parse(f)
	switch {
	case errors.Is(err, ErrNoDNS):
		return sdk.Pass
	case err != nil:
		s.parseErrors.Add(1)
		return sdk.Pass
	}
	msg := "dns query"
	if m.Response {
		s.responses[f.Direction].Add(1)
		msg = "dns answer"
	} else {
		s.queries[f.Direction].Add(1)
	}
	if !s.enabled {
		return sdk.Pass
	}
	if !s.limit.allow(time.Now()) {
		s.suppressed.Add(1)
		return sdk.Pass
	}
	attrs := []any{"vnic", s.vnic, "dir", f.Direction.String(), "id", m.ID, "name", m.Name, "type", m.Type.String()}
	if m.Response {
		attrs = append(attrs, "rcode", m.RCode.String(), "answers", m.Answers)
	}
	if m.TCP {
		attrs = append(attrs, "proto", "tcp")
	}
	s.log.Info(msg, attrs...)
	return sdk.Pass
}

// parse shields the runner from a decoder panic on a crafted frame: a
// logging filter must not fail (and stop logging) because of one.
func (s *slowPath) parse(f *sdk.Frame) (m Message, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder panic: %v", r)
		}
	}()
	return s.parsers[f.Direction].Parse(f.Data)
}

// Counters reports messages seen, parse errors and suppressed log lines.
func (s *slowPath) Counters() []sdk.Counter {
	var out []sdk.Counter
	for _, d := range []sdk.Direction{sdk.FromVM, sdk.ToVM} {
		l := map[string]string{"direction": d.String()}
		out = append(out,
			sdk.Counter{Name: "queries_total", Help: "DNS queries seen.", Labels: l, Value: float64(s.queries[d].Load())},
			sdk.Counter{Name: "responses_total", Help: "DNS answers seen.", Labels: l, Value: float64(s.responses[d].Load())})
	}
	return append(out,
		sdk.Counter{Name: "parse_errors_total", Help: "Port-53 frames that did not decode as DNS.", Value: float64(s.parseErrors.Load())},
		sdk.Counter{Name: "log_suppressed_total", Help: "Log lines dropped by the rate limit.", Value: float64(s.suppressed.Load())})
}

func (s *slowPath) Close() error { return nil }

// limiter allows rate events per wall-clock second.
type limiter struct {
	mu   sync.Mutex
	rate int
	sec  int64
	n    int
}

func (l *limiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if sec := now.Unix(); sec != l.sec {
		l.sec, l.n = sec, 0
	}
	if l.n >= l.rate {
		return false
	}
	l.n++
	return true
}
