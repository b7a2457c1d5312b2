package testlab

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/vnicfilter/vnicfilter/libvirt/guestimage"
)

// GuestImage, ImageFile and ImageOptions are the guestimage package's
// (the image builder outside of tests).
type (
	GuestImage   = guestimage.Image
	ImageFile    = guestimage.File
	ImageOptions = guestimage.Options
)

// imagePrefix names the default image directories in os.TempDir().
const imagePrefix = "vftestlab-image-"

var images struct {
	sync.Mutex
	byDir      map[string]*GuestImage
	defaultDir string // made by the first BuildGuestImage(t, ""), removed by StopShared
}

// BuildGuestImage builds the guest initramfs into dir (a temporary directory
// shared by the test binary when dir is ""), once per directory and test
// binary: later calls return the cached image. It skips t (fails it under
// CI=true) when the kernel package or busybox-static is missing.
func BuildGuestImage(t testing.TB, dir string) (*GuestImage, error) {
	t.Helper()
	need(t, needGuestImage)
	images.Lock()
	defer images.Unlock()
	if dir == "" {
		if images.defaultDir == "" {
			d, err := os.MkdirTemp("", imagePrefix)
			if err != nil {
				return nil, fmt.Errorf("guest image directory: %w", err)
			}
			if owner, err := ownerTag(); err == nil {
				_ = os.WriteFile(filepath.Join(d, "owner"), []byte(owner+"\n"), 0o644)
			}
			images.defaultDir = d
		}
		dir = images.defaultDir
	}
	if img, ok := images.byDir[dir]; ok {
		return img, nil
	}
	img, err := buildGuestImage(dir)
	if err != nil {
		return nil, err
	}
	if images.byDir == nil {
		images.byDir = map[string]*GuestImage{}
	}
	images.byDir[dir] = img
	return img, nil
}

// removeDefaultImage deletes the directory BuildGuestImage(t, "") made.
func removeDefaultImage() error {
	images.Lock()
	defer images.Unlock()
	if images.defaultDir == "" {
		return nil
	}
	delete(images.byDir, images.defaultDir)
	err := os.RemoveAll(images.defaultDir)
	images.defaultDir = ""
	return err
}

func buildGuestImage(dir string) (*GuestImage, error) {
	return guestimage.Build(dir, guestimage.Options{})
}

// BuildImage builds the guest initramfs with opts into dir, outside of a
// test and without caching (guestimage.Build).
func BuildImage(dir string, opts ImageOptions) (*GuestImage, error) {
	return guestimage.Build(dir, opts)
}

// BuildGuestImageIn builds the guest image into dir outside of a test, for
// the demo's helper (libvirt/cmd/vfguest). It does not cache, and a missing
// kernel package or busybox-static is an error naming it.
func BuildGuestImageIn(dir string) (*GuestImage, error) {
	return buildGuestImage(dir)
}
