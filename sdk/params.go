package sdk

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ParamType is the type of a filter parameter's value.
type ParamType uint8

const (
	// String accepts any value (subject to Enum and Pattern checks).
	String ParamType = iota
	// Int accepts a base-10 integer within [Min, Max] when those are set.
	Int
	// Bool accepts true/false, yes/no, on/off, 1/0.
	Bool
	// Duration accepts a Go duration ("250ms", "5s").
	Duration
	// Prefix accepts an IPv4 or IPv6 CIDR prefix or a single address.
	Prefix
)

var paramTypeNames = []string{"string", "int", "bool", "duration", "prefix"}

func (t ParamType) String() string {
	if int(t) < len(paramTypeNames) {
		return paramTypeNames[t]
	}
	return fmt.Sprintf("paramtype(%d)", uint8(t))
}

// MarshalText implements encoding.TextMarshaler.
func (t ParamType) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (t *ParamType) UnmarshalText(b []byte) error {
	for i, n := range paramTypeNames {
		if n == string(b) {
			*t = ParamType(i)
			return nil
		}
	}
	return fmt.Errorf("unknown parameter type %q (want %s)", b, strings.Join(paramTypeNames, ", "))
}

// ParamSpec describes one parameter a filter accepts.
type ParamSpec struct {
	// Name is the key operators use (domain XML, vfctl --param name=value).
	Name string `json:"name"`
	// Type decides how the value is parsed and checked.
	Type ParamType `json:"type"`
	// Doc is one line shown by `vfctl filters`.
	Doc string `json:"doc,omitempty"`
	// Default is used when the operator gives no value. Empty with
	// Required false means "unset".
	Default string `json:"default,omitempty"`
	// Required parameters must be given.
	Required bool `json:"required,omitempty"`
	// Enum, when set, lists the only accepted values (String only).
	Enum []string `json:"enum,omitempty"`
	// Min and Max bound Int values when non-nil.
	Min *int64 `json:"min,omitempty"`
	Max *int64 `json:"max,omitempty"`
}

// Bound returns a pointer to v, for ParamSpec.Min and Max.
func Bound(v int64) *int64 { return &v }

// Params are validated parameter values of one filter instance.
type Params struct {
	vals map[string]string
	spec []ParamSpec
}

// ValidateParams checks raw against specs: every key must be declared,
// every required one present, every value well-formed. Defaults fill the
// gaps. Errors wrap ErrInvalidParam and name the parameter.
func ValidateParams(specs []ParamSpec, raw map[string]string) (Params, error) {
	p := Params{vals: map[string]string{}, spec: specs}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !slices.ContainsFunc(specs, func(s ParamSpec) bool { return s.Name == k }) {
			return Params{}, fmt.Errorf("%w: unknown parameter %q (known: %s)", ErrInvalidParam, k, paramNames(specs))
		}
	}
	for _, s := range specs {
		v, ok := raw[s.Name]
		if !ok {
			if s.Required {
				return Params{}, fmt.Errorf("%w: parameter %q is required", ErrInvalidParam, s.Name)
			}
			if s.Default == "" {
				continue
			}
			v = s.Default
		}
		if err := s.check(v); err != nil {
			return Params{}, fmt.Errorf("%w: parameter %q: %v", ErrInvalidParam, s.Name, err)
		}
		p.vals[s.Name] = v
	}
	return p, nil
}

func paramNames(specs []ParamSpec) string {
	if len(specs) == 0 {
		return "none"
	}
	names := make([]string, len(specs))
	for i, s := range specs {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

func (s ParamSpec) check(v string) error {
	switch s.Type {
	case String:
		if len(s.Enum) > 0 && !slices.Contains(s.Enum, v) {
			return fmt.Errorf("value %q not one of %s", v, strings.Join(s.Enum, ", "))
		}
	case Int:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("value %q is not an integer", v)
		}
		if s.Min != nil && n < *s.Min {
			return fmt.Errorf("value %d below minimum %d", n, *s.Min)
		}
		if s.Max != nil && n > *s.Max {
			return fmt.Errorf("value %d above maximum %d", n, *s.Max)
		}
	case Bool:
		if _, err := parseBool(v); err != nil {
			return err
		}
	case Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("value %q is not a duration (e.g. 500ms, 5s)", v)
		}
		if d < 0 {
			return fmt.Errorf("value %q is negative", v)
		}
	case Prefix:
		if _, err := parsePrefix(v); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown parameter type %v", s.Type)
	}
	return nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "true", "yes", "on":
		return true, nil
	case "0", "false", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("value %q is not a boolean (true/false)", v)
}

func parsePrefix(v string) (netip.Prefix, error) {
	if strings.Contains(v, "/") {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("value %q is not a CIDR prefix", v)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("value %q is not an IP address or prefix", v)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Map returns the values as a new map (defaults included).
func (p Params) Map() map[string]string {
	out := make(map[string]string, len(p.vals))
	for k, v := range p.vals {
		out[k] = v
	}
	return out
}

// Has reports whether name has a value (given or default).
func (p Params) Has(name string) bool { _, ok := p.vals[name]; return ok }

// String returns the value of name, or "".
func (p Params) String(name string) string { return p.vals[name] }

// Int returns the value of an Int parameter, or 0 if unset.
func (p Params) Int(name string) int64 {
	n, _ := strconv.ParseInt(p.vals[name], 10, 64)
	return n
}

// Bool returns the value of a Bool parameter, false if unset.
func (p Params) Bool(name string) bool {
	b, _ := parseBool(p.vals[name])
	return b
}

// Duration returns the value of a Duration parameter, 0 if unset.
func (p Params) Duration(name string) time.Duration {
	d, _ := time.ParseDuration(p.vals[name])
	return d
}

// Prefix returns the value of a Prefix parameter (masked), invalid if unset.
func (p Params) Prefix(name string) netip.Prefix {
	pr, _ := parsePrefix(p.vals[name])
	return pr
}
