package sdk

import (
	"fmt"
	"sort"
	"sync"
)

var registry struct {
	sync.RWMutex
	m map[string]*Descriptor
}

// Register makes a filter available to filterd. It panics on an invalid
// descriptor or a duplicate name: both are programming errors found at
// start-up.
func Register(d *Descriptor) {
	if err := d.Validate(); err != nil {
		panic("sdk.Register: " + err.Error())
	}
	registry.Lock()
	defer registry.Unlock()
	if registry.m == nil {
		registry.m = map[string]*Descriptor{}
	}
	if _, dup := registry.m[d.Name]; dup {
		panic(fmt.Sprintf("sdk.Register: filter %q registered twice", d.Name))
	}
	registry.m[d.Name] = d
}

// Lookup returns the registered filter name, or an error wrapping
// ErrUnknownFilter that lists the known ones.
func Lookup(name string) (*Descriptor, error) {
	registry.RLock()
	defer registry.RUnlock()
	if d, ok := registry.m[name]; ok {
		return d, nil
	}
	return nil, fmt.Errorf("%w %q (registered: %v)", ErrUnknownFilter, name, namesLocked())
}

// Filters returns every registered filter, sorted by name.
func Filters() []*Descriptor {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]*Descriptor, 0, len(registry.m))
	for _, d := range registry.m {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func namesLocked() []string {
	names := make([]string, 0, len(registry.m))
	for n := range registry.m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
