package testlab

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestKernelCmdline(t *testing.T) {
	tests := []struct {
		name    string
		keys    map[string]string
		want    string
		wantErr string
	}{
		{name: "none", want: baseCmdline},
		{name: "sorted", keys: map[string]string{"vf.ip": "10.0.0.2/24", "vf.gw": "10.0.0.1"}, want: baseCmdline + " vf.gw=10.0.0.1 vf.ip=10.0.0.2/24"},
		{name: "spaces quoted", keys: map[string]string{"vf.cmd": "ping -c 3 10.0.0.1"}, want: baseCmdline + ` vf.cmd="ping -c 3 10.0.0.1"`},
		{name: "shell kept literal", keys: map[string]string{"vf.cmd": "echo;$HOME"}, want: baseCmdline + " vf.cmd=echo;$HOME"},
		{name: "flag", keys: map[string]string{"debug": ""}, want: baseCmdline + " debug"},
		{name: "quote refused", keys: map[string]string{"vf.cmd": `echo "x"`}, wantErr: "double quote"},
		{name: "newline refused", keys: map[string]string{"vf.cmd": "a\nb"}, wantErr: "newline"},
		{name: "bad key", keys: map[string]string{"vf cmd": "x"}, wantErr: "key"},
		{name: "too long", keys: map[string]string{"vf.cmd": strings.Repeat("x", 2100)}, wantErr: "bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := kernelCmdline(tt.keys)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("kernelCmdline = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

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
