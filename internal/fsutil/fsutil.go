// Package fsutil holds the one way vnicfilter replaces a file it owns.
package fsutil

import (
	"os"
	"path/filepath"
)

// WriteFileAtomic replaces path with data, mode perm: a temporary file in
// the same directory, synced, renamed over path. A reader, or a crash,
// sees the old file or the new one, never half of either; a failure
// leaves no temporary file behind. The directory must exist.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename: a no-op
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
