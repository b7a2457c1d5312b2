package cli

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/vnicfilter/vnicfilter/controlvm"
	"github.com/vnicfilter/vnicfilter/controlvm/agent"
)

// controlVMResult is what install reports (-o json).
type controlVMResult struct {
	Domain  string `json:"domain"`
	Host    string `json:"host"`
	Kernel  string `json:"kernel"`
	Initrd  string `json:"initrd"`
	Console string `json:"console"`
	Defined bool   `json:"defined"`
	Started bool   `json:"started"`
	XML     string `json:"xml,omitempty"`
}

func (a *app) controlVMCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "controlvm",
		Short: "The host's control VM: the agent between the manager and filterd (install)",
		Long: `The control VM is a small libvirt guest per host that runs the agent
(vfagent). It has two NICs: one on filterd's hidden bridge, where it talks
to filterd's API over mutual TLS, and one on the management network, where
it holds the manager's desired-state stream. Nothing else is on the hidden
bridge, and no VM can reach filterd or the agent (docs/hidden-bridge.md,
docs/controlvm.md).`,
		Example: `  vfctl controlvm install --host host1 --manager https://mgr.example.net:8443 \
      --manager-ca /etc/vfagent/manager-ca.pem --join-token-file /root/join.token \
      --mgmt-network default --mgmt-addr 192.168.122.50/24 --mgmt-gateway 192.168.122.1 --start`,
	}
	var (
		spec                            controlvm.Spec
		lf                              libvirtFlags
		managerCA, tokenFile, agentBin  string
		vfctlBin                        string
		filterdBin, hiddenTLS, imageDir string
		hiddenAddr, mgmtAddr, mgmtGW    string
		underlay                        string
		printXML, start                 bool
	)
	install := &cobra.Command{
		Use:   "install",
		Short: "Enroll the host, build the control VM's image and define its domain",
		Long: `install sets up the host's control VM in four steps:

  1. enrolls the host with the manager: a single-use join token (vfctl mgr
     token create --role join --host HOST) is exchanged for a client
     certificate of the manager CA; the key is made here (IMAGE-DIR/agent,
     0600) and only a certificate request leaves the host;
  2. issues the agent's client certificate of the host CA for filterd's
     hidden-bridge API (filterd issue-cert --name agent);
  3. builds the image: the distribution kernel (apt linux-image-cloud-amd64)
     and an initramfs with busybox, virtio_net, the static vfagent binary,
     both sets of credentials (IMAGE-DIR, directory 0700, image 0600) and,
     for operators on the control VM's console, this vfctl (--vfctl-binary)
     with /etc/profile exporting VNICFILTER_REMOTE and the certificate at
     vfctl's default --remote-cert/-key/-ca paths: "vfctl list" there
     talks to filterd over the hidden bridge;
  4. defines the libvirt domain from the template (controlvm/domain.xml.tmpl):
     NIC 1 on the hidden bridge with tap --hidden-tap (filterd's
     --hidden-allow must match it), NIC 2 on the management network,
     serial console to IMAGE-DIR/console.log (the agent's log), and with
     --start starts it.

An existing enrollment in IMAGE-DIR/agent is kept (the join token is then
not needed). --print-xml stops before defining and prints the domain XML.
The agent and vfctl binaries must be statically linked (CGO_ENABLED=0 go
build ./cmd/vfagent ./cmd/vfctl; make build does).`,
		Example: `  vfctl controlvm install --host host1 --manager https://mgr.example.net:8443 \
      --manager-ca ca.crt --join-token-file join.token \
      --mgmt-network default --mgmt-addr 192.168.122.50/24 --start
  vfctl controlvm install --host host1 --manager https://10.0.0.5:8443 --manager-ca ca.crt \
      --join-token-file join.token --mgmt-bridge br-mgmt --mgmt-addr 10.0.0.50/24 --print-xml`,
		Args: args(),
		RunE: a.runE(func(ctx context.Context, _ []string) error {
			var err error
			if spec.HiddenAddr, err = netip.ParsePrefix(hiddenAddr); err != nil {
				return usagef("--hidden-addr %q: want a prefix such as 169.254.77.2/24", hiddenAddr)
			}
			if spec.MgmtAddr, err = netip.ParsePrefix(mgmtAddr); err != nil {
				return usagef("--mgmt-addr %q: want a prefix such as 192.168.122.50/24", mgmtAddr)
			}
			if mgmtGW != "" {
				if spec.MgmtGateway, err = netip.ParseAddr(mgmtGW); err != nil {
					return usagef("--mgmt-gateway %q: want an IP address", mgmtGW)
				}
			}
			if underlay != "" {
				if spec.Underlay, err = netip.ParseAddr(underlay); err != nil || !spec.Underlay.IsGlobalUnicast() {
					return usagef("--underlay %q: want the host's unicast IP address on the underlay", underlay)
				}
			}
			spec.ConsoleLog = filepath.Join(imageDir, "console.log")
			spec = spec.WithDefaults()
			if err := spec.Validate(); err != nil {
				return usagef("%v", err)
			}
			if agentBin == "" {
				agentBin = defaultAgentBinary()
			}
			switch vfctlBin {
			case "none":
				vfctlBin = ""
			case "":
				if exe, err := os.Executable(); err == nil {
					vfctlBin = exe
				}
			}
			res, err := a.installControlVM(ctx, spec, &lf, managerCA, tokenFile, agentBin, vfctlBin, filterdBin, hiddenTLS, imageDir, printXML, start)
			if err != nil {
				return err
			}
			return a.emit(res, func(w io.Writer) error {
				if printXML {
					_, err := fmt.Fprint(w, res.XML)
					return err
				}
				fmt.Fprintf(w, "control VM %s for host %s: image %s, kernel %s\n", res.Domain, res.Host, res.Initrd, res.Kernel)
				fmt.Fprintf(w, "defined: %v, started: %v; the agent logs to %s\n", res.Defined, res.Started, res.Console)
				return nil
			})
		}),
	}
	f := install.Flags()
	f.StringVar(&spec.Host, "host", "", "this host's `name` at the manager (required)")
	f.StringVar(&spec.Manager, "manager", os.Getenv("VFMANAGER_SERVER"), "the manager's `URL` as the control VM reaches it (env VFMANAGER_SERVER)")
	f.StringVar(&managerCA, "manager-ca", os.Getenv("VFMANAGER_CA"), "`file` with the manager CA (env VFMANAGER_CA)")
	f.StringVar(&tokenFile, "join-token-file", "", "`file` holding the single-use join token (not needed when IMAGE-DIR/agent is enrolled)")
	f.StringVar(&agentBin, "agent-binary", "", "static vfagent `binary` (default: vfagent beside vfctl, else in PATH)")
	f.StringVar(&vfctlBin, "vfctl-binary", "", "static vfctl `binary` for operators on the control VM, set up to reach filterd over the hidden bridge (default: this vfctl; \"none\" leaves it out)")
	f.StringVar(&filterdBin, "filterd-binary", "filterd", "filterd `binary` used to issue the agent's host-CA certificate")
	f.StringVar(&hiddenTLS, "hidden-tls-dir", "/etc/vnicfilter/tls", "filterd's --hidden-tls-dir (the host CA)")
	f.StringVar(&imageDir, "image-dir", "/var/lib/vnicfilter/controlvm", "`directory` for the image, credentials and console log (0700)")
	f.StringVar(&spec.Name, "name", "vfcontrol", "libvirt domain `name`")
	f.StringVar(&spec.VirtType, "virt-type", "", "domain `type`: kvm or qemu (TCG); default kvm when /dev/kvm exists")
	f.IntVar(&spec.MemoryMiB, "memory", 192, "guest memory in `MiB`")
	f.StringVar(&spec.HiddenBridge, "hidden-bridge", "vfhidden0", "filterd's hidden `bridge`")
	f.StringVar(&spec.HiddenTap, "hidden-tap", "vfcvm0", "the control VM's `tap` on it (must match filterd's --hidden-allow)")
	f.StringVar(&hiddenAddr, "hidden-addr", "169.254.77.2/24", "the control VM's `prefix` on the hidden bridge")
	f.StringVar(&spec.FilterdURL, "filterd-url", "https://169.254.77.1:9443", "filterd's API on the hidden bridge (`URL`)")
	f.StringVar(&spec.MgmtNetwork, "mgmt-network", "", "libvirt `network` of the management NIC (or --mgmt-bridge)")
	f.StringVar(&spec.MgmtBridge, "mgmt-bridge", "", "host `bridge` of the management NIC (or --mgmt-network)")
	f.StringVar(&mgmtAddr, "mgmt-addr", "", "the control VM's management `prefix`, e.g. 192.168.122.50/24 (required: no DHCP client)")
	f.StringVar(&mgmtGW, "mgmt-gateway", "", "default gateway `address` on the management network")
	f.StringVar(&underlay, "underlay", "", "this host's underlay `address`, given to the agent (vfagent --underlay): its segments' VXLAN source and its encryption tunnel's endpoint")
	f.BoolVar(&printXML, "print-xml", false, "stop before defining: print the domain XML")
	f.BoolVar(&start, "start", false, "start the domain once defined (and mark it autostart)")
	lf.add(install)
	c.AddCommand(install)
	return c
}

