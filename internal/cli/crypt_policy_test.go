package cli

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

const cryptPolicyDoc = `{
  "space": ["10.99.0.0/16"],
  "vnics": {
    "vnet3": ["10.99.2.7", "peer:host-4"],
    "vnet1": ["10.99.3.0/24"]
  },
  "pairs": [{"from": "tag:pci", "to": "tag:pci"}]
}`

// TestCryptPolicyCommands: vfctl crypt policy show / set against canned
// answers: the text before and after a first document, what is sent (the
// file or standard input as is, if_generation), the exit codes (a bad file
// never reaches filterd; a refusal exits 5, a stale generation 1).
func TestCryptPolicyCommands(t *testing.T) {
	ctx := context.Background()
	updated := time.Date(2026, 11, 23, 17, 0, 0, 0, time.UTC)
	const file = "/var/lib/vnicfilter/encrypt/policy.json"
	empty := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/encrypt/policy": {body: api.EncryptPolicy{File: file, Document: json.RawMessage("null")}},
	})
	r := vfctl(t, ctx, empty.socket, "crypt", "policy", "show")
	if r.code != ExitOK || !strings.Contains(r.stdout, "generation 0: no policy document yet ("+file+")") {
		t.Errorf("crypt policy show before any set: %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/encrypt/policy": {body: api.EncryptPolicy{Generation: 4, File: file, Updated: updated, Document: json.RawMessage(cryptPolicyDoc)}},
		"PUT /v1/encrypt/policy": {body: api.EncryptPolicyResult{Generation: 5, File: file,
			Reloaded: []api.Reloaded{{VNIC: "vnet1", Filter: "encrypt"}, {VNIC: "vnet3", Filter: "encrypt"}}, Unmanaged: []api.Reloaded{{VNIC: "vnet2", Filter: "encrypt", Error: "reads policy=/etc/p.json"}}}},
	})
	r = vfctl(t, ctx, f.socket, "crypt", "policy", "show")
	for _, want := range []string{"generation 4  updated 2026-11-23T17:00:00Z  file " + file, "space 10.99.0.0/16", "vnet1  10.99.3.0/24\n", "vnet3  10.99.2.7/32,peer:host-4\n", "pairs: tag:pci <-> tag:pci"} {
		if r.code != ExitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("crypt policy show: %d, want %q in\n%s%s", r.code, want, r.stdout, r.stderr)
		}
	}
	var shown api.EncryptPolicy
	if r = vfctl(t, ctx, f.socket, "-o", "json", "crypt", "policy", "show"); json.Unmarshal([]byte(r.stdout), &shown) != nil || shown.Generation != 4 || !strings.Contains(string(shown.Document), "peer:host-4") {
		t.Errorf("crypt policy show -o json: %s", r.stdout)
	}

	dir := t.TempDir()
	good := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(good, []byte(cryptPolicyDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	r = vfctl(t, ctx, f.socket, "crypt", "policy", "set", "--if-generation", "4", good)
	if r.code != ExitOK || !strings.Contains(r.stdout, "policy document generation 5 written to "+file+"; 2 encrypt instance(s) reloaded") || !strings.Contains(r.stdout, "vnet2 slot 0 not reached: it reads policy=/etc/p.json (attach it with --param policy=api)") {
		t.Errorf("crypt policy set: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.mu.Lock()
	body, query := string(f.bodies["PUT /v1/encrypt/policy"]), f.queries["PUT /v1/encrypt/policy"]
	f.bodies["PUT /v1/encrypt/policy"] = nil
	f.mu.Unlock()
	if body != cryptPolicyDoc || query != "if_generation=4" {
		t.Errorf("sent %q with query %q, want the file as is and if_generation=4", body, query)
	}
	var res api.EncryptPolicyResult
	if r = vfctlStdin(t, ctx, f.socket, `{"vnics": {}}`, "-o", "json", "crypt", "policy", "set", "-"); r.code != ExitOK || json.Unmarshal([]byte(r.stdout), &res) != nil || res.Generation != 5 {
		t.Errorf("crypt policy set - -o json: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.mu.Lock()
	body, query = string(f.bodies["PUT /v1/encrypt/policy"]), f.queries["PUT /v1/encrypt/policy"]
	f.bodies["PUT /v1/encrypt/policy"] = nil
	f.mu.Unlock()
	if body != `{"vnics": {}}` || query != "" {
		t.Errorf("from standard input: sent %q with query %q", body, query)
	}

	for _, c := range []struct{ name, doc, want string }{
		{"host bits", strings.Replace(cryptPolicyDoc, `"10.99.3.0/24"`, `"10.99.3.1/24"`, 1), ":5:15: vnics.vnet1[0]: \"10.99.3.1/24\" has host bits set"},
		{"not a list", `{"vnics": {"vnet1": "10.99.3.0/24"}}`, ":1:21: vnics.vnet1: want an array"},
		{"not JSON", `{"vnics": `, ":1:"},
	} {
		bad := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(bad, []byte(c.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		r = vfctl(t, ctx, f.socket, "crypt", "policy", "set", bad)
		if r.code != ExitBadInput || !strings.Contains(r.stderr, bad+c.want) {
			t.Errorf("crypt policy set, %s: %d, want %q in\n%s%s", c.name, r.code, bad+c.want, r.stdout, r.stderr)
		}
	}
	f.mu.Lock()
	sent := f.bodies["PUT /v1/encrypt/policy"] != nil
	f.mu.Unlock()
	if sent {
		t.Error("a bad file reached filterd")
	}

	refusing := newFakeDaemon(t, map[string]cannedReply{
		"PUT /v1/encrypt/policy": {status: http.StatusBadRequest, body: api.Error{Code: api.CodeInvalidParam, Message: `invalid parameter: policy document: 4:15: vnics.vnet3[1]: unknown peer "host-4" (known: host-2)`}},
	})
	r = vfctl(t, ctx, refusing.socket, "crypt", "policy", "set", good)
	if r.code != ExitBadInput || !strings.Contains(r.stderr, `vnics.vnet3[1]: unknown peer "host-4"`) {
		t.Errorf("crypt policy set refused by filterd: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	conflict := newFakeDaemon(t, map[string]cannedReply{
		"PUT /v1/encrypt/policy": {status: http.StatusConflict, body: api.Error{Code: api.CodeGenerationMismatch, Message: "generation mismatch: the policy document is at generation 6, not 4"}},
	})
	r = vfctl(t, ctx, conflict.socket, "crypt", "policy", "set", "--if-generation", "4", good)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "at generation 6, not 4") || !strings.Contains(r.stderr, "policy show -o json") {
		t.Errorf("crypt policy set on a stale generation: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// vfctlStdin runs the CLI with stdin as its standard input for "-".
func vfctlStdin(t *testing.T, ctx context.Context, socket, stdin string, args ...string) result {
	t.Helper()
	old := cryptStdin
	t.Cleanup(func() { cryptStdin = old })
	cryptStdin = strings.NewReader(stdin)
	return vfctl(t, ctx, socket, args...)
}
