package dlb

import (
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// TestInstancesShareCheckers: three instances with the same services run
// one checker per backend; a reload that changes the check replaces the
// checkers (never doubles them); closing the instances one by one stops
// the checkers with the last, and every goroutine they had is gone.
func TestInstancesShareCheckers(t *testing.T) {
	const svc = `{"services": [{"vip": "10.0.0.1", "port": 80, "protocol": "tcp", "table_size": 251,
	  "health": {"type": "tcp", "port": 1, "interval": "INTERVAL"},
	  "backends": [{"addr": "127.0.0.1"}, {"addr": "127.0.0.2"}, {"addr": "127.0.0.3"}]}]}`
	cfg := []byte(strings.Replace(svc, "INTERVAL", "100ms", 1))
	if n := runningCheckers(); n != 0 {
		t.Fatalf("%d checkers before the test", n)
	}
	before := runtime.NumGoroutine()
	var fps []*fastPath
	var paths []string
	for range 3 {
		fp, path := testInstance(t, cfg, "64", "4096")
		fps, paths = append(fps, fp), append(paths, path)
		if n := runningCheckers(); n != 3 {
			t.Fatalf("%d instances: %d checkers, want 3", len(fps), n)
		}
	}
	// Reload the first with a slower check: 3 shared + 3 own.
	if err := os.WriteFile(paths[0], []byte(strings.Replace(svc, "INTERVAL", "200ms", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	params, err := sdk.ValidateParams(Descriptor.Params, map[string]string{"services": paths[0]})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // a reload of the same file changes nothing
		if err := fps[0].Reload(params); err != nil {
			t.Fatal(err)
		}
		if n := runningCheckers(); n != 6 {
			t.Fatalf("after the reload: %d checkers, want 6", n)
		}
	}
	// A refused reload keeps the checkers as they were.
	if err := os.WriteFile(paths[0], []byte(`{"services": []`), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fps[0].Reload(params); err == nil {
		t.Fatal("bad file accepted")
	}
	if n := runningCheckers(); n != 6 {
		t.Fatalf("after a refused reload: %d checkers, want 6", n)
	}
	for i, fp := range fps {
		fp.Close()
		want := []int{3, 3, 0}[i]
		if n := runningCheckers(); n != want {
			t.Fatalf("after closing %d instances: %d checkers, want %d", i+1, n, want)
		}
	}
	waitFor(t, 5*time.Second, "goroutines back to the count before", func() bool { return runtime.NumGoroutine() <= before })
}