// defaultAgentBinary is vfagent beside the running vfctl, else in PATH.
func defaultAgentBinary() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "vfagent")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("vfagent"); err == nil {
		return p
	}
	return "vfagent"
}

func (a *app) installControlVM(ctx context.Context, spec controlvm.Spec, lf *libvirtFlags, managerCA, tokenFile, agentBin, vfctlBin, filterdBin, hiddenTLS, imageDir string, printXML, start bool) (*controlVMResult, error) {
	fail := func(hint, format string, args ...any) error {
		return &exitError{code: ExitFailure, msg: fmt.Sprintf(format, args...), hint: hint}
	}
	if err := os.MkdirAll(imageDir, 0o700); err != nil {
		return nil, fail("", "image directory: %v", err)
	}
	agentDir := filepath.Join(imageDir, "agent")
	if !agent.Enrolled(agentDir) {
		if managerCA == "" || tokenFile == "" {
			return nil, usagef("not enrolled yet: --manager-ca and --join-token-file are required")
		}
		ca, err := os.ReadFile(managerCA)
		if err != nil {
			return nil, fail("", "manager CA: %v", err)
		}
		tok, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fail("", "join token: %v", err)
		}
		ectx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := agent.Enroll(ectx, spec.Manager, ca, strings.TrimSpace(string(tok)), spec.Host, agentDir); err != nil {
			return nil, fail("a join token works once and expires: mint another with vfctl mgr token create --role join --host "+spec.Host, "%v", err)
		}
	}
	tlsOut := filepath.Join(imageDir, "filterd-tls")
	if out, err := exec.CommandContext(ctx, filterdBin, "issue-cert", "--hidden-tls-dir", hiddenTLS, "--name", "agent", "--out", tlsOut).CombinedOutput(); err != nil {
		return nil, fail("is filterd installed (--filterd-binary) and --hidden-tls-dir its --hidden-tls-dir?", "issue the agent's host-CA certificate: %v: %s", err, strings.TrimSpace(string(out)))
	}
	img, err := controlvm.BuildImage(imageDir, controlvm.ImageInputs{AgentBinary: agentBin, AgentDir: agentDir, FilterdTLS: tlsOut, VfctlBinary: vfctlBin, FilterdURL: spec.FilterdURL})
	if err != nil {
		return nil, fail("the image needs apt packages linux-image-cloud-amd64 and busybox-static (make deps) and static vfagent and vfctl binaries (make build; or --vfctl-binary none)", "build the control VM image: %v", err)
	}
	xml, err := spec.DomainXML(img)
	if err != nil {
		return nil, fail("", "domain XML: %v", err)
	}
	res := &controlVMResult{Domain: spec.Name, Host: spec.Host, Kernel: img.Kernel, Initrd: img.Initrd, Console: spec.ConsoleLog}
	if printXML {
		res.XML = xml
		return res, nil
	}
	l, err := a.dialLibvirt(lf)
	if err != nil {
		return nil, err
	}
	defer func() { _ = l.Disconnect() }()
	dom, err := l.DomainDefineXML(xml)
	if err != nil {
		return nil, fail("", "define domain %s: %v", spec.Name, err)
	}
	res.Defined = true
	if start {
		if err := l.DomainSetAutostart(dom, 1); err != nil {
			return nil, fail("", "autostart %s: %v", spec.Name, err)
		}
		if err := l.DomainCreate(dom); err != nil {
			return nil, fail("is the hidden bridge up (filterd --hidden-bridge)?", "start %s: %v", spec.Name, err)
		}
		res.Started = true
	}
	return res, nil
}
