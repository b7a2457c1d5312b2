package controlvm_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/vnicfilter/vnicfilter/controlvm"
)

func spec() controlvm.Spec {
	return controlvm.Spec{Host: "host1", Manager: "https://192.0.2.5:8443", VirtType: "qemu", MgmtNetwork: "default",
		MgmtAddr: netip.MustParsePrefix("192.168.122.50/24"), MgmtGateway: netip.MustParseAddr("192.168.122.1"), ConsoleLog: "/var/lib/x/console.log"}
}

// The domain has one NIC on the hidden bridge with the allowed tap name
// and one on the management network; the command line starts the agent
// against filterd's hidden address.
func TestDomainXML(t *testing.T) {
	img := controlvm.Image{Kernel: "/boot/vmlinuz", Initrd: "/var/lib/x/vfcontrol.cpio.gz"}
	x, err := spec().DomainXML(img)
	if err != nil {
		t.Fatal(err)
	}
	var d libvirtxml.Domain
	if err := d.Unmarshal(x); err != nil {
		t.Fatalf("domain XML does not parse: %v\n%s", err, x)
	}
	if d.Name != "vfcontrol" || d.Type != "qemu" || d.OS.Kernel != img.Kernel || d.OS.Initrd != img.Initrd {
		t.Errorf("domain %+v", d)
	}
	ifs := d.Devices.Interfaces
	if len(ifs) != 2 || ifs[0].Source.Bridge == nil || ifs[0].Source.Bridge.Bridge != "vfhidden0" || ifs[0].Target == nil || ifs[0].Target.Dev != "vfcvm0" ||
		ifs[1].Source.Network == nil || ifs[1].Source.Network.Network != "default" {
		t.Errorf("interfaces: %s", x)
	}
	for _, want := range []string{"vf.ip=169.254.77.2/24", "vf.ip1=192.168.122.50/24", "vf.gw=192.168.122.1", `vf.cmd="/bin/vfagent run --manager https://192.0.2.5:8443 --host host1`, "--filterd https://169.254.77.1:9443"} {
		if !strings.Contains(d.OS.Cmdline, want) {
			t.Errorf("cmdline %q lacks %q", d.OS.Cmdline, want)
		}
	}
	if strings.Contains(d.OS.Cmdline, "--underlay") {
		t.Errorf("cmdline %q has --underlay without one", d.OS.Cmdline)
	}
	withUL := spec()
	withUL.Underlay = netip.MustParseAddr("192.0.2.11")
	if c := withUL.Cmdline(); !strings.Contains(c, "--log-format json --underlay 192.0.2.11\"") {
		t.Errorf("cmdline with an underlay: %q", c)
	}
	if len(d.OS.Cmdline) > 2047 {
		t.Errorf("cmdline is %d bytes, the kernel takes 2047", len(d.OS.Cmdline))
	}
	for _, bad := range []func(*controlvm.Spec){
		func(s *controlvm.Spec) { s.MgmtNetwork = "" },
		func(s *controlvm.Spec) { s.MgmtBridge = "br0" },
		func(s *controlvm.Spec) { s.Manager = "http://x" },
		func(s *controlvm.Spec) { s.Host = "a b" },
		func(s *controlvm.Spec) { s.MgmtAddr = netip.Prefix{} },
		func(s *controlvm.Spec) { s.Manager = "https://x/'><evil" },
	} {
		s := spec()
		bad(&s)
		if _, err := s.DomainXML(img); err == nil {
			t.Errorf("spec %+v accepted", s)
		}
	}
}

// The image holds the static agent and the credentials, keys 0600, in a
// 0600 file in a 0700 directory; a dynamic binary is refused.
func TestBuildImage(t *testing.T) {
	if _, err := os.Stat("/bin/busybox"); err != nil && os.Getenv("CI") != "true" {
		t.Skip("busybox-static is not installed")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "vfagent")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/vnicfilter/vnicfilter/cmd/vfagent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build vfagent: %v\n%s", err, out)
	}
	agentDir, tlsDir := filepath.Join(dir, "agent"), filepath.Join(dir, "tls")
	for d, files := range map[string][]string{agentDir: {"agent.key", "agent.crt", "manager-ca.pem"}, tlsDir: {"agent.pem", "agent-key.pem", "ca.pem"}} {
		os.MkdirAll(d, 0o700)
		for _, f := range files {
			os.WriteFile(filepath.Join(d, f), []byte(f), 0o600)
		}
	}
	out := filepath.Join(dir, "image")
	img, err := controlvm.BuildImage(out, controlvm.ImageInputs{AgentBinary: bin, AgentDir: agentDir, FilterdTLS: tlsDir,
		VfctlBinary: bin, FilterdURL: "https://169.254.77.1:9443"}) // any static binary stands for vfctl
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{out: 0o700, img.Initrd: 0o600} {
		if st, err := os.Stat(path); err != nil || st.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want %04o", path, st.Mode(), err, want)
		}
	}
	entries := readCpio(t, img.Initrd)
	for name, mode := range map[string]uint32{"bin/vfagent": 0o755, "etc/vfagent/agent.key": 0o600, "etc/vfagent/filterd/agent-key.pem": 0o600, "etc/vfagent/filterd/ca.pem": 0o644, "init": 0o755, "bin/busybox": 0o755,
		"bin/vfctl": 0o755, "etc/vnicfilter/tls/agent-key.pem": 0o600, "etc/vnicfilter/tls/agent.pem": 0o644, "etc/vnicfilter/tls/ca.pem": 0o644, "etc/profile": 0o644} {
		if got, ok := entries[name]; !ok || got&0o777 != mode {
			t.Errorf("image entry %s: mode %o (present %v), want %o", name, got&0o777, ok, mode)
		}
	}
	if _, err := controlvm.BuildImage(out, controlvm.ImageInputs{AgentBinary: "/bin/sh", AgentDir: agentDir, FilterdTLS: tlsDir}); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("a dynamic agent binary: %v", err)
	}
	if _, err := controlvm.BuildImage(out, controlvm.ImageInputs{AgentBinary: bin, AgentDir: agentDir, FilterdTLS: tlsDir, VfctlBinary: "/bin/sh", FilterdURL: "https://x:1"}); err == nil || !strings.Contains(err.Error(), "vfctl binary /bin/sh is dynamically linked") {
		t.Errorf("a dynamic vfctl binary: %v", err)
	}
}

// readCpio lists a gzip newc archive: name -> mode.
func readCpio(t *testing.T, path string) map[string]uint32 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	hex := func(b []byte) uint32 { v, _ := strconv.ParseUint(string(b), 16, 32); return uint32(v) }
	for off := 0; off+110 <= len(data); {
		h := data[off : off+110]
		if !bytes.Equal(h[:6], []byte("070701")) {
			t.Fatalf("bad cpio magic at %d", off)
		}
		mode, size, nameSize := hex(h[14:22]), int(hex(h[54:62])), int(hex(h[94:102]))
		name := string(data[off+110 : off+110+nameSize-1])
		if name == "TRAILER!!!" {
			break
		}
		out[name] = mode
		off = (off + 110 + nameSize + 3) &^ 3
		off = (off + size + 3) &^ 3
	}
	return out
}
