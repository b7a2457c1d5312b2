package domainxml

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// needXmllint returns the path of xmllint, skipping the test when it is
// missing, or failing it under CI=true (the rule of sdk/testkit.Need: a CI
// machine must provide it). apt-get install libxml2-utils.
func needXmllint(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("xmllint")
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("xmllint not found (CI=true: install libxml2-utils)")
	}
	t.Skip("xmllint not found: install libxml2-utils to check the corpus against the RELAX NG schema")
	return ""
}

// xmllint exit codes (xmllint(1)): 1 not well-formed, 3 not valid.
const (
	xmllintMalformed = 1
	xmllintInvalid   = 3
)

var wantRE = regexp.MustCompile(`want: (.*?) -->`)

// corpusCase is one file under libvirt/testdata/{domain,network}-metadata.
type corpusCase struct {
	path   string
	schema string
	// valid: both accept; invalid: both reject; semantic: the schema
	// accepts, the parser rejects (uniqueness, which RELAX NG cannot say).
	class string
	want  string // substring of the parser's error
	parse func([]byte) error
}

func corpus(t *testing.T) []corpusCase {
	t.Helper()
	var out []corpusCase
	for _, k := range []struct {
		dir, schema string
		parse       func([]byte) error
	}{
		{"domain-metadata", "vnicfilter-domain.rng", func(b []byte) error { _, err := ParseConfig(b); return err }},
		{"network-metadata", "vnicfilter-network.rng", func(b []byte) error { _, _, err := parseElement(b, "", kindNetwork); return err }},
	} {
		files, err := filepath.Glob(filepath.Join("..", "testdata", k.dir, "*", "*.xml"))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			c := corpusCase{path: f, schema: filepath.Join("..", "schema", k.schema), class: filepath.Base(filepath.Dir(f)), parse: k.parse}
			if m := wantRE.FindSubmatch(data); m != nil {
				c.want = string(m[1])
			}
			if c.class != "valid" && c.want == "" {
				t.Fatalf("%s: no <!-- want: … --> comment naming the expected error", f)
			}
			out = append(out, c)
		}
	}
	if len(out) < 20 {
		t.Fatalf("corpus has only %d files", len(out))
	}
	return out
}

// TestCorpusParser: the parser accepts valid/, rejects invalid/ and
// semantic/ with the expected message.
func TestCorpusParser(t *testing.T) {
	for _, c := range corpus(t) {
		t.Run(strings.TrimPrefix(c.path, "../testdata/"), func(t *testing.T) {
			data, _ := os.ReadFile(c.path)
			err := c.parse(data)
			if c.class == "valid" {
				if err != nil {
					t.Fatalf("parser rejects a valid document: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("parser accepts an invalid document (want error containing %q)", c.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error %v does not match ErrInvalidConfig", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not contain %q", err, c.want)
			}
		})
	}
}

// TestCorpusSchema: xmllint --relaxng agrees with the classification, so
// the schema and the parser accept exactly the same documents of the
// corpus (semantic/ aside, which the schema cannot express).
func TestCorpusSchema(t *testing.T) {
	xmllint := needXmllint(t)
	for _, c := range corpus(t) {
		t.Run(strings.TrimPrefix(c.path, "../testdata/"), func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := exec.Command(xmllint, "--noout", "--relaxng", c.schema, c.path)
			cmd.Stderr = &stderr
			err := cmd.Run()
			code := 0
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			switch {
			case c.class == "invalid" && (code == xmllintInvalid || code == xmllintMalformed):
			case c.class != "invalid" && code == 0:
			default:
				t.Fatalf("xmllint exit %d on a %s document:\n%s", code, c.class, stderr.String())
			}
		})
	}
}

// TestMarshalValidates: what Marshal writes passes the schema.
func TestMarshalValidates(t *testing.T) {
	xmllint := needXmllint(t)
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "domain-metadata", "valid", "*.xml"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		cfg, err := ParseConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		out, err := Marshal(cfg)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		cmd := exec.Command(xmllint, "--noout", "--relaxng", filepath.Join("..", "schema", "vnicfilter-domain.rng"), "-")
		cmd.Stdin = bytes.NewReader(out)
		if msg, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: marshalled form fails the schema: %v\n%s\n%s", f, err, msg, out)
		}
	}
}
