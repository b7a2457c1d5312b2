package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
)

// slotMemory is the kernel memory of the filters on vnic: the sum of the
// memlock the kernel reports (bpf_map_info, as /proc/PID/fdinfo shows it)
// for every map pinned in the vNIC's slot directories of the daemon's
// bpffs — the filters' own maps, not the vNIC's dispatcher maps that
// every chain has.
func (d *daemon) slotMemory(vnic string) (uint64, error) {
	var total uint64
	var maps int
	err := filepath.WalkDir(d.bpffs, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		parts := strings.Split(filepath.ToSlash(path), "/")
		if len(parts) < 3 || !strings.HasPrefix(parts[len(parts)-2], "slot") || !slices.Contains(parts, vnic) {
			return nil
		}
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil // a pinned program or link
		}
		defer m.Close()
		info, err := m.Info()
		if err != nil {
			return fmt.Errorf("map info of %s: %w", path, err)
		}
		b, ok := info.Memlock()
		if !ok {
			return fmt.Errorf("%s: the kernel reports no memlock", path)
		}
		total += b
		maps++
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sum the memory of %s's filter maps: %w", vnic, err)
	}
	if maps == 0 {
		return 0, errors.New("no filter map pinned for " + vnic + " under " + d.bpffs)
	}
	return total, nil
}
