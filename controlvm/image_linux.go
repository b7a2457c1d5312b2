package controlvm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vnicfilter/vnicfilter/controlvm/agent"
	"github.com/vnicfilter/vnicfilter/libvirt/guestimage"
)

// BuildImage builds the control VM's initramfs into dir (0700; the image
// 0600: it holds the agent's keys).
func BuildImage(dir string, in ImageInputs) (Image, error) {
	if err := checkStatic("agent", "./cmd/vfagent", in.AgentBinary); err != nil {
		return Image{}, err
	}
	bin, err := os.ReadFile(in.AgentBinary)
	if err != nil {
		return Image{}, err
	}
	files := []guestimage.File{{Path: AgentBin, Mode: 0o755, Data: bin}}
	for _, f := range []struct{ dir, name, to string }{
		{in.AgentDir, agent.KeyFile, AgentDir}, {in.AgentDir, agent.CertFile, AgentDir}, {in.AgentDir, agent.CAFile, AgentDir},
		{in.FilterdTLS, "agent.pem", FilterdTLSDir}, {in.FilterdTLS, "agent-key.pem", FilterdTLSDir}, {in.FilterdTLS, "ca.pem", FilterdTLSDir},
	} {
		data, err := os.ReadFile(filepath.Join(f.dir, f.name))
		if err != nil {
			return Image{}, fmt.Errorf("control VM image: %w", err)
		}
		mode := uint32(0o644)
		if strings.Contains(f.name, "key") {
			mode = 0o600
		}
		files = append(files, guestimage.File{Path: f.to + "/" + f.name, Mode: mode, Data: data})
		if in.VfctlBinary != "" && f.to == FilterdTLSDir {
			files = append(files, guestimage.File{Path: VfctlTLSDir + "/" + f.name, Mode: mode, Data: data})
		}
	}
	if in.VfctlBinary != "" {
		if err := checkStatic("vfctl", "./cmd/vfctl", in.VfctlBinary); err != nil {
			return Image{}, err
		}
		ctl, err := os.ReadFile(in.VfctlBinary)
		if err != nil {
			return Image{}, err
		}
		if in.FilterdURL == "" {
			return Image{}, fmt.Errorf("control VM image: vfctl needs filterd's URL on the hidden bridge")
		}
		profile := fmt.Sprintf("# vfctl talks to filterd over the hidden bridge (mutual TLS, /%s)\nexport VNICFILTER_REMOTE=%s\n", VfctlTLSDir, in.FilterdURL)
		files = append(files, guestimage.File{Path: "bin/vfctl", Mode: 0o755, Data: ctl},
			guestimage.File{Path: "etc/profile", Mode: 0o644, Data: []byte(profile)})
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Image{}, err
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return Image{}, err
	}
	gi, err := guestimage.Build(dir, guestimage.Options{Name: "vfcontrol", Files: files, FileMode: 0o600})
	if err != nil {
		return Image{}, err
	}
	return Image{Kernel: gi.Kernel, Initrd: gi.Initrd}, nil
}
