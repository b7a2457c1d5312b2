package filterd

import (
	"errors"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestSwapDocument: the write-reload-rollback of PUT /v1/encrypt/peers
// and /v1/encrypt/policy without instances: an accepted document stays; a
// refused one puts the previous file back (or removes the file when there
// was none) before the revert runs, and the error says the previous one is
// back in force, or that rolling back failed.
func TestSwapDocument(t *testing.T) {
	refused := errors.New(`vnics.vnet1[0]: unknown peer "host-3"`)
	for _, c := range []struct {
		name      string
		old       string // "" no previous file
		refuse    bool
		revertErr error
		want      string // the file afterwards ("" absent)
		wantErr   string
	}{
		{"accepted", `{"a": 1}`, false, nil, `{"b": 2}`, ""},
		{"accepted, first document", "", false, nil, `{"b": 2}`, ""},
		{"refused", `{"a": 1}`, true, nil, `{"a": 1}`, `encrypt on vnet1 slot 0 refused the policy document (the previous one is back in force): vnics.vnet1[0]: unknown peer "host-3"`},
		{"refused, first document", "", true, nil, "", "(the previous one is back in force)"},
		{"revert fails", `{"a": 1}`, true, errors.New("reload vnet1: boom"), `{"a": 1}`, "rolling back to the previous one failed: reload vnet1: boom"},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "encrypt", "policy.json")
			if c.old != "" {
				if err := writeFileAtomic(file, []byte(c.old)); err != nil {
					t.Fatal(err)
				}
			}
			var during, atRevert string
			err := swapDocument(file, "policy document", []byte(`{"b": 2}`), func() (string, func() error, error) {
				b, _ := os.ReadFile(file)
				during = string(b)
				if !c.refuse {
					return "", nil, nil
				}
				return "encrypt on vnet1 slot 0", func() error {
					b, _ := os.ReadFile(file)
					atRevert = string(b)
					return c.revertErr
				}, refused
			})
			if during != `{"b": 2}` {
				t.Errorf("apply saw %q, want the new document", during)
			}
			if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr) || !errors.Is(err, refused)) {
				t.Fatalf("error %v, want %q", err, c.wantErr)
			}
			if c.refuse && atRevert != c.want {
				t.Errorf("revert ran with %q in place, want the previous document %q", atRevert, c.want)
			}
			b, err := os.ReadFile(file)
			switch {
			case c.want == "" && !errors.Is(err, fs.ErrNotExist):
				t.Errorf("file left: %q %v", b, err)
			case c.want != "" && (err != nil || string(b) != c.want):
				t.Errorf("file %q %v, want %q", b, err, c.want)
			}
			if st, err := os.Stat(file); err == nil && st.Mode().Perm() != 0o600 {
				t.Errorf("file mode %v", st.Mode())
			}
			if st, err := os.Stat(filepath.Dir(file)); err != nil || st.Mode().Perm() != 0o700 {
				t.Errorf("directory mode %v %v", st.Mode(), err)
			}
		})
	}
}

