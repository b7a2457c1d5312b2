// Package guestimage builds the small guests vnicfilter boots with QEMU
// (direct kernel boot, no disk): the distribution's cloud kernel from apt,
// the virtio-net modules it needs, busybox-static and an /init, packed into
// a reproducible gzip newc initramfs, plus any files the caller adds. The
// test harness (libvirt/testlab) boots its guests from it; `vfctl
// controlvm install` builds the control VM's image with it.
package guestimage

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Image is a bootable guest: a distribution kernel and the
// initramfs the harness built for it. Both are read by QEMU directly
// (direct kernel boot); there is no disk.
type Image struct {
	// Kernel is the path of the kernel image, from linux-image-cloud-amd64.
	Kernel string
	// Initrd is the path of the gzip-compressed newc cpio archive.
	Initrd string
	// KernelVersion names /lib/modules/<KernelVersion>, where the modules came from.
	KernelVersion string
	// Modules lists the kernel modules in the order /init loads them.
	Modules []string
}

// guestModules is the insmod order measured in DESIGN.md: virtio_net and
// its dependencies, with virtio_pci, which finds the virtio-net device.
// The build checks it against modules.dep, so a kernel that grows a new
// dependency fails the build with its name instead of a guest without eth0.
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
	"virtio_pci", "failover", "net_failover", "virtio_net",
}

// busyboxPath is where busybox-static installs its binary.
const busyboxPath = "/bin/busybox"

// kernelGlob matches the kernels of linux-image-cloud-amd64, built with
// just the drivers a virtual machine needs: small and quick to boot.
const kernelGlob = "/boot/vmlinuz-*-cloud-amd64"

//go:embed init.sh
var initScript []byte

// File is a file added to an image built with Build.
type File struct {
	// Path inside the image, relative ("bin/vfagent"); its parent
	// directories are created.
	Path string
	// Mode is its permission bits.
	Mode uint32
	Data []byte
}

// Options extend the test guest image into another small guest (the
// control VM): the same kernel, modules and /init, plus files.
type Options struct {
	// Name is the image file's prefix (default "vfguest").
	Name string
	// Files are added after the guest's own.
	Files []File
	// FileMode of the image file (default 0644; 0600 when it holds keys).
	FileMode os.FileMode
}

// Build builds the guest initramfs with opts into dir, without caching: a missing kernel package or busybox-static is
// an error naming it.
func Build(dir string, opts Options) (*Image, error) {
	if opts.Name == "" {
		opts.Name = "vfguest"
	}
	if opts.FileMode == 0 {
		opts.FileMode = 0o644
	}
	kernel, version, err := findKernel()
	if err != nil {
		return nil, err
	}
	if err := checkStatic(busyboxPath); err != nil {
		return nil, err
	}
	busybox, err := os.ReadFile(busyboxPath)
	if err != nil {
		return nil, err
	}
	modDir := filepath.Join("/lib/modules", version)
	deps, err := readModulesDep(modDir)
	if err != nil {
		return nil, err
	}
	if err := checkModuleOrder(guestModules, deps); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", version, err)
	}

	var archive bytes.Buffer
	gz := gzip.NewWriter(&archive) // zero header: no name, no mtime, reproducible
	cw := &cpioWriter{w: gz}
	for _, d := range []string{"bin", "dev", "proc", "sys", "run", "tmp", "etc", "lib", "lib/modules"} {
		cw.Dir(d)
	}
	cw.CharDev("dev/console", 0o600, 5, 1)
	cw.File("init", 0o755, initScript)
	cw.File("bin/busybox", 0o755, busybox)
	cw.Symlink("bin/sh", "busybox") // the interpreter of /init, before --install
	for _, m := range guestModules {
		ko, err := readModule(filepath.Join(modDir, deps[m].path))
		if err != nil {
			return nil, fmt.Errorf("module %s: %w", m, err)
		}
		cw.File("lib/modules/"+m+".ko", 0o644, ko)
	}
	cw.File("lib/modules/load-order", 0o644, []byte(strings.Join(guestModules, "\n")+"\n"))
	made := map[string]bool{"bin": true, "dev": true, "proc": true, "sys": true, "run": true, "tmp": true, "etc": true, "lib": true, "lib/modules": true}
	for _, f := range opts.Files {
		var parents []string
		for d := filepath.Dir(f.Path); d != "." && d != "/" && !made[d]; d = filepath.Dir(d) {
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			cw.Dir(parents[i])
			made[parents[i]] = true
		}
		cw.File(f.Path, f.Mode, f.Data)
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("write initramfs: %w", err)
	}
	if err := gz.Close(); err != nil {
		return nil, fmt.Errorf("compress initramfs: %w", err)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	initrd := filepath.Join(dir, opts.Name+"-"+version+".cpio.gz")
	tmp := initrd + ".tmp"
	_ = os.Remove(tmp)
	if err := os.WriteFile(tmp, archive.Bytes(), opts.FileMode); err != nil {
		return nil, fmt.Errorf("write initramfs: %w", err)
	}
	if err := os.Rename(tmp, initrd); err != nil {
		return nil, fmt.Errorf("write initramfs: %w", err)
	}
	return &Image{Kernel: kernel, Initrd: initrd, KernelVersion: version, Modules: guestModules}, nil
}

