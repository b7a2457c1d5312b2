package encrypt

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// testGroups is a host group table: tag groups exist always (empty until
// tagged), others only when listed, as filterd's.
type testGroups map[string][]netip.Prefix

func (g testGroups) Members(name string) ([]netip.Prefix, error) {
	ms, ok := g[name]
	if !ok && !strings.HasPrefix(name, "tag:") {
		return nil, fmt.Errorf("%w %q", sdk.ErrUnknownGroup, name)
	}
	return ms, nil
}

func pfx(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

var pairPeers = `{"prefixes": ["10.99.1.0/24", "fd00:1::/64"], "peers": [
	{"name": "b", "public_key": "` + keyB + `", "endpoint": "192.0.2.2:1", "prefixes": ["10.99.2.0/24", "fd00:2::/64"]},
	{"name": "c", "public_key": "` + keyC + `", "endpoint": "192.0.2.3:1", "prefixes": ["10.99.3.0/24"]}]}`

func TestParsePairsErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`{"pairs": [{"from": "tag:pci"}]}`, "1:12: pairs[0].to: missing"},
		{`{"pairs": [{"from": "tag:pci", "to": "tag:pci", "via": "x"}]}`, "pairs[0].via: unknown member"},
		{`{"pairs": [{"from": "tag:p/ci", "to": "tag:pci"}]}`, `pairs[0].from: "tag:p/ci" is not a tag`},
		{`{"pairs": [{"from": "tag:pci", "to": "group:"}]}`, `pairs[0].to: "group:" is not a group name`},
		{`{"pairs": [{"from": "tag:pci", "to": "10.0.0.1/8"}]}`, `pairs[0].to: "10.0.0.1/8" has host bits set`},
		{`{"pairs": [{"from": "tag:pci", "to": "pci"}]}`, `(or tag:<tag>, group:<name>, peer:<name>)`},
		{`{"pairs": [{"from": "tag:a", "to": "tag:b"}, {"from": "tag:b", "to": "tag:a"}]}`, "pairs[1]: the same pair as pairs[0]"},
		{`{"pairs": {}}`, "pairs: want an array"},
	} {
		_, err := ParsePolicy([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: got %v, want an error containing %q", tc.in, err, tc.want)
		}
	}
}

func TestResolvePairs(t *testing.T) {
	peers, err := ParsePeers([]byte(pairPeers))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(`{"pairs": [
		{"from": "tag:pci", "to": "tag:pci"},
		{"from": "group:web", "to": "peer:c"},
		{"from": "10.99.0.0/16", "to": "fd00:2::/64"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	g := testGroups{"tag:pci": pfx("10.99.1.5/32", "10.99.2.7/32"), "web": pfx("10.99.2.0/25")}
	bits := assignPairBits(nil, pol)
	rp, err := resolvePairs("policy.json", pol, peers, g, bits)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rp.groups, ","); got != "tag:pci,web" {
		t.Errorf("groups used %q, want tag:pci,web", got)
	}
	b := func(p Pair) uint64 { return 1 << bits[p.id()] }
	pci, web, wide := b(pol.Pairs[0]), b(pol.Pairs[1]), b(pol.Pairs[2])
	for p, want := range map[string]Sides{
		// Inside 10.99.0.0/16 (pair 3's from) and web's /25 and tag:pci.
		"10.99.2.7/32": {A: pci | web | wide, B: pci},
		"10.99.1.5/32": {A: pci | wide, B: pci},
		"10.99.2.0/25": {A: web | wide},
		"10.99.3.0/24": {A: wide, B: web},
		"10.99.0.0/16": {A: wide},
		"fd00:2::/64":  {B: wide},
	} {
		if got, ok := rp.table[netip.MustParsePrefix(p)]; !ok || got != want {
			t.Errorf("%s: %+v (present %v), want %+v", p, got, ok, want)
		}
	}
	if len(rp.table) != 6 {
		t.Errorf("table %v: want 6 entries", rp.table)
	}

	// Unknown groups are refused where the policy names them.
	pol2, err := ParsePolicy([]byte("{\"pairs\": [\n  {\"from\": \"tag:pci\", \"to\": \"group:nosuch\"}]}"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = resolvePairs("policy.json", pol2, peers, g, assignPairBits(nil, pol2))
	if err == nil || !strings.Contains(err.Error(), `policy.json:2:29: pairs[0].to: group:nosuch: unknown address group "nosuch"`) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("unknown group: %v", err)
	}
	_, err = resolvePairs("policy.json", pol2, peers, nil, assignPairBits(nil, pol2))
	if err == nil || !strings.Contains(err.Error(), "pairs[0].from: tag:pci: no host group table") {
		t.Errorf("no group table: %v", err)
	}
	pol3, _ := ParsePolicy([]byte(`{"pairs": [{"from": "peer:zz", "to": "tag:pci"}]}`))
	if _, err = resolvePairs("p", pol3, peers, g, assignPairBits(nil, pol3)); err == nil || !strings.Contains(err.Error(), `unknown peer "zz"`) {
		t.Errorf("unknown peer: %v", err)
	}
}

// A pair keeps its bit across reloads whatever its place in the file; a
// new pair does not take a bit an old pair had in the same step.
func TestPairBitsStable(t *testing.T) {
	p1, _ := ParsePolicy([]byte(`{"pairs": [{"from": "tag:a", "to": "tag:b"}, {"from": "tag:pci", "to": "tag:pci"}]}`))
	p2, _ := ParsePolicy([]byte(`{"pairs": [{"from": "tag:new", "to": "tag:new"}, {"from": "tag:pci", "to": "tag:pci"}]}`))
	b1 := assignPairBits(nil, p1)
	b2 := assignPairBits(b1, p2)
	pci := p1.Pairs[1].id()
	if b1[pci] != b2[pci] {
		t.Errorf("tag:pci pair moved from bit %d to %d", b1[pci], b2[pci])
	}
	if nb := b2[p2.Pairs[0].id()]; nb == b1[p1.Pairs[0].id()] || nb == b1[pci] {
		t.Errorf("the new pair took bit %d of the old assignment %v", nb, b1)
	}
}
