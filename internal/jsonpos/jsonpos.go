// Package jsonpos locates values in a JSON configuration file so that
// errors read file:line:col: field: problem. It holds what the filters'
// config parsers (dlb, encap, encrypt) used to carry each a copy of: the
// offset-to-line/column conversion, the error text, and a walk over the
// decoder's tokens that records where every value starts and refuses
// unknown and duplicate fields.
package jsonpos

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
)

// Error is a problem at a place in a JSON file. Walk returns one; each
// filter copies it into its own error type, which wraps that filter's
// ErrInvalid… sentinel.
type Error struct {
	File      string
	Line, Col int
	// Field is the JSON path of the value, e.g. services[2].backends[0].port.
	Field string
	Err   error
}

func (e *Error) Error() string { return Format(e.File, e.Line, e.Col, e.Field, e.Err) }

func (e *Error) Unwrap() error { return e.Err }

// Format renders file:line:col: field: err, leaving out each part that is
// unknown (empty file or field, line 0).
func Format(file string, line, col int, field string, err error) string {
	var b strings.Builder
	if file != "" {
		b.WriteString(file + ":")
	}
	if line > 0 {
		fmt.Fprintf(&b, "%d:%d: ", line, col)
	} else if file != "" {
		b.WriteString(" ")
	}
	if field != "" {
		b.WriteString(field + ": ")
	}
	b.WriteString(err.Error())
	return b.String()
}

// LineCol turns a byte offset into a 1-based line and column; an offset
// outside data is clamped to it.
func LineCol(data []byte, off int64) (int, int) {
	off = min(max(off, 0), int64(len(data)))
	before := data[:off]
	line := bytes.Count(before, []byte{'\n'}) + 1
	col := int(off) - (bytes.LastIndexByte(before, '\n') + 1) + 1
	return line, col
}

// SkipSep advances off past white space and the ':' and ',' separators,
// to where the next token starts (json.Decoder.InputOffset points before
// them).
func SkipSep(data []byte, off int64) int64 {
	for off < int64(len(data)) {
		switch data[off] {
		case ' ', '\t', '\r', '\n', ':', ',':
			off++
		default:
			return off
		}
	}
	return off
}

// Schema names the kinds of object and list in a file. A kind is a
// label the caller chooses ("top" for the outermost value by convention);
// a value whose kind is "" is walked but not checked.
type Schema struct {
	// Fields lists the keys an object of each kind may have; an object
	// whose kind is not here may have any key.
	Fields map[string][]string
	// Members gives the kind of a member's value, keyed by the object's
	// kind and the member's key ("top.services").
	Members map[string]string
	// Elems gives the kind of a list's elements, keyed by the list's kind.
	Elems map[string]string
	// RawEOFAtClose reports end of input where a closing '}' or ']' is
	// due as the decoder's own error (io.EOF: "EOF") instead of
	// "unexpected end of file". dlb has always done so; its messages are
	// kept as they were.
	RawEOFAtClose bool
}

// Walk reads one value from dec, records the offset of every value under
// its path in at (path "" for the outermost, then "a.b", "a[0]"), and
// refuses unknown and duplicate fields. Errors are *Error with line and
// column and no file.
func Walk(dec *json.Decoder, data []byte, s *Schema, path, kind string, at map[string]int64) error {
	off := SkipSep(data, dec.InputOffset())
	at[path] = off
	tok, err := dec.Token()
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			off = se.Offset
		} else if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			off = int64(len(data))
			err = errors.New("unexpected end of file")
		}
		line, col := LineCol(data, off)
		return &Error{Line: line, Col: col, Err: err}
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	join := func(k string) string {
		if path == "" {
			return k
		}
		return path + "." + k
	}
	switch d {
	case '{':
		seen := map[string]bool{}
		for dec.More() {
			koff := SkipSep(data, dec.InputOffset())
			kt, err := dec.Token()
			if err != nil {
				line, col := LineCol(data, koff)
				return &Error{Line: line, Col: col, Err: err}
			}
			key, _ := kt.(string)
			if allowed, ok := s.Fields[kind]; ok && !slices.Contains(allowed, key) {
				line, col := LineCol(data, koff)
				return &Error{Line: line, Col: col, Field: join(key), Err: fmt.Errorf("unknown field %q (known: %s)", key, strings.Join(allowed, ", "))}
			}
			if seen[key] {
				line, col := LineCol(data, koff)
				return &Error{Line: line, Col: col, Field: join(key), Err: errors.New("duplicate field")}
			}
			seen[key] = true
			if err := Walk(dec, data, s, join(key), s.Members[kind+"."+key], at); err != nil {
				return err
			}
		}
	case '[':
		elem := s.Elems[kind]
		for i := 0; dec.More(); i++ {
			if err := Walk(dec, data, s, fmt.Sprintf("%s[%d]", path, i), elem, at); err != nil {
				return err
			}
		}
	}
	if _, err := dec.Token(); err != nil { // closing delimiter
		if !s.RawEOFAtClose && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)) {
			err = errors.New("unexpected end of file")
		}
		line, col := LineCol(data, dec.InputOffset())
		return &Error{Line: line, Col: col, Err: err}
	}
	return nil
}
