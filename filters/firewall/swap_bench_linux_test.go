package firewall

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

// BenchmarkReload10k is a live instance's reload of a 10,000-rule policy
// (parse, compile, write the idle generation, flip): what the fw-swap-10k
// case of vfbench measures through the API, without it.
func BenchmarkReload10k(b *testing.B) {
	testkit.Need(b, testkit.Root, testkit.BPF)
	fp := newScratch(b, allowAll, 1024)
	path := filepath.Join(b.TempDir(), "p.json")
	if err := os.WriteFile(path, []byte(policy10k()), 0o644); err != nil {
		b.Fatal(err)
	}
	p, err := LoadPolicy(path, nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := fp.UpdatePolicy(p); err != nil {
			b.Fatal(err)
		}
	}
}
