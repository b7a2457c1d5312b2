package firewall

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk"
	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// BenchmarkReload10k is a live instance's reload of a 10,000-rule policy
// file: read, parse, compile, write the idle generation, flip — what
// `vfctl fw load` waits for, without the API (the fw-swap-10k case of
// vfbench measures it through the API). Two different policies
// alternate, so every reload writes a whole generation; the background
// purge of the retired generation is waited for outside the timer, as the
// 300 ms between vfbench's reloads leave it time to finish.
func BenchmarkReload10k(b *testing.B) {
	testkit.Need(b, testkit.Root, testkit.BPF)
	fp := newScratch(b, allowAll, 1024)
	dir := b.TempDir()
	paths := [2]string{filepath.Join(dir, "a.json"), filepath.Join(dir, "b.json")}
	for i, p := range paths {
		// The second policy: the same shape, other ports.
		src := strings.ReplaceAll(policy10k(), `"dst_ports": [`, `"dst_ports": [`+map[int]string{0: "", 1: "2,"}[i])
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	var params [2]sdk.Params
	for i, p := range paths {
		var err error
		if params[i], err = sdk.ValidateParams(Descriptor.Params, map[string]string{"policy": p}); err != nil {
			b.Fatal(err)
		}
	}
	i := 0
	for b.Loop() {
		if err := fp.Reload(params[i%2]); err != nil {
			b.Fatal(err)
		}
		i++
		b.StopTimer()
		fp.mu.Lock()
		fp.waitPurge()
		fp.mu.Unlock()
		b.StartTimer()
	}
}

// BenchmarkUpdatePolicy10k is the part of a reload after parsing: compile,
// write, flip.
func BenchmarkUpdatePolicy10k(b *testing.B) {
	testkit.Need(b, testkit.Root, testkit.BPF)
	fp := newScratch(b, allowAll, 1024)
	p, err := ParsePolicy([]byte(policy10k()), ParseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := fp.UpdatePolicy(p); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		fp.mu.Lock()
		fp.waitPurge()
		fp.mu.Unlock()
		b.StartTimer()
	}
}
