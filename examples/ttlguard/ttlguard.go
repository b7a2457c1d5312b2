// Package ttlguard is an example out-of-tree fast-path filter for
// vnicfilter: ttlguard.c built against sdk/bpf/vnicfilter.h, described by
// ttlguard.json. filterd loads the pair without being rebuilt:
//
//	vfctl filter load ttlguard.json
//
// The Go side only embeds the object (for tests and for Go programs that
// want to ship it); filterd itself never imports this package.
package ttlguard

import (
	_ "embed"

	"github.com/cilium/ebpf"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// ManifestJSON is ttlguard.json.
//
//go:embed ttlguard.json
var ManifestJSON []byte

// Load returns the parsed manifest and the object's collection spec.
func Load() (*sdk.Manifest, *ebpf.CollectionSpec, error) {
	m, err := sdk.ParseManifest(ManifestJSON)
	if err != nil {
		return nil, nil, err
	}
	spec, err := loadTtlguard()
	if err != nil {
		return nil, nil, err
	}
	return m, spec, nil
}
