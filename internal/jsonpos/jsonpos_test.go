package jsonpos

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestFormat(t *testing.T) {
	err := errors.New("bad")
	for _, c := range []struct {
		file        string
		line, col   int
		field, want string
	}{
		{"f.json", 3, 7, "a.b", "f.json:3:7: a.b: bad"},
		{"f.json", 0, 0, "a.b", "f.json: a.b: bad"},
		{"f.json", 0, 0, "", "f.json: bad"},
		{"", 3, 7, "", "3:7: bad"},
		{"", 0, 0, "", "bad"},
	} {
		if got := Format(c.file, c.line, c.col, c.field, err); got != c.want {
			t.Errorf("Format(%q, %d, %d, %q) = %q, want %q", c.file, c.line, c.col, c.field, got, c.want)
		}
	}
}

func TestLineCol(t *testing.T) {
	data := []byte("ab\ncd\n")
	for _, c := range []struct {
		off          int64
		wantL, wantC int
	}{{-5, 1, 1}, {0, 1, 1}, {1, 1, 2}, {3, 2, 1}, {4, 2, 2}, {6, 3, 1}, {99, 3, 1}} {
		if l, col := LineCol(data, c.off); l != c.wantL || col != c.wantC {
			t.Errorf("LineCol(%d) = %d:%d, want %d:%d", c.off, l, col, c.wantL, c.wantC)
		}
	}
}

var testSchema = Schema{
	Fields:  map[string][]string{"top": {"items"}, "item": {"n", "sub"}},
	Members: map[string]string{"top.items": "items"},
	Elems:   map[string]string{"items": "item"},
}

func walkAll(s *Schema, in string) (map[string]int64, error) {
	at := map[string]int64{}
	err := Walk(json.NewDecoder(strings.NewReader(in)), []byte(in), s, "", "top", at)
	return at, err
}

func TestWalkRecordsOffsets(t *testing.T) {
	in := "{\"items\": [\n  {\"n\": 1, \"sub\": {\"any\": true}}\n]}"
	at, err := walkAll(&testSchema, in)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		"":                 "{",
		"items":            "[",
		"items[0]":         "{\"n\"",
		"items[0].n":       "1,",
		"items[0].sub":     "{\"any\"",
		"items[0].sub.any": "true",
	} {
		off, ok := at[path]
		if !ok {
			t.Errorf("%q not recorded", path)
			continue
		}
		if !strings.HasPrefix(in[off:], want) {
			t.Errorf("%q at %d: %q, want it to start with %q", path, off, in[off:], want)
		}
	}
}

func TestWalkErrors(t *testing.T) {
	raw := testSchema
	raw.RawEOFAtClose = true
	for _, c := range []struct {
		name string
		s    *Schema
		in   string
		want string
	}{
		{"unknown", &testSchema, "{\"items\": [{\"x\": 1}]}", `1:13: items[0].x: unknown field "x" (known: n, sub)`},
		{"duplicate", &testSchema, "{\"items\": [],\n \"items\": []}", "2:2: items: duplicate field"},
		{"end of file in value", &testSchema, `{"items": `, "1:11: unexpected end of file"},
		{"end of file at close", &testSchema, `{"items": []`, "1:13: unexpected end of file"},
		{"raw end of file at close", &raw, `{"items": []`, "1:13: EOF"},
		{"syntax", &testSchema, `{"items": [}`, "1:12: invalid character '}' looking for beginning of value"},
	} {
		_, err := walkAll(c.s, c.in)
		var pe *Error
		if !errors.As(err, &pe) {
			t.Errorf("%s: %v, want *Error", c.name, err)
			continue
		}
		if got := err.Error(); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	if _, err := walkAll(&raw, `{"items": []`); !errors.Is(err, io.EOF) {
		t.Errorf("RawEOFAtClose: %v does not wrap io.EOF", err)
	}
}
