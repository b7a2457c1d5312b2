package firewall

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

func TestParseExample(t *testing.T) {
	p, err := LoadPolicy(filepath.Join("testdata", "example.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.Defaults != [sdk.NumDirections]Action{Allow, Deny} || p.NonIP != Deny {
		t.Errorf("defaults %v non-ip %v", p.Defaults, p.NonIP)
	}
	var names []string
	for _, r := range p.Rules {
		names = append(names, r.Name)
	}
	if got := strings.Join(names, ","); got != "no-db-except-pg,https-in,ssh-admins,ping-in,udp-fragments" {
		t.Errorf("order %s: want priority, then file order", got)
	}
	ssh := p.Rules[2]
	if ssh.Line != 12 || !ssh.Log || ssh.Dirs != sdk.DirToVM || len(ssh.Src.Prefixes) != 2 || !ssh.Dst.Any {
		t.Errorf("ssh rule %+v", ssh)
	}
	if _, err := Compile(p); err != nil {
		t.Fatal(err)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name, doc, want string
	}{
		{"syntax", "{\n \"version\": 1,\n \"rules\": [\n  {\"action\": \"allow\",}\n ]\n}", "p.json:4:"},
		{"not an object", `[1]`, "a policy is a JSON object"},
		{"version", `{"version": 2}`, `p.json:1:13: version: version 2: want 1`},
		{"unknown field", "{\"version\": 1,\n \"rules\": [{\"action\": \"allow\", \"dport\": 80}]}", `p.json:2:32: rules[0].dport: unknown field "dport"`},
		{"bad cidr", "{\"version\": 1,\n \"rules\": [\n  {\"action\": \"allow\",\n   \"src\": [\"10.0.0.0/8\", \"10.0.0.300\"]}]}", `p.json:4:26: rules[0].src[1]: "10.0.0.300" is not an IP address`},
		{"bad port", `{"version": 1, "rules": [{"action": "deny", "proto": "tcp", "dst_ports": [80, "90-70"]}]}`, `rules[0].dst_ports[1]: port "90-70"`},
		{"ports without tcp", `{"version": 1, "rules": [{"action": "deny", "dst_ports": [80]}]}`, `rules[0].proto: ports need proto tcp or udp`},
		{"icmp on tcp", `{"version": 1, "rules": [{"action": "deny", "proto": "tcp", "icmp_type": 3}]}`, `need proto icmp`},
		{"proto", `{"version": 1, "rules": [{"action": "deny", "proto": "gre"}]}`, `rules[0].proto: proto "gre"`},
		{"proto range", `{"version": 1, "rules": [{"action": "deny", "proto": 300}]}`, `proto "300"`},
		{"action", `{"version": 1, "rules": [{"action": "drop"}]}`, `rules[0].action: action "drop": want allow, deny or reject`},
		{"no action", `{"version": 1, "rules": [{}]}`, `action missing`},
		{"unknown group", `{"version": 1, "rules": [{"action": "deny", "src_groups": ["web"]}]}`, `rules[0].src_groups[0]: unknown address group "web"`},
		{"type", `{"version": 1, "rules": [{"action": "deny", "log": "yes"}]}`, `want bool`},
		{"direction", `{"version": 1, "rules": [{"action": "deny", "direction": "ingress"}]}`, `direction "ingress"`},
		{"default", `{"version": 1, "defaults": {"to-vm": "maybe"}}`, `defaults.to-vm: action "maybe"`},
		{"fragments with ports", `{"version": 1, "rules": [{"action": "allow", "proto": "udp", "dst_ports": [53], "fragments": true}]}`, `cannot match ports`},
		{"duplicate", `{"version": 1, "version": 1}`, `duplicate field`},
		{"trailing", `{"version": 1} {}`, `trailing data`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParsePolicy([]byte(c.doc), ParseOptions{File: "p.json"})
			if err == nil {
				t.Fatal("no error")
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("%v does not wrap ErrInvalidPolicy", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q\nwant it to contain %q", err, c.want)
			}
		})
	}
}

// TestGroupResolver: names the file does not define go to the resolver
// (the seam for dynamic, tag-based groups); an empty group matches nothing.
func TestGroupResolver(t *testing.T) {
	doc := `{"version": 1, "rules": [
		{"action": "allow", "src_groups": ["tag:web"]},
		{"action": "deny", "dst_groups": ["empty"]}]}`
	res := StaticGroups{"tag:web": {netip.MustParsePrefix("10.1.0.0/16")}, "empty": {}}
	p, err := ParsePolicy([]byte(doc), ParseOptions{Groups: res})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Rules[0].Src.Prefixes; len(got) != 1 || got[0].String() != "10.1.0.0/16" {
		t.Errorf("resolved %v", got)
	}
	pkt := Packet{Kind: KindIP, Dir: sdk.FromVM, Family: 4, Src: netip.MustParseAddr("10.9.0.1"), Dst: netip.MustParseAddr("10.9.0.2"), Proto: ProtoUDP}
	if r := p.Match(&pkt); r != -1 {
		t.Errorf("an empty group matched (rule %d)", r)
	}
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"version": 1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParsePolicy(b, ParseOptions{File: "fuzz.json"})
		// The fast scanner and decoders must agree with encoding/json.
		slow, serr := parsePolicy(b, ParseOptions{File: "fuzz.json"}, false)
		if (err == nil) != (serr == nil) || err != nil && err.Error() != serr.Error() {
			t.Fatalf("fast parse: %v\nslow parse: %v", err, serr)
		}
		if err == nil && !reflect.DeepEqual(p, slow) {
			t.Fatalf("fast and slow parses differ:\n%+v\n%+v", p, slow)
		}
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *PolicyError", err)
			}
			return
		}
		if len(p.Rules) > 200 {
			return
		}
		if _, err := Compile(p); err != nil && !errors.Is(err, ErrTooComplex) {
			t.Fatalf("valid policy does not compile: %v", err)
		}
	})
}

