//go:build !linux

package hooks

import (
	"fmt"

	"github.com/vnicfilter/vnicfilter/sdk"
)

// BPFFSGuard pins drop-all guards under filterd's bpffs root; Linux only.
type BPFFSGuard struct {
	Root string
}

var errNoGuard = fmt.Errorf("drop-all guard: %w", sdk.ErrNotSupported)

func (BPFFSGuard) Pin(string) error               { return errNoGuard }
func (BPFFSGuard) Remove(string) error            { return nil }
func (BPFFSGuard) RemoveStale() ([]string, error) { return nil, nil }
