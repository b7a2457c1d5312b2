package firewall

import (
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// decodeRule decodes one rule object that fastLocate accepted (valid
// JSON, known keys only, no duplicates) into fr without reflection. It
// takes the common forms only — strings without escapes, integers,
// booleans, arrays of those — and returns false on anything else (null,
// an escape, a value of the wrong type); the caller then decodes the rule
// with json.Unmarshal, which is the authority on what the file means.
// encoding/json was most of the time a 10,000-rule policy took to parse.
func decodeRule(b []byte, fr *fileRule) bool {
	d := ruleDec{b: b}
	d.ws()
	if !d.eat('{') {
		return false
	}
	d.ws()
	if d.eat('}') {
		return true
	}
	for {
		d.ws()
		key, ok := d.str()
		if !ok {
			return false
		}
		d.ws()
		if !d.eat(':') {
			return false
		}
		d.ws()
		switch key {
		case "name":
			fr.Name, ok = d.str()
		case "description":
			fr.Description, ok = d.str()
		case "direction":
			fr.Direction, ok = d.str()
		case "action":
			fr.Action, ok = d.str()
		case "priority":
			fr.Priority, ok = d.intPtr()
		case "icmp_type":
			fr.ICMPType, ok = d.intPtr()
		case "icmp_code":
			fr.ICMPCode, ok = d.intPtr()
		case "fragments":
			fr.Fragments, ok = d.boolean()
		case "log":
			fr.Log, ok = d.boolean()
		case "src":
			fr.Src, ok = d.strings()
		case "dst":
			fr.Dst, ok = d.strings()
		case "src_groups":
			fr.SrcGroups, ok = d.strings()
		case "dst_groups":
			fr.DstGroups, ok = d.strings()
		case "proto":
			var raw []byte
			raw, ok = d.scalar()
			fr.Proto = json.RawMessage(raw)
		case "src_ports":
			fr.SrcPorts, ok = d.raws()
		case "dst_ports":
			fr.DstPorts, ok = d.raws()
		default:
			return false
		}
		if !ok {
			return false
		}
		d.ws()
		if d.eat(',') {
			continue
		}
		return d.eat('}')
	}
}

type ruleDec struct {
	b []byte
	i int
}

func (d *ruleDec) ws() {
	for d.i < len(d.b) && (d.b[d.i] == ' ' || d.b[d.i] == '\t' || d.b[d.i] == '\n' || d.b[d.i] == '\r') {
		d.i++
	}
}

func (d *ruleDec) eat(c byte) bool {
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// str reads a string without escapes or invalid UTF-8 (which
// encoding/json replaces).
func (d *ruleDec) str() (string, bool) {
	if !d.eat('"') {
		return "", false
	}
	start := d.i
	ascii := true
	for ; d.i < len(d.b); d.i++ {
		switch c := d.b[d.i]; {
		case c == '"':
			d.i++
			s := d.b[start : d.i-1]
			return string(s), ascii || utf8.Valid(s)
		case c == '\\' || c < 0x20:
			return "", false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return "", false
}

// scalar returns the bytes of a string without escapes or an integer.
func (d *ruleDec) scalar() ([]byte, bool) {
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '"' {
		if _, ok := d.str(); !ok {
			return nil, false
		}
		return d.b[start:d.i], true
	}
	if _, ok := d.integer(); !ok {
		return nil, false
	}
	return d.b[start:d.i], true
}

func (d *ruleDec) integer() (int, bool) {
	start := d.i
	if d.i < len(d.b) && d.b[d.i] == '-' {
		d.i++
	}
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	if d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		return 0, false
	}
	n, err := strconv.Atoi(string(d.b[start:d.i]))
	return n, err == nil
}

func (d *ruleDec) intPtr() (*int, bool) {
	n, ok := d.integer()
	return &n, ok
}

func (d *ruleDec) boolean() (bool, bool) {
	switch {
	case d.i+4 <= len(d.b) && string(d.b[d.i:d.i+4]) == "true":
		d.i += 4
		return true, true
	case d.i+5 <= len(d.b) && string(d.b[d.i:d.i+5]) == "false":
		d.i += 5
		return false, true
	}
	return false, false
}

// array reads [elem, ...] calling elem for each; an empty array is not
// nil (an empty address list matches nothing, unlike a missing one).
func (d *ruleDec) array(elem func() bool) bool {
	if !d.eat('[') {
		return false
	}
	d.ws()
	if d.eat(']') {
		return true
	}
	for {
		d.ws()
		if !elem() {
			return false
		}
		d.ws()
		if d.eat(',') {
			continue
		}
		return d.eat(']')
	}
}

func (d *ruleDec) strings() ([]string, bool) {
	out := make([]string, 0, 1)
	ok := d.array(func() bool {
		s, ok := d.str()
		out = append(out, s)
		return ok
	})
	return out, ok
}

func (d *ruleDec) raws() ([]json.RawMessage, bool) {
	out := make([]json.RawMessage, 0, 1)
	ok := d.array(func() bool {
		r, ok := d.scalar()
		out = append(out, r)
		return ok
	})
	return out, ok
}
