package controlvm

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/template"
)

//go:embed domain.xml.tmpl
var domainTemplate string

var domainTmpl = template.Must(template.New("domain").Parse(domainTemplate))

// Paths inside the control VM's image.
const (
	AgentBin      = "bin/vfagent"
	AgentDir      = "etc/vfagent"         // manager credentials (agent.key, agent.crt, manager-ca.pem)
	FilterdTLSDir = "etc/vfagent/filterd" // host CA client certificate for filterd (agent.pem, agent-key.pem, ca.pem)
	VfctlTLSDir   = "etc/vnicfilter/tls"  // the same, where vfctl --remote looks by default
)

// Spec describes a control VM. Zero values are defaults where noted.
type Spec struct {
	// Name of the domain (default "vfcontrol").
	Name string
	// Host is this host's name at the manager.
	Host string
	// Manager is the manager's URL.
	Manager string
	// VirtType: "kvm" or "qemu" (TCG); default kvm when /dev/kvm exists.
	VirtType string
	// MemoryMiB (default 192).
	MemoryMiB int
	// HiddenBridge is filterd's hidden bridge (default vfhidden0);
	// HiddenTap the control VM's tap on it, matching filterd's
	// --hidden-allow (default vfcvm0).
	HiddenBridge, HiddenTap string
	// HiddenAddr is the control VM's address on the hidden bridge
	// (default 169.254.77.2/24) and FilterdURL filterd's API there
	// (default https://169.254.77.1:9443).
	HiddenAddr netip.Prefix
	FilterdURL string
	// MgmtNetwork (a libvirt network) or MgmtBridge (a host bridge): the
	// management network, one of them.
	MgmtNetwork, MgmtBridge string
	// MgmtAddr is the control VM's address there (prefix form) and
	// MgmtGateway its default gateway (optional).
	MgmtAddr    netip.Prefix
	MgmtGateway netip.Addr
	// ConsoleLog receives the serial console (agent logs).
	ConsoleLog string
	// Underlay is the host's underlay address, passed to the agent
	// (vfagent --underlay): its segments' VXLAN source and its encryption
	// tunnel's endpoint. Invalid: none.
	Underlay netip.Addr
}

