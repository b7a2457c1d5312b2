package guestimage

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestCpioListsWithBusybox checks the archive against an independent
// reader: busybox cpio, when there is one.
func TestCpioListsWithBusybox(t *testing.T) {
	var b bytes.Buffer
	cw := &cpioWriter{w: &b}
	cw.Dir("bin")
	cw.CharDev("dev/console", 0o600, 5, 1)
	cw.File("init", 0o755, []byte("#!/bin/sh\n"))
	cw.File("odd", 0o644, []byte("12345")) // exercises data padding
	cw.Symlink("bin/sh", "busybox")
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Len()%4 != 0 {
		t.Errorf("archive length %d is not 4-byte aligned", b.Len())
	}
	if _, err := exec.LookPath("busybox"); err != nil {
		t.Skip("no busybox to read the archive back")
	}
	cmd := exec.Command("busybox", "cpio", "-tv")
	cmd.Stdin = &b
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("busybox cpio -t: %v\n%s", err, out)
	}
	for _, want := range []string{"drwxr-xr-x", " bin\n", "crw-------", "dev/console", "-rwxr-xr-x", "init", "5 ", "odd", "bin/sh -> busybox"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("listing lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckModuleOrder(t *testing.T) {
	deps := map[string]moduleDep{
		"virtio":     {path: "virtio.ko"},
		"virtio_net": {path: "virtio_net.ko.xz", deps: []string{"virtio"}},
	}
	if err := checkModuleOrder([]string{"virtio", "virtio_net"}, deps); err != nil {
		t.Errorf("good order: %v", err)
	}
	if err := checkModuleOrder([]string{"virtio_net", "virtio"}, deps); err == nil || !strings.Contains(err.Error(), "needs virtio") {
		t.Errorf("bad order: %v", err)
	}
	if err := checkModuleOrder([]string{"failover"}, deps); err == nil {
		t.Error("missing module accepted")
	}
	if got := moduleName("kernel/drivers/net/virtio-net.ko.zst"); got != "virtio_net" {
		t.Errorf("moduleName = %q", got)
	}
}
