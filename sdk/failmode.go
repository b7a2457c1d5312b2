package sdk

import "fmt"

// FailMode says what happens to a frame when a filter cannot decide: its
// slow path is not running, has stalled or panicked, or its program is
// missing from the chain.
type FailMode uint8

const (
	// FailClosed drops the frame. It is the zero value: filters fail
	// closed unless they declare otherwise.
	FailClosed FailMode = iota
	// FailOpen passes the frame on to the next slot.
	FailOpen
)

func (m FailMode) String() string {
	switch m {
	case FailClosed:
		return "closed"
	case FailOpen:
		return "open"
	}
	return fmt.Sprintf("failmode(%d)", uint8(m))
}

// ParseFailMode parses "closed" or "open".
func ParseFailMode(s string) (FailMode, error) {
	switch s {
	case "closed", "fail-closed":
		return FailClosed, nil
	case "open", "fail-open":
		return FailOpen, nil
	}
	return 0, fmt.Errorf("failure mode %q: want closed or open", s)
}

// MarshalText implements encoding.TextMarshaler.
func (m FailMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (m *FailMode) UnmarshalText(b []byte) error {
	v, err := ParseFailMode(string(b))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
