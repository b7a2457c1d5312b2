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

const cryptPeersDoc = `{
  "listen_port": 51820,
  "prefixes": ["10.99.1.0/24"],
  "peers": [
    {"name": "host-2", "public_key": "h65C7n2fG4yCVm340tnM6FeM3Gfeeo+SHZ0yI0eFShw=",
     "endpoint": "192.168.77.2:51820", "prefixes": ["10.99.2.0/24"]}
  ]
}`

// TestCryptPeersCommands: vfctl crypt host / peers show / peers set
// against canned answers: what is sent (the file as is, if_generation),
// the text, the exit codes (a bad file never reaches filterd).
func TestCryptPeersCommands(t *testing.T) {
	ctx := context.Background()
	created := time.Date(2026, 11, 23, 15, 0, 0, 0, time.UTC)
	f := newFakeDaemon(t, map[string]cannedReply{
		"GET /v1/encrypt/host": {body: api.EncryptHost{Tunnel: "vfwg0", Running: true, PublicKey: "ZoffHC7g5dfBpTgrXnxDuuzYYDfEeh+ysaOF7cOkFlE=", KeyDir: "/var/lib/vnicfilter/encrypt",
			KeyCreated: created, ListenPort: 51820, Prefixes: []string{"10.99.1.0/24"}, Endpoints: []api.EncryptAddress{{Interface: "ul0", Endpoint: "192.168.77.1:51820"}}}},
		"GET /v1/encrypt/peers": {body: api.EncryptPeers{Generation: 4, File: "/var/lib/vnicfilter/encrypt/peers.json", Updated: created, Document: json.RawMessage(cryptPeersDoc)}},
		"PUT /v1/encrypt/peers": {body: api.EncryptPeersResult{Generation: 5, File: "/var/lib/vnicfilter/encrypt/peers.json",
			Reloaded: []api.Reloaded{{VNIC: "vnet1", Filter: "encrypt"}}, Unmanaged: []api.Reloaded{{VNIC: "vnet2", Filter: "encrypt", Error: "reads peers=/etc/p.json"}}}},
	})
	r := vfctl(t, ctx, f.socket, "crypt", "host")
	if r.code != ExitOK || !strings.Contains(r.stdout, "public key  ZoffHC7g5dfBpTgrXnxDuuzYYDfEeh+ysaOF7cOkFlE=") || !strings.Contains(r.stdout, "192.168.77.1:51820  ul0") || !strings.Contains(r.stdout, "TUNNEL vfwg0  running") {
		t.Errorf("crypt host: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = vfctl(t, ctx, f.socket, "crypt", "peers", "show")
	if r.code != ExitOK || !strings.Contains(r.stdout, "generation 4") || !strings.Contains(r.stdout, "host-2  192.168.77.2:51820  h65C7n2fG4yCVm340tnM6FeM3Gfeeo+SHZ0yI0eFShw=  10.99.2.0/24") {
		t.Errorf("crypt peers show: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	var shown api.EncryptPeers
	if r = vfctl(t, ctx, f.socket, "-o", "json", "crypt", "peers", "show"); json.Unmarshal([]byte(r.stdout), &shown) != nil || shown.Generation != 4 {
		t.Errorf("crypt peers show -o json: %s", r.stdout)
	}

	dir := t.TempDir()
	good := filepath.Join(dir, "peers.json")
	if err := os.WriteFile(good, []byte(cryptPeersDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	r = vfctl(t, ctx, f.socket, "crypt", "peers", "set", "--if-generation", "4", good)
	if r.code != ExitOK || !strings.Contains(r.stdout, "generation 5") || !strings.Contains(r.stdout, "vnet2 slot 0 not reached") {
		t.Errorf("crypt peers set: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.mu.Lock()
	body, query := string(f.bodies["PUT /v1/encrypt/peers"]), f.queries["PUT /v1/encrypt/peers"]
	f.bodies["PUT /v1/encrypt/peers"] = nil
	f.mu.Unlock()
	if body != cryptPeersDoc || query != "if_generation=4" {
		t.Errorf("sent %q with query %q, want the file as is and if_generation=4", body, query)
	}

	bad := filepath.Join(dir, "bad.json")
	if err := os.WriteFile(bad, []byte(strings.Replace(cryptPeersDoc, "h65C7n2f", "!", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	r = vfctl(t, ctx, f.socket, "crypt", "peers", "set", bad)
	if r.code != ExitBadInput || !strings.Contains(r.stderr, bad+":5:") || !strings.Contains(r.stderr, "peers[0].public_key: malformed") {
		t.Errorf("crypt peers set with a bad key: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	f.mu.Lock()
	sent := f.bodies["PUT /v1/encrypt/peers"] != nil
	f.mu.Unlock()
	if sent {
		t.Error("a bad file reached filterd")
	}
	r = vfctl(t, ctx, f.socket, "crypt", "peers", "set")
	if r.code != ExitUsage {
		t.Errorf("crypt peers set without FILE: exit %d", r.code)
	}

	conflict := newFakeDaemon(t, map[string]cannedReply{
		"PUT /v1/encrypt/peers": {status: http.StatusConflict, body: api.Error{Code: api.CodeGenerationMismatch, Message: "generation mismatch: the peers document is at generation 6, not 4"}},
	})
	r = vfctl(t, ctx, conflict.socket, "crypt", "peers", "set", "--if-generation", "4", good)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "at generation 6, not 4") || !strings.Contains(r.stderr, "peers show -o json") {
		t.Errorf("crypt peers set on a stale generation: %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
