//go:build !linux

package controlvm

import "errors"

// BuildImage needs Linux: the kernel and its modules come from the host.
func BuildImage(dir string, in ImageInputs) (Image, error) {
	return Image{}, errors.New("control VM image: building it needs a Linux host (its kernel package and busybox-static)")
}
