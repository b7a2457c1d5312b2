package firewall

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/sdk/testkit"
)

func policy10k() string {
	var sb strings.Builder
	sb.WriteString(`{"version": 1, "rules": [` + "\n")
	for i := range 10000 {
		if i > 0 {
			sb.WriteString(",\n")
		}
		fmt.Fprintf(&sb, `{"name": "r%d", "direction": "to-vm", "src": ["10.%d.%d.0/24"], "proto": "tcp", "dst_ports": [%d], "action": "allow"}`, i, i/256%256, i%256, 1+i%60000)
	}
	sb.WriteString("\n]}\n")
	return sb.String()
}

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