// WithDefaults fills defaults.
func (s Spec) WithDefaults() Spec {
	if s.Name == "" {
		s.Name = "vfcontrol"
	}
	if s.VirtType == "" {
		s.VirtType = "qemu"
		if _, err := os.Stat("/dev/kvm"); err == nil {
			s.VirtType = "kvm"
		}
	}
	if s.MemoryMiB == 0 {
		s.MemoryMiB = 192
	}
	if s.HiddenBridge == "" {
		s.HiddenBridge = "vfhidden0"
	}
	if s.HiddenTap == "" {
		s.HiddenTap = "vfcvm0"
	}
	if !s.HiddenAddr.IsValid() {
		s.HiddenAddr = netip.MustParsePrefix("169.254.77.2/24")
	}
	if s.FilterdURL == "" {
		s.FilterdURL = "https://169.254.77.1:9443"
	}
	return s
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// Validate checks a spec with defaults filled.
func (s Spec) Validate() error {
	switch {
	case !nameRE.MatchString(s.Name):
		return fmt.Errorf("domain name %q: want 1 to 63 letters, digits, '.', '_', '-'", s.Name)
	case !nameRE.MatchString(s.Host):
		return fmt.Errorf("host name %q: want 1 to 63 letters, digits, '.', '_', '-'", s.Host)
	case !strings.HasPrefix(s.Manager, "https://"):
		return fmt.Errorf("manager %q: want https://HOST:PORT", s.Manager)
	case s.VirtType != "kvm" && s.VirtType != "qemu":
		return fmt.Errorf("virt type %q: want kvm or qemu", s.VirtType)
	case (s.MgmtNetwork == "") == (s.MgmtBridge == ""):
		return errors.New("management network: give exactly one of a libvirt network or a bridge")
	case !s.MgmtAddr.IsValid() || !s.MgmtAddr.Addr().Is4():
		return fmt.Errorf("management address %q: want an IPv4 prefix such as 192.0.2.10/24 (the control VM has no DHCP client)", s.MgmtAddr)
	case !s.HiddenAddr.Addr().Is4():
		return fmt.Errorf("hidden address %s: want IPv4", s.HiddenAddr)
	case len(s.HiddenTap) > 15 || len(s.HiddenBridge) > 15:
		return errors.New("hidden bridge and tap names: at most 15 characters")
	}
	for _, v := range []string{s.Manager, s.FilterdURL, s.ConsoleLog} {
		if strings.ContainsAny(v, "\"'<>&\n ") {
			return fmt.Errorf("%q: quotes, blanks and markup characters are not allowed", v)
		}
	}
	return nil
}

// Cmdline is the guest's vf.* kernel command line: addresses of eth0
// (hidden bridge) and eth1 (management), no test listeners, and the agent
// started by /init with its credentials from the image.
func (s Spec) Cmdline() string {
	agentCmd := strings.Join([]string{"/" + AgentBin, "run", "--manager", s.Manager, "--host", s.Host, "--dir", "/" + AgentDir,
		"--filterd", s.FilterdURL, "--filterd-cert", "/" + FilterdTLSDir + "/agent.pem", "--filterd-key", "/" + FilterdTLSDir + "/agent-key.pem",
		"--filterd-ca", "/" + FilterdTLSDir + "/ca.pem", "--log-format", "json"}, " ")
	if s.Underlay.IsValid() {
		agentCmd += " --underlay " + s.Underlay.String()
	}
	kv := map[string]string{
		"vf.name": s.Name, "vf.ip": s.HiddenAddr.String(), "vf.ip1": s.MgmtAddr.String(),
		"vf.http": "off", "vf.echo": "off", "vf.cmd": `"` + agentCmd + `"`, "vf.shell": "on",
	}
	if s.MgmtGateway.IsValid() {
		kv["vf.gw"] = s.MgmtGateway.String()
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{"console=ttyS0", "quiet", "panic=-1"}
	for _, k := range keys {
		parts = append(parts, k+"="+kv[k])
	}
	return strings.Join(parts, " ")
}

// macFor derives a stable locally administered MAC from the domain name.
func macFor(name string, nic byte) string {
	var h uint32 = 2166136261
	for _, c := range []byte(name) {
		h = (h ^ uint32(c)) * 16777619
	}
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", byte(h>>8), byte(h), nic)
}

// Image is a built control VM image: the kernel and the initramfs QEMU
// boots directly.
type Image struct {
	Kernel, Initrd string
}

// ImageInputs are the files baked into the control VM's image.
type ImageInputs struct {
	// AgentBinary is the static vfagent binary.
	AgentBinary string
	// AgentDir holds the enrolled agent's credentials (agent.Enroll).
	AgentDir string
	// FilterdTLS holds the host CA client certificate for filterd
	// (filterd issue-cert --name agent: agent.pem, agent-key.pem, ca.pem).
	FilterdTLS string
	// VfctlBinary, when set, is a static vfctl for operators on the
	// control VM: it goes to /bin/vfctl, the filterd certificate also to
	// vfctl's default --remote-cert/-key/-ca paths (/etc/vnicfilter/tls),
	// and /etc/profile exports VNICFILTER_REMOTE=FilterdURL, so `vfctl
	// list` in the operator's shell (virsh console NAME serial1) talks to
	// filterd over the hidden bridge.
	VfctlBinary string
	// FilterdURL is filterd's API on the hidden bridge (Spec.FilterdURL),
	// for /etc/profile.
	FilterdURL string
}

// DomainXML renders the libvirt domain of the control VM booting img.
func (s Spec) DomainXML(img Image) (string, error) {
	s = s.WithDefaults()
	if err := s.Validate(); err != nil {
		return "", err
	}
	var b bytes.Buffer
	err := domainTmpl.Execute(&b, map[string]any{
		"Name": s.Name, "VirtType": s.VirtType, "MemoryMiB": s.MemoryMiB, "Kernel": img.Kernel, "Initrd": img.Initrd,
		"Cmdline": s.Cmdline(), "HiddenBridge": s.HiddenBridge, "HiddenTap": s.HiddenTap, "HiddenMAC": macFor(s.Name, 0),
		"MgmtNetwork": s.MgmtNetwork, "MgmtBridge": s.MgmtBridge, "MgmtMAC": macFor(s.Name, 1), "ConsoleLog": s.ConsoleLog,
	})
	return b.String(), err
}

// checkStatic refuses a binary with an interpreter: the image has no
// dynamic loader. what names it ("agent", "vfctl"), cmd its package.
func checkStatic(what, cmd, path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%s binary %s: %w", what, path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s binary %s is dynamically linked: build it with CGO_ENABLED=0 go build %s", what, path, cmd)
		}
	}
	return nil
}
