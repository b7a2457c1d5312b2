// Command vfguest builds the tiny test guest of libvirt/testlab (the apt
// cloud kernel and a busybox initramfs) and writes domain XML booting it,
// for scripts that drive virsh themselves (scripts/demo-libvirt.sh):
//
//	vfguest image DIR
//	    builds DIR/vfguest-<kernel>.cpio.gz; prints kernel=… and initrd=…
//	vfguest xml --kernel K --initrd I --name N --bridge BR --mac M \
//	    [--ip A/P] [--cmd CMD] [--metadata FILE] --console FILE
//	    prints the domain XML (TCG, 160 MiB, one virtio NIC on BR)
//
// See docs/guest-image.md for the image and its vf.* command line keys.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/vnicfilter/vnicfilter/libvirt/testlab"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: vfguest image DIR | vfguest xml FLAGS (see go doc ./libvirt/cmd/vfguest)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "image":
		err = image(os.Args[2:])
	case "xml":
		err = domain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q: want image or xml", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vfguest:", err)
		os.Exit(1)
	}
}

func image(args []string) error {
	if len(args) != 1 {
		return fmt.Errorf("usage: vfguest image DIR")
	}
	if err := os.MkdirAll(args[0], 0o755); err != nil {
		return err
	}
	img, err := testlab.BuildGuestImageIn(args[0])
	if err != nil {
		return fmt.Errorf("build guest image (make deps installs the kernel and busybox-static): %w", err)
	}
	fmt.Printf("kernel=%s\ninitrd=%s\n", img.Kernel, img.Initrd)
	return nil
}

func domain(args []string) error {
	fs := flag.NewFlagSet("vfguest xml", flag.ContinueOnError)
	var img testlab.GuestImage
	var spec testlab.GuestSpec
	var nic testlab.NIC
	fs.StringVar(&img.Kernel, "kernel", "", "kernel `path`")
	fs.StringVar(&img.Initrd, "initrd", "", "initramfs `path`")
	fs.StringVar(&spec.Name, "name", "", "domain `name`")
	fs.StringVar(&nic.Bridge, "bridge", "", "host `bridge` of the NIC")
	fs.StringVar(&nic.MAC, "mac", "", "`MAC` of the NIC")
	ip := fs.String("ip", "", "guest `address/prefix` (vf.ip)")
	cmd := fs.String("cmd", "", "shell `command` the guest runs once up (vf.cmd)")
	meta := fs.String("metadata", "", "`file` holding the <metadata> content (a vnicfilter:filters element)")
	console := fs.String("console", "", "`file` the serial console is written to")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if img.Kernel == "" || img.Initrd == "" || spec.Name == "" || nic.Bridge == "" || *console == "" {
		return fmt.Errorf("--kernel, --initrd, --name, --bridge and --console are required")
	}
	spec.NICs = []testlab.NIC{nic}
	spec.Cmdline = map[string]string{"ipv6.disable": "1"}
	if *ip != "" {
		spec.Cmdline["vf.ip"] = *ip
	}
	if *cmd != "" {
		spec.Cmdline["vf.cmd"] = *cmd
	}
	if *meta != "" {
		b, err := os.ReadFile(*meta)
		if err != nil {
			return err
		}
		spec.Metadata = string(b)
	}
	x, err := spec.DomainXML(&img, *console)
	if err != nil {
		return err
	}
	fmt.Println(x)
	return nil
}
