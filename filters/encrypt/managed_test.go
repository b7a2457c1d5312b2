package encrypt

import (
	"errors"
	"maps"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

func TestCheckPeersOwnKey(t *testing.T) {
	own, err := ParseKey(keyC)
	if err != nil {
		t.Fatal(err)
	}
	doc := "{\"peers\": [\n {\"name\": \"b\", \"public_key\": \"" + keyB + "\", \"endpoint\": \"192.0.2.2:1\", \"prefixes\": []},\n {\"name\": \"c\", \"public_key\": \"" + keyC + "\", \"endpoint\": \"192.0.2.3:1\", \"prefixes\": []}]}"
	_, err = CheckPeers([]byte(doc), own)
	var ce *ConfigError
	if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), `3:30: peers[1].public_key: peer "c" has this host's own public key`) {
		t.Fatalf("own key: %v", err)
	}
	if p, err := CheckPeers([]byte(doc), Key{}); err != nil || len(p.Peers) != 2 {
		t.Fatalf("own key unknown: %v", err)
	}
	if _, err := CheckPeers([]byte(`{"peers": 1}`), own); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("parse error: %v", err)
	}
}

func TestManagedPeersFileMissingIsEmpty(t *testing.T) {
	path := ManagedPeersFile(t.TempDir())
	p, err := loadPeersFile(path, true)
	if err != nil || len(p.Peers) != 0 || p.ListenPort != DefaultListenPort {
		t.Fatalf("missing managed file: %+v %v", p, err)
	}
	// A peers=FILE that is missing stays an error.
	if _, err := loadPeersFile(filepath.Join(t.TempDir(), "nosuch.json"), false); err == nil {
		t.Fatal("missing peers file accepted")
	}
}

func TestManagedPolicyFileMissingIsEmpty(t *testing.T) {
	path := ManagedPolicyFile(t.TempDir())
	p, err := loadPolicyFile(path, true)
	if err != nil || len(p.Space) != 0 || len(p.VNICs) != 0 || len(p.Pairs) != 0 {
		t.Fatalf("missing managed policy: %+v %v", p, err)
	}
	// The empty policy protects nothing for protect=policy, and under
	// protect=all what the peers carry (as without a policy).
	peers, err := ParsePeers([]byte(pairPeers))
	if err != nil {
		t.Fatal(err)
	}
	slots := map[string]uint32{"b": 0, "c": 1}
	for _, r := range Routes(peers, p, ProtectPolicy, "vnet1", slots) {
		if r.Protected() {
			t.Fatalf("protect=policy with the empty policy protects %+v", r)
		}
	}
	if got, want := Routes(peers, p, ProtectAll, "vnet1", slots), Routes(peers, nil, ProtectAll, "vnet1", slots); !maps.Equal(got, want) {
		t.Fatalf("protect=all with the empty policy: %v, without a policy %v", got, want)
	}
	if _, err := loadPolicyFile(filepath.Join(t.TempDir(), "nosuch.json"), false); err == nil {
		t.Fatal("missing policy file accepted")
	}
}

// TestCheckPolicy: what PUT /v1/encrypt/policy refuses before writing —
// the parser's errors and the checks a reload makes against the peers and
// the host groups — each with its line, column and field.
func TestCheckPolicy(t *testing.T) {
	peers, err := ParsePeers([]byte(pairPeers))
	if err != nil {
		t.Fatal(err)
	}
	groups := testGroups{"web": pfx("10.99.2.0/25")}
	for _, c := range []struct {
		name, doc string
		groups    sdk.Groups
		want      string // "" accepted
	}{
		{"destinations and pairs", `{"space": ["10.99.0.0/16"], "vnics": {"vnet1": ["10.99.2.7", "peer:c"]}, "pairs": [{"from": "group:web", "to": "tag:pci"}]}`, groups, ""},
		{"empty", `{}`, nil, ""},
		{"not JSON", `{"vnics": `, groups, "1:"},
		{"vNIC not a list", `{"vnics": {"vnet1": "10.99.2.7"}}`, groups, `1:21: vnics.vnet1:`},
		{"host bits", "{\"vnics\": {\"vnet1\": [\n  \"10.99.2.7/24\"]}}", groups, `2:3: vnics.vnet1[0]: "10.99.2.7/24" has host bits set (did you mean 10.99.2.0/24?)`},
		{"unknown peer", `{"vnics": {"vnet1": ["peer:nosuch"]}}`, groups, `1:22: vnics.vnet1[0]: unknown peer "nosuch" (known: b, c)`},
		{"unknown member", `{"vnic": {}}`, groups, `vnic`},
		{"unknown group", `{"pairs": [{"from": "group:nosuch", "to": "10.99.0.0/16"}]}`, groups, `pairs[0].from: group:nosuch: unknown address group "nosuch"`},
		{"no group table", `{"pairs": [{"from": "group:web", "to": "10.99.0.0/16"}]}`, nil, `pairs[0].from: group:web: no host group table here`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := CheckPolicy([]byte(c.doc), peers, c.groups)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			t.Log(err)
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.File != "" || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("got %v, want a ConfigError with %q", err, c.want)
			}
		})
	}
}
