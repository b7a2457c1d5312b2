package hooks

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/filterd/api"
)

// moverClient is a fakeClient that also moves state (the migration
// steps); pullErr fails PullState for a tap.
type moverClient struct {
	fakeClient
	pullErr map[string]error
}

func (m *moverClient) PullState(ctx context.Context, vnic string, req api.PullRequest) (*api.PullResult, error) {
	m.calls = append(m.calls, "PullState "+vnic+" "+req.Owner+" "+req.MAC)
	if err := m.pullErr[vnic]; err != nil {
		return nil, err
	}
	return &api.PullResult{Peer: "https://10.0.0.5:9444", Source: "vnet3", Bytes: 1000, Import: &api.ImportResult{Slots: []api.ImportedSlot{{Entries: 7}}}}, nil
}

func (m *moverClient) Handoff(ctx context.Context, req api.HandoffRequest) (*api.HandoffResult, error) {
	m.calls = append(m.calls, "Handoff "+req.Owner)
	return &api.HandoffResult{}, nil
}

// TestMigrationPhases runs the hook through a migration's phases as
// libvirt calls them: migrate marks the domain as arriving, start attaches
// and then pulls each interface's state (once: the marker is used up),
// stopped hands the final state off before detaching; migrate-state
// decides what a failed pull does.
func TestMigrationPhases(t *testing.T) {
	prepareXML := testdata(t, "domains/web01-prepare.xml")
	startXML := testdata(t, "domains/web01-start.xml")
	const owner = "libvirt:web01"
	attach := []string{"Filters", "SetChain vnet8 count " + owner + " 52:54:00:aa:00:02", "SetChain vnet9 dnslog,count " + owner + " 52:54:00:aa:00:03"}
	pulls := []string{"PullState vnet8 " + owner + " 52:54:00:aa:00:02", "PullState vnet9 " + owner + " 52:54:00:aa:00:03"}
	refused := errors.New("no peer holds the state of libvirt:web01")
	for _, tc := range []struct {
		name    string
		state   MigrateState
		migrate bool // run `migrate` first
		pullErr map[string]error
		code    int
		calls   []string // of start
		stderr  string   // of start, substring
	}{
		{name: "arriving: attach, then pull", migrate: true, calls: append(attach, pulls...), stderr: "moved 7 state entries (1000 bytes) from vnet3 on https://10.0.0.5:9444"},
		{name: "plain start: no pull", calls: attach},
		{name: "off: attach only", state: MigrateOff, migrate: true, calls: attach, stderr: "connection state not moved (migrate-state=off)"},
		{name: "best-effort: pull fails, start goes on", migrate: true, pullErr: map[string]error{"vnet9": refused},
			calls: append(attach, pulls...), stderr: "interface 52:54:00:aa:00:03 (vnet9): connection state not moved: no peer holds"},
		{name: "required: pull fails, start refused and rolled back", state: MigrateRequired, migrate: true, pullErr: map[string]error{"vnet9": refused}, code: 1,
			calls: append(append(attach, pulls...), "Detach vnet8", "Detach vnet9"), stderr: "refusing the migration (migrate-state=required; the domain runs on at the source)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := &moverClient{pullErr: tc.pullErr}
			var stdout, stderr bytes.Buffer
			h := Hook{Client: client, Stdout: &stdout, Stderr: &stderr, Timeout: time.Second, Guard: &fakeGuard{}, MigrateState: tc.state, MarkerDir: t.TempDir()}
			if tc.migrate {
				if code := h.Run(context.Background(), []string{"web01", "migrate", "begin", "-"}, strings.NewReader(prepareXML)); code != 0 || stdout.String() != prepareXML {
					t.Fatalf("migrate: exit %d, XML passed through %v: %s", code, stdout.String() == prepareXML, stderr.String())
				}
				if _, err := os.Stat(filepath.Join(h.MarkerDir, "web01.incoming")); err != nil {
					t.Fatalf("no marker after migrate: %v", err)
				}
			}
			client.calls, stderr = nil, bytes.Buffer{}
			code := h.Run(context.Background(), []string{"web01", "start", "begin", "-"}, strings.NewReader(startXML))
			if code != tc.code {
				t.Errorf("start: exit %d, want %d: %s", code, tc.code, stderr.String())
			}
			if !reflect.DeepEqual(client.calls, tc.calls) {
				t.Errorf("start calls:\n got %q\nwant %q", client.calls, tc.calls)
			}
			if tc.stderr == "" && stderr.Len() > 0 || !strings.Contains(stderr.String(), tc.stderr) {
				t.Errorf("start stderr %q, want %q", stderr.String(), tc.stderr)
			}
			if _, err := os.Stat(filepath.Join(h.MarkerDir, "web01.incoming")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("marker left after start: %v", err)
			}
		})
	}

	t.Run("stopped: hand off, then detach", func(t *testing.T) {
		client := &moverClient{fakeClient: fakeClient{attached: map[string]string{"vnet8": owner}}}
		h := Hook{Client: client, Timeout: time.Second, Guard: &fakeGuard{}, MarkerDir: t.TempDir()}
		if code := h.Run(context.Background(), []string{"web01", "stopped", "end", "-"}, strings.NewReader(prepareXML)); code != 0 {
			t.Fatalf("stopped: exit %d", code)
		}
		if want := []string{"Handoff " + owner, "VNICs", "Detach vnet8"}; !reflect.DeepEqual(client.calls, want) {
			t.Errorf("stopped calls %q, want %q", client.calls, want)
		}
	})
	t.Run("release: no hand-off", func(t *testing.T) {
		client := &moverClient{}
		h := Hook{Client: client, Timeout: time.Second, Guard: &fakeGuard{}, MarkerDir: t.TempDir()}
		h.Run(context.Background(), []string{"web01", "release", "end", "-"}, strings.NewReader(prepareXML))
		if want := []string{"VNICs"}; !reflect.DeepEqual(client.calls, want) {
			t.Errorf("release calls %q, want %q", client.calls, want)
		}
	})
	t.Run("cancelled before start: stopped removes the marker", func(t *testing.T) {
		client := &moverClient{}
		h := Hook{Client: client, Stdout: &bytes.Buffer{}, Timeout: time.Second, Guard: &fakeGuard{}, MarkerDir: t.TempDir()}
		h.Run(context.Background(), []string{"web01", "migrate", "begin", "-"}, strings.NewReader(prepareXML))
		h.Run(context.Background(), []string{"web01", "stopped", "end", "-"}, strings.NewReader(prepareXML))
		if _, err := os.Stat(filepath.Join(h.MarkerDir, "web01.incoming")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("marker left after stopped: %v", err)
		}
	})
}

func TestMigrateStateConfig(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ConfigName)
	if err := os.WriteFile(path, []byte("migrate-state=required\nmarker-dir=/run/x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil || c.MigrateState != MigrateRequired || c.MarkerDir != "/run/x" {
		t.Fatalf("%+v, %v", c, err)
	}
	if c := (Config{}).WithDefaults(); c.MigrateState != MigrateBestEffort || c.MarkerDir != DefaultMarkerDir {
		t.Errorf("defaults %+v", c)
	}
	if err := os.WriteFile(path, []byte("migrate-state=sometimes\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), ":1: migrate-state \"sometimes\": want best-effort, required or off") {
		t.Errorf("bad migrate-state: %v", err)
	}
}