// TestEncryptDocGeneration: the generation sidecar of a managed document:
// 0 before any PUT, counted up by each accepted one, a compare-and-swap
// on another generation refused before the check runs.
func TestEncryptDocGeneration(t *testing.T) {
	dir := t.TempDir()
	checked := 0
	e := encryptDoc{param: "policy", file: filepath.Join(dir, "encrypt", "policy.json"), check: func([]byte) error { checked++; return nil }}
	if e.metaFile() != filepath.Join(dir, "encrypt", "policy.meta.json") {
		t.Fatalf("meta file %s", e.metaFile())
	}
	d := &Daemon{}
	got, err := d.encryptDocument(e)
	if err != nil || got.Generation != 0 || string(got.Document) != "null" || !got.Updated.IsZero() {
		t.Fatalf("before any PUT: %+v %v", got, err)
	}
	d.log = slog.New(slog.DiscardHandler)
	d.vnics = map[string]*vnic{}
	for want := uint64(1); want <= 2; want++ {
		r, err := d.setEncryptDocument(t.Context(), e, []byte(`{"vnics": {}}`), nil)
		if err != nil || r.Generation != want {
			t.Fatalf("PUT %d: %+v %v", want, r, err)
		}
	}
	stale := uint64(1)
	if _, err := d.setEncryptDocument(t.Context(), e, []byte(`{}`), &stale); !errors.Is(err, errGenerationMismatch) || !strings.Contains(err.Error(), "at generation 2, not 1") || checked != 2 {
		t.Fatalf("stale if_generation: %v (checked %d times)", err, checked)
	}
	got, err = d.encryptDocument(e)
	if err != nil || got.Generation != 2 || string(got.Document) != `{"vnics": {}}` || got.Updated.IsZero() {
		t.Fatalf("after two PUTs: %+v %v", got, err)
	}
}

// TestEncryptDocChecksWithoutInstances: while no encrypt instance runs
// (no reload will check anything), the peers and policy documents are
// checked against each other: a policy naming a peer the managed peers
// document lacks, or a group nobody pushed, is refused; so is a peers
// document dropping a peer the managed policy names.
func TestEncryptDocChecksWithoutInstances(t *testing.T) {
	d := &Daemon{cfg: Config{StateDir: t.TempDir()}, log: slog.New(slog.DiscardHandler), vnics: map[string]*vnic{}, groups: newGroupTable()}
	const key2 = "h65C7n2fG4yCVm340tnM6FeM3Gfeeo+SHZ0yI0eFShw="
	withHost2 := []byte(`{"prefixes": ["10.99.1.0/24"], "peers": [{"name": "host-2", "public_key": "` + key2 + `", "endpoint": "192.0.2.2:51820", "prefixes": ["10.99.2.0/24"]}]}`)
	namesHost2 := []byte(`{"vnics": {"vnet1": ["peer:host-2"]}}`)
	pairWeb := []byte(`{"pairs": [{"from": "group:web", "to": "10.99.0.0/16"}]}`)
	put := func(e encryptDoc, doc []byte) error {
		_, err := d.setEncryptDocument(t.Context(), e, doc, nil)
		return err
	}
	for _, c := range []struct {
		name string
		e    encryptDoc
		doc  []byte
		want string // "" accepted
	}{
		{"policy before any peers", d.policyDoc(), namesHost2, `policy document: 1:22: vnics.vnet1[0]: unknown peer "host-2" (known: none)`},
		{"peers", d.peersDoc(), withHost2, ""},
		{"policy naming a known peer", d.policyDoc(), namesHost2, ""},
		{"peers without the named peer", d.peersDoc(), []byte(`{"peers": []}`), `peers document: the policy document names a peer it lacks (PUT a policy without it first): ` + d.policyDoc().file + `:1:22: vnics.vnet1[0]: unknown peer "host-2"`},
		{"unknown group", d.policyDoc(), pairWeb, `policy document: 1:21: pairs[0].from: group:web: unknown address group "web"`},
	} {
		err := put(c.e, c.doc)
		if c.want == "" && err != nil || c.want != "" && (!errors.Is(err, sdk.ErrInvalidParam) || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	d.groups.pushed["web"] = []netip.Prefix{netip.MustParsePrefix("10.99.1.0/25")}
	if err := put(d.policyDoc(), pairWeb); err != nil {
		t.Errorf("pushed group: %v", err)
	}
	if err := put(d.peersDoc(), []byte(`{"peers": []}`)); err != nil {
		t.Errorf("peers without host-2 once the policy no longer names it: %v", err)
	}
	for _, e := range []encryptDoc{d.peersDoc(), d.policyDoc()} {
		if got, err := d.encryptDocument(e); err != nil || got.Generation != 2 {
			t.Errorf("%s: %+v %v, want generation 2", e.param, got, err)
		}
	}
}
