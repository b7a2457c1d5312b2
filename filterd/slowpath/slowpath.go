package slowpath

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// Defaults for the zero Options.
const (
	DefaultWatchdog  = 2 * time.Second
	DefaultHeartbeat = 200 * time.Millisecond
	DefaultLease     = time.Second
)

// Options tune a Punt. The zero value is the production default.
type Options struct {
	// Logger receives the runner's events (panics, stalls, heartbeat
	// errors); nil discards them.
	Logger *slog.Logger
	// Watchdog is how long one Process call may run before the instance
	// counts as stalled and its failure mode applies; default 2s.
	Watchdog time.Duration
	// Heartbeat is how often the lease is renewed; default 200ms.
	Heartbeat time.Duration
	// Lease is how far ahead of each heartbeat alive_until is set; if
	// filterd dies, the failure mode applies at most Lease later. Default
	// 1s; it should exceed Heartbeat by a comfortable margin.
	Lease time.Duration
	// FailMode decides the frames already in a punt tap when the handler
	// fails (panicked or stalled): FailClosed (the zero value) drops them,
	// FailOpen re-injects them unchecked. Frames punted after the failure
	// never reach the tap: the fast path applies the slot's own failure
	// mode. Pass the instance's failure mode.
	FailMode sdk.FailMode
	// Generation alternates the punt taps' names (odd generations use
	// upper-case direction letters), so a chain being replaced can start
	// its new slow paths beside the old ones.
	Generation uint32
}

func (o Options) withDefaults() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Watchdog <= 0 {
		o.Watchdog = DefaultWatchdog
	}
	if o.Heartbeat <= 0 {
		o.Heartbeat = DefaultHeartbeat
	}
	if o.Lease <= 0 {
		o.Lease = DefaultLease
	}
	return o
}

// Heartbeater renews a slot's slow-path lease: it writes the punt device
// and the deadline (CLOCK_MONOTONIC based in the kernel) of slot in
// direction dir. A zero deadline ends the lease at once. *datapath.VNIC
// implements it.
type Heartbeater interface {
	Heartbeat(slot int, dir sdk.Direction, punt int, deadline time.Time) error
}

// State is the health of a Punt.
type State uint8

const (
	// Running: frames flow through the handler; the lease is renewed.
	Running State = iota
	// Down: stopped, or not started.
	Down
	// Stalled: a Process call has run longer than the watchdog allows.
	// The lease is cleared; if the call returns, the Punt runs again.
	Stalled
	// Panicked: the handler panicked. The lease is cleared for good; the
	// instance must be restarted.
	Panicked
	// Disconnected: the instance's external filter process is not
	// running (crashed, restarting); the lease is cleared until it is
	// back and has reopened the instance.
	Disconnected
)

func (s State) String() string {
	switch s {
	case Running:
		return "running"
	case Down:
		return "down"
	case Stalled:
		return "stalled"
	case Panicked:
		return "panicked"
	case Disconnected:
		return "disconnected"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Stats are the runner's counters of one direction.
type Stats struct {
	// Frames read from the punt tap.
	Frames uint64 `json:"frames"`
	// Passed: frames the handler passed and that were re-injected.
	Passed uint64 `json:"passed"`
	// Dropped: frames the handler dropped, or that arrived while it was
	// failed and fail-closed.
	Dropped uint64 `json:"dropped"`
	// Errors: unreadable frames and failed re-injections.
	Errors uint64 `json:"errors"`
}

// TapName is the name of the punt tap of (vNIC ifindex, slot, dir) in
// chain generation gen: at most 14 characters.
func TapName(ifindex, slot int, dir sdk.Direction, gen uint32) string {
	c := 'f'
	if dir == sdk.ToVM {
		c = 't'
	}
	if gen%2 == 1 {
		c -= 'a' - 'A'
	}
	return fmt.Sprintf("vfp%ds%d%c", ifindex, slot, c)
}
