package encrypt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/vnicfilter/vnicfilter/internal/jsonpos"
)

// ErrInvalidConfig is wrapped by every error about the content of a peers
// or policy file.
var ErrInvalidConfig = errors.New("invalid encrypt configuration")

// ConfigError is an error at a place in a configuration file:
// file:line:col: field: problem.
type ConfigError struct {
	File      string
	Line, Col int
	Field     string
	Err       error
}

func (e *ConfigError) Error() string {
	return jsonpos.Format(e.File, e.Line, e.Col, e.Field, e.Err)
}

func (e *ConfigError) Unwrap() []error { return []error{ErrInvalidConfig, e.Err} }

// jnode is a JSON value with the place it starts, so that errors found
// after parsing (a malformed key, a peer nobody knows) still point at the
// line and column of the offending value.
type jnode struct {
	line, col int
	kind      byte // '{', '[', '"', 'n' (number), 'b' (bool), '0' (null)
	str       string
	num       json.Number
	keys      []string // object members, in order
	vals      []*jnode // object member values or array elements
}

func (n *jnode) get(key string) *jnode {
	if i := slices.Index(n.keys, key); i >= 0 {
		return n.vals[i]
	}
	return nil
}

// parseJSON reads one JSON value (the whole input) into a tree.
func parseJSON(data []byte) (*jnode, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	p := &jparser{dec: dec, data: data}
	n, err := p.value()
	if err != nil {
		return nil, err
	}
	if tok, err := dec.Token(); err != io.EOF {
		line, col := p.pos()
		return nil, &ConfigError{Line: line, Col: col, Err: fmt.Errorf("trailing data after the top-level value (%v)", tok)}
	}
	return n, nil
}

type jparser struct {
	dec   *json.Decoder
	data  []byte
	depth int
}

// pos is the line and column of the next token.
func (p *jparser) pos() (int, int) {
	off := int(p.dec.InputOffset())
	for off < len(p.data) && strings.IndexByte(" \t\r\n:,", p.data[off]) >= 0 {
		off++
	}
	return lineCol(p.data, off)
}

func lineCol(data []byte, off int) (int, int) { return jsonpos.LineCol(data, int64(off)) }

const maxDepth = 32

func (p *jparser) syntax(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := lineCol(p.data, int(se.Offset))
		return &ConfigError{Line: line, Col: col, Err: fmt.Errorf("JSON syntax: %v", se)}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		line, col := lineCol(p.data, len(p.data))
		return &ConfigError{Line: line, Col: col, Err: errors.New("JSON syntax: unexpected end of input")}
	}
	line, col := p.pos()
	return &ConfigError{Line: line, Col: col, Err: fmt.Errorf("JSON syntax: %v", err)}
}

func (p *jparser) value() (*jnode, error) {
	line, col := p.pos()
	tok, err := p.dec.Token()
	if err != nil {
		return nil, p.syntax(err)
	}
	n := &jnode{line: line, col: col}
	switch t := tok.(type) {
	case json.Delim:
		if p.depth++; p.depth > maxDepth {
			return nil, &ConfigError{Line: line, Col: col, Err: errors.New("nested too deep")}
		}
		defer func() { p.depth-- }()
		n.kind = byte(t)
		for p.dec.More() {
			if t == '{' {
				kl, kc := p.pos()
				kt, err := p.dec.Token()
				if err != nil {
					return nil, p.syntax(err)
				}
				key, _ := kt.(string)
				if slices.Contains(n.keys, key) {
					return nil, &ConfigError{Line: kl, Col: kc, Field: key, Err: errors.New("repeated member")}
				}
				n.keys = append(n.keys, key)
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			n.vals = append(n.vals, v)
		}
		if _, err := p.dec.Token(); err != nil { // closing delimiter
			return nil, p.syntax(err)
		}
	case string:
		n.kind, n.str = '"', t
	case json.Number:
		n.kind, n.num = 'n', t
	case bool:
		n.kind = 'b'
	case nil:
		n.kind = '0'
	}
	return n, nil
}

// errAt builds a ConfigError at n for field.
func errAt(n *jnode, field string, format string, args ...any) error {
	e := &ConfigError{Field: field, Err: fmt.Errorf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.line, n.col
	}
	return e
}

var kindNames = map[byte]string{'{': "an object", '[': "an array", '"': "a string", 'n': "a number", 'b': "a boolean", '0': "null"}

// expect checks n's kind.
func expect(n *jnode, field string, kind byte) error {
	if n.kind != kind {
		return errAt(n, field, "want %s, got %s", kindNames[kind], kindNames[n.kind])
	}
	return nil
}

// members checks that n is an object holding only the allowed members.
func members(n *jnode, field string, allowed ...string) error {
	if err := expect(n, field, '{'); err != nil {
		return err
	}
	for i, k := range n.keys {
		if !slices.Contains(allowed, k) {
			return errAt(n.vals[i], join(field, k), "unknown member (known: %s)", strings.Join(allowed, ", "))
		}
	}
	return nil
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}
