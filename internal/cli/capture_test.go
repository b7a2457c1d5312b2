package cli

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCaptureMatch: --match is checked by vfctl (a bad term is a usage
// error naming the field, and nothing is asked of filterd) and sent to
// filterd in canonical form; the old shorthands still work and do not mix
// with --match.
func TestCaptureMatch(t *testing.T) {
	const route = "GET /v1/vnics/vnet3/capture"
	for _, c := range []struct {
		args      []string
		code      int
		wantQuery map[string]string // checked keys; "" = absent
		stderr    string
	}{
		{[]string{"--match", "src=2001:db8::7 dst=2001:db8:1::/64 proto=tcp dport=80-90 bidir"}, 0,
			map[string]string{"match": "src=2001:db8::7/128,dst=2001:db8:1::/64,proto=tcp,dport=80-90,bidir", "proto": "", "cidr": ""}, ""},
		{[]string{"--proto", "6", "--port", "443", "--cidr", "fd00::/8"}, 0,
			map[string]string{"match": "", "proto": "6", "port": "443", "cidr": "fd00::/8"}, ""},
		{[]string{"--match", "dport=90-80"}, ExitUsage, nil, "match: dport: range"},
		{[]string{"--match", "src=10.0.0.0/8,dst=fd00::/8"}, ExitUsage, nil, "match: dst: fd00::/8 is IPv6"},
		{[]string{"--match", "vlan=3"}, ExitUsage, nil, `unknown term "vlan=3"`},
		{[]string{"--match", "proto=udp", "--port", "53"}, ExitUsage, nil, "cannot be combined"},
	} {
		f := newFakeDaemon(t, map[string]cannedReply{route: {body: "pcapng bytes"}})
		out := filepath.Join(t.TempDir(), "c.pcapng")
		r := vfctl(t, context.Background(), f.socket, append([]string{"capture", "vnet3", "-w", out}, c.args...)...)
		if r.code != c.code || !strings.Contains(r.stderr, c.stderr) {
			t.Errorf("%q: exit %d stderr %q, want %d and %q", c.args, r.code, r.stderr, c.code, c.stderr)
			continue
		}
		raw := f.query(route)
		if c.code != 0 {
			if raw != "" || f.body(route) != nil {
				t.Errorf("%q: filterd was asked (%q) despite the bad match", c.args, raw)
			}
			continue
		}
		q, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range c.wantQuery {
			if got := q.Get(k); got != v {
				t.Errorf("%q: query %s=%q, want %q (query %s)", c.args, k, got, v, raw)
			}
		}
		if b, _ := os.ReadFile(out); string(b) != "pcapng bytes" {
			t.Errorf("%q: file holds %q", c.args, b)
		}
	}
}

// TestChainSpecMirrorMatch: a mirror's match goes through the chain
// syntax of "vfctl chain set" with blanks between its terms, or with its
// commas escaped, as docs/mirror.md says.
func TestChainSpecMirrorMatch(t *testing.T) {
	for in, want := range map[string]string{
		`mirror:sink=/tmp/x,match=src=2001:db8::1 dport=80-90 bidir`:  "src=2001:db8::1 dport=80-90 bidir",
		`mirror:sink=/tmp/x,match=src=10.0.0.0/8\,proto=udp\,port=53`: "src=10.0.0.0/8,proto=udp,port=53",
	} {
		spec, err := parseFilterSpec(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if spec.Params["match"] != want || spec.Params["sink"] != "/tmp/x" {
			t.Errorf("%s: params %q, want match %q", in, spec.Params, want)
		}
	}
}
