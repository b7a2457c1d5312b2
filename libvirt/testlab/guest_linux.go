package testlab

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// GuestSpec describes a test guest for [Libvirtd.DefineGuest].
type GuestSpec struct {
	// Name of the domain; "vfg-<random>" when empty. Also the guest's
	// hostname unless Cmdline sets vf.name.
	Name string
	// MemoryMiB defaults to 160, enough for the kernel and the initramfs.
	MemoryMiB int
	// NICs become virtio-net interfaces, eth0, eth1, … in this order.
	NICs []NIC
	// Cmdline adds kernel command line keys, sorted after the harness's
	// own; the guest's /init reads the vf.* ones (see docs/guest-image.md):
	// vf.ip, vf.ip1…, vf.gw, vf.cmd, vf.name, vf.http, vf.echo. An empty
	// value is a bare flag.
	Cmdline map[string]string
	// Metadata is raw inner XML for the domain's <metadata>, such as a
	// vnicfilter:filters element with its namespace declaration.
	Metadata string
}

// NIC is one virtio-net interface of a guest.
type NIC struct {
	// Bridge is the host bridge the tap joins (type='bridge'), such as one
	// from [NewBridge]. Exactly one of Bridge and Network must be set.
	Bridge string
	// Network is a libvirt network to join instead (type='network').
	Network string
	// PortGroup of Network, optional.
	PortGroup string
	// MAC address; libvirt picks a 52:54:00 one when empty.
	MAC string
	// Alias is the interface's user alias; libvirt requires the "ua-" prefix.
	Alias string
}

// Guest is a domain defined by [Libvirtd.DefineGuest].
type Guest struct {
	// Name of the domain.
	Name    string
	l       *Libvirtd
	dom     libvirt.Domain
	console string
}

// DefineGuest defines a domain booting img's kernel and initramfs directly
// under TCG, with no disk, its serial console written to a file, and spec's
// NICs. t's cleanup destroys and undefines it. The domain is not started.
func (l *Libvirtd) DefineGuest(t testing.TB, img *GuestImage, spec GuestSpec) *Guest {
	t.Helper()
	if spec.Name == "" {
		spec.Name = "vfg-" + randomHex(4)
	}
	console := filepath.Join(t.TempDir(), spec.Name+".console.log")
	dom, err := domainXML(img, spec, console)
	if err != nil {
		t.Fatalf("guest %s: %v", spec.Name, err)
	}
	xml, err := dom.Marshal()
	if err != nil {
		t.Fatalf("guest %s: marshal domain XML: %v", spec.Name, err)
	}
	d, err := l.conn.DomainDefineXML(xml)
	if err != nil {
		t.Fatalf("define guest %s: %v", spec.Name, err)
	}
	g := &Guest{Name: spec.Name, l: l, dom: d, console: console}
	t.Cleanup(func() {
		if err := g.Destroy(); err != nil {
			t.Errorf("destroy guest %s: %v", g.Name, err)
		}
		if err := l.conn.DomainUndefineFlags(d, 0); err != nil {
			t.Errorf("undefine guest %s: %v", g.Name, err)
		}
	})
	return g
}

// domainXML builds the domain. Every device the guest does not use is
// left out or disabled (USB, balloon, graphics): fewer devices, faster
// boot under TCG.
func domainXML(img *GuestImage, spec GuestSpec, console string) (*libvirtxml.Domain, error) {
	mem := spec.MemoryMiB
	if mem == 0 {
		mem = 160
	}
	keys := map[string]string{"vf.name": spec.Name}
	for k, v := range spec.Cmdline {
		keys[k] = v
	}
	cmdline, err := kernelCmdline(keys)
	if err != nil {
		return nil, err
	}
	port := uint(0)
	dom := &libvirtxml.Domain{
		Type:   "qemu", // TCG: there is no /dev/kvm here
		Name:   spec.Name,
		Memory: &libvirtxml.DomainMemory{Value: uint(mem), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: 1},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Type: "hvm", Arch: "x86_64", Machine: "pc"},
			Kernel:  img.Kernel,
			Initrd:  img.Initrd,
			Cmdline: cmdline,
		},
		Features: &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}},
		// A guest that panics or reboots ends, so waits fail fast.
		OnPoweroff: "destroy",
		OnReboot:   "destroy",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Controllers: []libvirtxml.DomainController{{Type: "usb", Model: "none"}},
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{File: &libvirtxml.DomainChardevSourceFile{Path: console, Append: "off"}},
				Target: &libvirtxml.DomainSerialTarget{Port: &port},
			}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	if spec.Metadata != "" {
		dom.Metadata = &libvirtxml.DomainMetadata{XML: spec.Metadata}
	}
	for i, n := range spec.NICs {
		iface := libvirtxml.DomainInterface{Model: &libvirtxml.DomainInterfaceModel{Type: "virtio"}}
		switch {
		case n.Bridge != "" && n.Network == "":
			iface.Source = &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}}
		case n.Network != "" && n.Bridge == "":
			iface.Source = &libvirtxml.DomainInterfaceSource{Network: &libvirtxml.DomainInterfaceSourceNetwork{Network: n.Network, PortGroup: n.PortGroup}}
		default:
			return nil, fmt.Errorf("NIC %d: set exactly one of Bridge and Network", i)
		}
		if n.MAC != "" {
			iface.MAC = &libvirtxml.DomainInterfaceMAC{Address: n.MAC}
		}
		if n.Alias != "" {
			iface.Alias = &libvirtxml.DomainAlias{Name: n.Alias}
		}
		dom.Devices.Interfaces = append(dom.Devices.Interfaces, iface)
	}
	return dom, nil
}

