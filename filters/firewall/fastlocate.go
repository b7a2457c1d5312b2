package firewall

import (
	"bytes"
	"encoding/json"
	"slices"
)

// fastLocate checks a well-formed policy document in one pass over the
// bytes: syntax, nesting, duplicate keys and unknown keys of the policy,
// its defaults and its rules. It records only where each top-level value
// and each rule lies; the position of anything else is needed only for an
// error message and is found then by locate (locations.offset). It
// returns nil on anything it does not accept — a syntax error, a duplicate
// or unknown key, an escaped key, deep nesting — and the caller runs
// locate, whose errors name the problem and its position.
//
// (Recording every value's JSON path here, as an earlier version did,
// was a third of the time a 10,000-rule policy took to parse.)
func fastLocate(data []byte) *locations {
	s := &fastScan{d: data, top: map[string]span{}}
	s.ws()
	if s.i >= len(s.d) || s.d[s.i] != '{' {
		return nil
	}
	if !s.value(ctxRoot, 0) {
		return nil
	}
	s.ws()
	if s.i != len(s.d) {
		return nil
	}
	return &locations{data: data, at: map[string]int64{}, lazy: true, ruleOffs: s.ruleOffs, ruleEnds: s.ruleEnds, top: s.top}
}

// span is a value's bytes, [start, end).
type span struct{ start, end int }

// What a value is, for the key checks.
type scanCtx uint8

const (
	ctxAny      scanCtx = iota // no checks below
	ctxRoot                    // the policy object: topKeys
	ctxDefaults                // "defaults": defaultKeys
	ctxRules                   // "rules": its elements are rules
	ctxRule                    // one rule: ruleKeys
)

type fastScan struct {
	d []byte
	i int
	// top: the root object's values by key; ruleOffs/ruleEnds: the
	// elements of its "rules" array.
	top                map[string]span
	ruleOffs, ruleEnds []int64
}

func (s *fastScan) ws() {
	for s.i < len(s.d) {
		switch s.d[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// childCtx is the context of the value under key in an object of ctx.
func childCtx(ctx scanCtx, key []byte) scanCtx {
	if ctx != ctxRoot {
		return ctxAny
	}
	switch string(key) {
	case "defaults":
		return ctxDefaults
	case "rules":
		return ctxRules
	}
	return ctxAny
}

// allowedKeys are the keys an object of ctx may hold (nil: any).
func allowedKeys(ctx scanCtx) []string {
	switch ctx {
	case ctxRoot:
		return topKeys
	case ctxDefaults:
		return defaultKeys
	case ctxRule:
		return ruleKeys
	}
	return nil
}

func (s *fastScan) value(ctx scanCtx, depth int) bool {
	if depth > 32 {
		return false
	}
	s.ws()
	if s.i >= len(s.d) {
		return false
	}
	switch c := s.d[s.i]; c {
	case '{':
		s.i++
		s.ws()
		if s.i < len(s.d) && s.d[s.i] == '}' {
			s.i++
			return true
		}
		allowed := allowedKeys(ctx)
		var seen [][]byte // objects hold a handful of keys
		for {
			s.ws()
			key, ok := s.key()
			if !ok {
				return false
			}
			for _, k := range seen {
				if bytes.Equal(k, key) {
					return false // locate reports the duplicate with its position
				}
			}
			seen = append(seen, key)
			if allowed != nil && !slices.Contains(allowed, string(key)) {
				return false // checkKeys names it and the known ones
			}
			s.ws()
			if s.i >= len(s.d) || s.d[s.i] != ':' {
				return false
			}
			s.i++
			s.ws()
			start := s.i
			if !s.value(childCtx(ctx, key), depth+1) {
				return false
			}
			if ctx == ctxRoot {
				s.top[string(key)] = span{start, s.i}
			}
			s.ws()
			if s.i >= len(s.d) {
				return false
			}
			if s.d[s.i] == ',' {
				s.i++
				continue
			}
			if s.d[s.i] == '}' {
				s.i++
				return true
			}
			return false
		}
	case '[':
		s.i++
		s.ws()
		if s.i < len(s.d) && s.d[s.i] == ']' {
			s.i++
			return true
		}
		elem := ctxAny
		if ctx == ctxRules {
			elem = ctxRule
		}
		for {
			s.ws()
			start := s.i
			if !s.value(elem, depth+1) {
				return false
			}
			if ctx == ctxRules {
				s.ruleOffs = append(s.ruleOffs, int64(start))
				s.ruleEnds = append(s.ruleEnds, int64(s.i))
			}
			s.ws()
			if s.i >= len(s.d) {
				return false
			}
			if s.d[s.i] == ',' {
				s.i++
				continue
			}
			if s.d[s.i] == ']' {
				s.i++
				return true
			}
			return false
		}
	case '"':
		return s.str()
	case 't':
		return s.lit("true")
	case 'f':
		return s.lit("false")
	case 'n':
		return s.lit("null")
	default:
		start := s.i
		for s.i < len(s.d) {
			switch s.d[s.i] {
			case '-', '+', '.', 'e', 'E', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
				s.i++
				continue
			}
			break
		}
		return s.i > start && json.Valid(s.d[start:s.i])
	}
}

func (s *fastScan) lit(w string) bool {
	if s.i+len(w) > len(s.d) || string(s.d[s.i:s.i+len(w)]) != w {
		return false
	}
	s.i += len(w)
	return true
}

// key scans an object key without escapes at s.i and returns its bytes
// (an escaped key is left to locate, which compares decoded keys).
func (s *fastScan) key() ([]byte, bool) {
	if s.i >= len(s.d) || s.d[s.i] != '"' {
		return nil, false
	}
	start := s.i + 1
	for s.i = start; s.i < len(s.d); s.i++ {
		switch c := s.d[s.i]; {
		case c == '\\' || c < 0x20:
			return nil, false
		case c == '"':
			s.i++
			return s.d[start : s.i-1], true
		}
	}
	return nil, false
}

// str scans a string at s.i.
func (s *fastScan) str() bool {
	start := s.i
	s.i++
	escaped := false
	for s.i < len(s.d) {
		switch c := s.d[s.i]; {
		case c == '\\':
			escaped = true
			s.i += 2
			continue
		case c == '"':
			s.i++
			return !escaped || json.Valid(s.d[start:s.i])
		case c < 0x20:
			return false
		}
		s.i++
	}
	return false
}
