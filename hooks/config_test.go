package hooks

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestConfigPath(t *testing.T) {
	for _, tc := range []struct{ hook, want string }{
		{"/etc/libvirt/hooks/qemu.d/vnicfilter", "/etc/libvirt/hooks/vnicfilter.conf"},
		{"/etc/libvirt/hooks/qemu", "/etc/libvirt/hooks/vnicfilter.conf"},
		{"/usr/local/bin/vnicfilter-hook", "/usr/local/bin/vnicfilter.conf"},
	} {
		if got := ConfigPath(tc.hook); got != tc.want {
			t.Errorf("ConfigPath(%q) = %q, want %q", tc.hook, got, tc.want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       Config
		err        string
	}{
		{name: "missing", text: "", want: Config{}},
		{name: "full", text: "# comment\n\nsocket = /tmp/f.sock\ntimeout=3s\nnetwork-dir=/x\nbpffs-root=/sys/fs/bpf/vf\n", want: Config{Socket: "/tmp/f.sock", Timeout: 3 * time.Second, NetworkDir: "/x", BPFFSRoot: "/sys/fs/bpf/vf"}},
		{name: "bpffs_root", text: "bpffs_root=/sys/fs/bpf/other\n", want: Config{BPFFSRoot: "/sys/fs/bpf/other"}},
		{name: "unknown key", text: "sock=/x\n", err: `unknown key "sock"`},
		{name: "no value", text: "socket=\n", err: "want key=value"},
		{name: "bad timeout", text: "timeout=-1s\n", err: "positive duration"},
		{name: "hidden", text: "hidden-bridge=vfhidden0\nhidden-allow=vfcvm*,ctl?\n", want: Config{HiddenBridge: "vfhidden0", HiddenAllow: []string{"vfcvm*", "ctl?"}}},
		{name: "bad hidden pattern", text: "hidden-allow=[x\n", err: "not a valid glob"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name+".conf")
			if tc.text != "" {
				if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := LoadConfig(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("LoadConfig = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
	if c := (Config{}).WithDefaults(); c.Socket != "/run/vnicfilter/filterd.sock" || c.Timeout != DefaultTimeout || c.NetworkDir != DefaultNetworkDir || c.BPFFSRoot != "/sys/fs/bpf/vnicfilter" {
		t.Errorf("defaults: %+v", c)
	}
}