// TestWriteFuzzCorpus regenerates testdata/fuzz/FuzzParsePolicy:
// VF_WRITE_CORPUS=1 go test -run TestWriteFuzzCorpus.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("VF_WRITE_CORPUS") == "" {
		t.Skip("set VF_WRITE_CORPUS=1 to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzParsePolicy")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join("testdata", "example.json"))
	if err != nil {
		t.Fatal(err)
	}
	seeds := map[string][]byte{"example": example, "empty_object": []byte(`{}`), "minimal": []byte(`{"version":1}`)}
	for i, c := range []string{"syntax", "unknown field", "bad cidr", "bad port", "unknown group", "type", "duplicate"} {
		seeds[strings.ReplaceAll(c, " ", "_")] = []byte(parseErrorDoc(t, c))
		_ = i
	}
	for name, data := range seeds {
		out := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(data)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func parseErrorDoc(t *testing.T, name string) string {
	docs := map[string]string{
		"syntax":        "{\n \"version\": 1,\n \"rules\": [\n  {\"action\": \"allow\",}\n ]\n}",
		"unknown field": "{\"version\": 1,\n \"rules\": [{\"action\": \"allow\", \"dport\": 80}]}",
		"bad cidr":      `{"version": 1, "rules": [{"action": "allow", "src": ["10.0.0.0/8", "10.0.0.300"]}]}`,
		"bad port":      `{"version": 1, "rules": [{"action": "deny", "proto": "tcp", "dst_ports": [80, "90-70"]}]}`,
		"unknown group": `{"version": 1, "rules": [{"action": "deny", "src_groups": ["web"]}]}`,
		"type":          `{"version": 1, "rules": [{"action": "deny", "log": "yes"}]}`,
		"duplicate":     `{"version": 1, "version": 1}`,
	}
	return docs[name]
}

// TestPositionsMatchLineCol: the indexed line numbers agree with counting.
func TestPositionsMatchLineCol(t *testing.T) {
	data := []byte("{\n  \"version\": 1,\n  \"rules\": [\n    {\"action\": \"allow\"},\n\n    {\"action\": \"deny\"}\n  ]\n}\n")
	l, err := locate(data)
	if err != nil {
		t.Fatal(err)
	}
	for path := range l.at {
		line, col := l.pos(path)
		wl, wc := lineCol(data, l.at[path])
		if line != wl || col != wc {
			t.Errorf("%q: pos %d:%d, lineCol %d:%d", path, line, col, wl, wc)
		}
	}
}

// BenchmarkParse10k parses a 10,000-rule policy (the swap target is
// 100 ms for parse, compile and swap together).
func BenchmarkParse10k(b *testing.B) {
	data := []byte(policy10k())
	for b.Loop() {
		if _, err := ParsePolicy(data, ParseOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCompile10k(b *testing.B) {
	p, err := ParsePolicy([]byte(policy10k()), ParseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := Compile(p); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFastLocateAgrees: on every accepted document, fastLocate records the
// same positions and keys as locate.
func TestFastLocateAgrees(t *testing.T) {
	docs := [][]byte{
		[]byte("{\n  \"version\": 1,\n  \"rules\": [\n    {\"action\": \"allow\", \"src\": [\"10.0.0.0/8\", \"fd00::/8\"]},\n\n    {\"action\": \"deny\", \"name\": \"a\\\"b\"}\n  ]\n}\n"),
		[]byte(`{"version":1,"groups":{"x":[]},"defaults":{"to-vm":"deny"},"rules":[],"description":"\u00e9 ok"}`),
	}
	if b, err := os.ReadFile("testdata/example.json"); err == nil {
		docs = append(docs, b)
	}
	for _, d := range docs {
		slow, err := locate(d)
		if err != nil {
			t.Fatal(err)
		}
		fast := fastLocate(d)
		if fast == nil {
			t.Fatalf("fastLocate refused %s", d)
		}
		fast.offset("") // builds at on demand
		if !maps.Equal(fast.at, slow.at) {
			t.Errorf("fastLocate differs on %s:\n fast %v\n slow %v", d, fast.at, slow.at)
		}
		var rules int
		for path := range slow.at {
			if strings.HasPrefix(path, "rules[") && !strings.ContainsAny(path[len("rules["):], ".[") {
				rules++
			}
		}
		if len(fast.ruleOffs) != rules || len(fast.ruleEnds) != rules {
			t.Errorf("fastLocate found %d/%d rules in %s, want %d", len(fast.ruleOffs), len(fast.ruleEnds), d, rules)
		}
		for i, off := range fast.ruleOffs {
			if want := slow.at[fmt.Sprintf("rules[%d]", i)]; off != want || d[fast.ruleEnds[i]-1] != '}' {
				t.Errorf("rule %d at %d..%d, want from %d", i, off, fast.ruleEnds[i], want)
			}
		}
	}
	for _, bad := range []string{`{"a":1,"a":2}`, `{"a":}`, `{"a":1`, `[1]`, `{"a":1} x`, `{"a":tru}`, `{"a":01x}`,
		// unknown keys, and an escaped key (locate decodes it)
		`{"version":1,"bogus":2}`, `{"rules":[{"act":"x"}]}`, `{"defaults":{"x":"allow"}}`, `{"vers\u0069on":1}`} {
		if fastLocate([]byte(bad)) != nil {
			t.Errorf("fastLocate accepted %q", bad)
		}
	}
}

func TestRuleLines(t *testing.T) {
	data := []byte("{\"version\": 1, \"rules\": [\n{\"action\": \"allow\"},\n\n  {\"action\": \"deny\"}\n]}")
	p, err := ParsePolicy(data, ParseOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Rules) != 2 || p.Rules[0].Line != 2 || p.Rules[1].Line != 4 {
		t.Errorf("rule lines %d, %d; want 2, 4", p.Rules[0].Line, p.Rules[1].Line)
	}
}

// policy10k is a 10,000-rule policy for the parse, compile and reload
// benchmarks.
func policy10k() string {
	var sb strings.Builder
	sb.WriteString(`{"version": 1, "rules": [` + "\n")
	for i := range 10000 {
		if i > 0 {
			sb.WriteString(",\n")
		}
		fmt.Fprintf(&sb, `{"name": "r%d", "direction": "to-vm", "src": ["10.%d.%d.0/24"], "proto": "tcp", "dst_ports": [%d], "action": "allow"}`, i, i/256%256, i%256, 1+i%60000)
	}
	sb.WriteString("\n]}\n")
	return sb.String()
}