// findKernel picks the newest cloud kernel that has its modules installed.
func findKernel() (path, version string, err error) {
	kernels, _ := filepath.Glob(kernelGlob)
	sort.Sort(sort.Reverse(sort.StringSlice(kernels)))
	for _, k := range kernels {
		v := strings.TrimPrefix(filepath.Base(k), "vmlinuz-")
		if _, err := os.Stat(filepath.Join("/lib/modules", v, "modules.dep")); err == nil {
			return k, v, nil
		}
	}
	return "", "", fmt.Errorf("no %s with modules in /lib/modules (apt-get install linux-image-cloud-amd64)", kernelGlob)
}

// checkStatic refuses a dynamically linked busybox: the initramfs has no
// libc, and the kernel would fail to run /init with a bare ENOENT.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w (apt-get install busybox-static)", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked (apt-get install busybox-static)", path)
		}
	}
	return nil
}

type moduleDep struct {
	path string   // relative to /lib/modules/<version>
	deps []string // module names
}

// readModulesDep parses modules.dep ("kernel/a.ko.xz: kernel/b.ko.xz ...")
// into module name → file and direct dependencies.
func readModulesDep(modDir string) (map[string]moduleDep, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]moduleDep{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		file, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		d := moduleDep{path: file}
		for _, dep := range strings.Fields(rest) {
			d.deps = append(d.deps, moduleName(dep))
		}
		out[moduleName(file)] = d
	}
	return out, sc.Err()
}

// moduleName turns "kernel/drivers/net/virtio_net.ko.xz" into "virtio_net".
func moduleName(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// checkModuleOrder verifies every module exists and each one's
// dependencies come before it.
func checkModuleOrder(order []string, deps map[string]moduleDep) error {
	loaded := map[string]bool{}
	for _, m := range order {
		d, ok := deps[m]
		if !ok {
			return fmt.Errorf("module %s not in modules.dep (built in, or renamed?)", m)
		}
		for _, dep := range d.deps {
			if !loaded[dep] {
				return fmt.Errorf("module %s needs %s, which is not loaded before it", m, dep)
			}
		}
		loaded[m] = true
	}
	return nil
}

// readModule returns the module's ELF bytes. Debian's cloud kernel ships
// plain .ko files today, but kernels built with CONFIG_MODULE_COMPRESS_*
// ship .ko.xz or .ko.zst, which busybox insmod (init_module, not
// finit_module with MODULE_INIT_COMPRESSED_FILE) cannot load: decompress
// here, with Go for gzip and the xz/zstd tools for the others.
func readModule(path string) ([]byte, error) {
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, err
		}
		var b bytes.Buffer
		_, err = b.ReadFrom(zr)
		return b.Bytes(), err
	case strings.HasSuffix(path, ".ko.xz"):
		return decompressWith("xz", "apt-get install xz-utils", path)
	case strings.HasSuffix(path, ".ko.zst"):
		return decompressWith("zstd", "apt-get install zstd", path)
	}
	return nil, fmt.Errorf("%s: unknown module compression", path)
}

func decompressWith(tool, fix, path string) ([]byte, error) {
	if _, err := exec.LookPath(tool); err != nil {
		return nil, fmt.Errorf("%s is compressed and %s is missing (%s)", path, tool, fix)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w: %s", tool, path, err, strings.TrimSpace(stderr.String()))
	}
	if !bytes.HasPrefix(out, []byte(elf.ELFMAG)) {
		return nil, errors.New(path + ": decompressed module is not ELF")
	}
	return out, nil
}

// Check reports why Build cannot work on this host (the kernel package or
// busybox-static missing), or nil.
func Check() error {
	if _, _, err := findKernel(); err != nil {
		return err
	}
	return checkStatic(busyboxPath)
}
