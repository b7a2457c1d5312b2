package encrypt

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
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
