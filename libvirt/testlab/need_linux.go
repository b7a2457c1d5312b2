package testlab

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vnicfilter/vnicfilter/libvirt/guestimage"
)

// requirement is something the lab needs from the machine; probe returns
// "" when it is there and otherwise why not, with the fix.
type requirement struct {
	name  string
	probe func() string
}

var (
	needRoot = requirement{"root", func() string {
		if os.Geteuid() != 0 {
			return "libvirtd, bridges and taps need uid 0"
		}
		return ""
	}}
	needLibvirtd = requirement{"libvirtd", func() string {
		return needBinaries("apt-get install libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients",
			"libvirtd", "virsh")
	}}
	needQEMU = requirement{"qemu", func() string {
		return needBinaries("apt-get install qemu-system-x86", "qemu-system-x86_64")
	}}
	needLibvirtUsers = requirement{"libvirt-users", func() string {
		// The QEMU driver refuses to load without them even though our
		// private qemu.conf runs QEMU as root.
		if _, err := exec.LookPath("getent"); err != nil {
			return ""
		}
		for _, db := range [][2]string{{"passwd", "libvirt-qemu"}, {"group", "kvm"}} {
			if exec.Command("getent", db[0], db[1]).Run() != nil {
				return fmt.Sprintf("%s %s missing (apt-get install libvirt-daemon-system creates it)", db[0], db[1])
			}
		}
		return ""
	}}
	needGuestImage = requirement{"guest-image", func() string {
		if err := guestimage.Check(); err != nil {
			return err.Error()
		}
		return ""
	}}
)

func needBinaries(fix string, names ...string) string {
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("%s not on PATH (%s)", strings.Join(missing, ", "), fix)
}

// need skips t naming every unmet requirement, or fails it when CI=true:
// the rule of sdk/testkit.Need, for the requirements of a libvirt lab.
func need(t testing.TB, reqs ...requirement) {
	t.Helper()
	var unmet []string
	for _, r := range reqs {
		if reason := r.probe(); reason != "" {
			unmet = append(unmet, r.name+": "+reason)
		}
	}
	if len(unmet) == 0 {
		return
	}
	msg := "unmet test requirements: " + strings.Join(unmet, "; ")
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI=true: a CI machine must provide them)", msg)
	}
	t.Skip(msg)
}
