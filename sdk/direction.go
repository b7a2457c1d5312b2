package sdk

import (
	"fmt"
	"strings"
)

// Direction is the way a frame crosses a vNIC, seen from the VM.
type Direction uint8

const (
	// FromVM: frames the VM sends (tc ingress on the tap).
	FromVM Direction = 0
	// ToVM: frames delivered to the VM (tc egress on the tap).
	ToVM Direction = 1
	// NumDirections is the number of directions.
	NumDirections = 2
)

func (d Direction) String() string {
	switch d {
	case FromVM:
		return "from-vm"
	case ToVM:
		return "to-vm"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Directions is a set of directions.
type Directions uint8

const (
	// DirFromVM is the set holding FromVM.
	DirFromVM Directions = 1 << FromVM
	// DirToVM is the set holding ToVM.
	DirToVM Directions = 1 << ToVM
	// DirBoth holds both directions.
	DirBoth = DirFromVM | DirToVM
)

// Has reports whether d is in s.
func (s Directions) Has(d Direction) bool { return s&(1<<d) != 0 }

// List returns the directions in s, from-vm first.
func (s Directions) List() []Direction {
	var out []Direction
	for d := Direction(0); d < NumDirections; d++ {
		if s.Has(d) {
			out = append(out, d)
		}
	}
	return out
}

func (s Directions) String() string {
	switch s {
	case DirBoth:
		return "both"
	case DirFromVM:
		return "from-vm"
	case DirToVM:
		return "to-vm"
	}
	return "none"
}

// ParseDirections parses "from-vm", "to-vm" or "both" (also "in"/"out" as
// seen from the VM: "out" = from-vm, "in" = to-vm).
func ParseDirections(s string) (Directions, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "both", "":
		return DirBoth, nil
	case "from-vm", "out", "ingress":
		return DirFromVM, nil
	case "to-vm", "in", "egress":
		return DirToVM, nil
	}
	return 0, fmt.Errorf("direction %q: want from-vm, to-vm or both", s)
}

// MarshalText implements encoding.TextMarshaler.
func (s Directions) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Directions) UnmarshalText(b []byte) error {
	d, err := ParseDirections(string(b))
	if err != nil {
		return err
	}
	*s = d
	return nil
}