// Start starts the domain, like virsh start. It returns once QEMU runs;
// the guest boots in the background (see [Guest.WaitConsole]).
func (g *Guest) Start() error {
	if err := g.l.conn.DomainCreate(g.dom); err != nil {
		return fmt.Errorf("start guest %s: %w", g.Name, err)
	}
	return nil
}

// Destroy stops the domain at once, like virsh destroy. Destroying a domain
// that is not running is not an error.
func (g *Guest) Destroy() error {
	running, err := g.Running()
	if err != nil || !running {
		return err
	}
	if err := g.l.conn.DomainDestroy(g.dom); err != nil {
		if running, err2 := g.Running(); err2 == nil && !running {
			return nil // it stopped on its own meanwhile
		}
		return fmt.Errorf("destroy guest %s: %w", g.Name, err)
	}
	return nil
}

// Running reports whether the domain is active (running, paused, …).
func (g *Guest) Running() (bool, error) {
	state, _, err := g.l.conn.DomainGetState(g.dom, 0)
	if err != nil {
		return false, fmt.Errorf("state of guest %s: %w", g.Name, err)
	}
	return libvirt.DomainState(state) != libvirt.DomainShutoff, nil
}

// Domain is the go-libvirt handle of the domain.
func (g *Guest) Domain() libvirt.Domain { return g.dom }

// ConsolePath is the file the guest's serial console is written to.
func (g *Guest) ConsolePath() string { return g.console }

// Console returns the serial console output so far.
func (g *Guest) Console() string {
	b, _ := os.ReadFile(g.console)
	return string(b)
}

// WaitConsole waits until the console output contains marker. It gives up
// when ctx ends or the domain stops, with the end of the console output in
// the error.
func (g *Guest) WaitConsole(ctx context.Context, marker string) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		if strings.Contains(g.Console(), marker) {
			return nil
		}
		if i%10 == 9 {
			if running, err := g.Running(); err == nil && !running {
				if strings.Contains(g.Console(), marker) {
					return nil
				}
				return fmt.Errorf("guest %s stopped before printing %q; console:\n%s", g.Name, marker, consoleTail(g.Console()))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("guest %s: waiting for %q: %w; console:\n%s", g.Name, marker, ctx.Err(), consoleTail(g.Console()))
		case <-tick.C:
		}
	}
}

// Taps returns the host-side tap of each interface, in NIC order, from the
// live domain XML: libvirt numbers taps vnetN across all starts, so the
// names are known only once the domain runs.
func (g *Guest) Taps() ([]string, error) {
	dom, err := g.LiveXML()
	if err != nil {
		return nil, err
	}
	var taps []string
	for _, iface := range dom.Devices.Interfaces {
		if iface.Target == nil || iface.Target.Dev == "" {
			return nil, fmt.Errorf("guest %s: interface without a tap (not running?)", g.Name)
		}
		taps = append(taps, iface.Target.Dev)
	}
	return taps, nil
}

// LiveXML returns the domain's current XML, parsed.
func (g *Guest) LiveXML() (*libvirtxml.Domain, error) {
	s, err := g.l.conn.DomainGetXMLDesc(g.dom, 0)
	if err != nil {
		return nil, fmt.Errorf("XML of guest %s: %w", g.Name, err)
	}
	var dom libvirtxml.Domain
	if err := dom.Unmarshal(s); err != nil {
		return nil, fmt.Errorf("parse XML of guest %s: %w", g.Name, err)
	}
	return &dom, nil
}

// PID returns the process id of the guest's QEMU, from the pid file
// libvirt keeps while the domain runs.
func (g *Guest) PID() (int, error) {
	pid, err := readPid(filepath.Join(g.l.dir, "run", "qemu", g.Name+".pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("guest %s is not running: %w", g.Name, err)
	}
	return pid, err
}

func consoleTail(s string) string {
	const max = 2000
	if len(s) > max {
		s = "…" + s[len(s)-max:]
	}
	return s
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// DestroyGuests destroys guests concurrently. QEMU exits within
// milliseconds of libvirt's SIGTERM, but virDomainDestroy returns only once
// the process is gone, reaped by PID 1 as QEMU is daemonized; on machines
// whose PID 1 reaps orphans about once a second (this one), each destroy
// costs 1–2 s, so a test with several guests should not destroy them in turn.
func DestroyGuests(guests ...*Guest) error {
	errs := make([]error, len(guests))
	var wg sync.WaitGroup
	for i, g := range guests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = g.Destroy()
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// DomainXML renders the domain DefineGuest would define for spec, with
// the serial console written to console, for defining it by other means
// (`virsh define`; the demo's helper libvirt/cmd/vfguest).
func (spec GuestSpec) DomainXML(img *GuestImage, console string) (string, error) {
	if spec.Name == "" {
		return "", fmt.Errorf("guest spec: a name is required")
	}
	dom, err := domainXML(img, spec, console)
	if err != nil {
		return "", err
	}
	return dom.Marshal()
}
