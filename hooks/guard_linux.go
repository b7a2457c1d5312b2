package hooks

import "github.com/vnicfilter/vnicfilter/filterd/datapath"

// BPFFSGuard pins drop-all guards under filterd's bpffs root (datapath's
// <Root>/guard-<tap>/), where filterd finds and replaces them.
type BPFFSGuard struct {
	// Root is filterd's bpffs root; DefaultBPFFSRoot when empty.
	Root string
}

func (g BPFFSGuard) root() string {
	if g.Root == "" {
		return DefaultBPFFSRoot
	}
	return g.Root
}

// Pin attaches the drop-all guard to both tc hooks of tap.
func (g BPFFSGuard) Pin(tap string) error { return datapath.PinGuard(g.root(), tap) }

// Remove detaches and unpins tap's guard.
func (g BPFFSGuard) Remove(tap string) error { return datapath.RemoveGuard(g.root(), tap) }

// RemoveStale removes the guards whose device is gone.
func (g BPFFSGuard) RemoveStale() ([]string, error) { return datapath.RemoveStaleGuards(g.root()) }
