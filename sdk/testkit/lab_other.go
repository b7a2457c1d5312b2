//go:build !linux

package testkit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
)

// errNoNetns is what every lab operation returns off Linux.
var errNoNetns = fmt.Errorf("testkit: network namespaces need Linux: %w", errors.ErrUnsupported)

// Host is a network namespace playing the hypervisor. Off Linux it cannot
// exist: NewHost skips the test.
type Host struct {
	// Name is the namespace's name.
	Name string
	// Path is where the namespace is bind-mounted.
	Path string
	// Bridge is the name of the bridge inside the namespace.
	Bridge string
}

// VM is a network namespace playing a guest. Off Linux it cannot exist.
type VM struct {
	// Name is the namespace's name.
	Name string
	// Label is the name the test gave AddVM.
	Label string
	// Path is where the namespace is bind-mounted.
	Path string
	// TapName is the host-side veth.
	TapName string
	// TapIndex is TapName's ifindex in the host namespace.
	TapIndex int
	// MAC is eth0's address.
	MAC net.HardwareAddr
	// IPv4 is eth0's IPv4 address.
	IPv4 net.IPNet
	// IPv6 is eth0's IPv6 address.
	IPv6 net.IPNet

	host *Host
}

// NewHost skips t: network namespaces need Linux.
func NewHost(t testing.TB) *Host {
	t.Helper()
	t.Skip(errNoNetns)
	return nil
}

// Do returns an error wrapping errors.ErrUnsupported.
func (h *Host) Do(fn func() error) error { return errNoNetns }

// Handle returns nil.
func (h *Host) Handle() *netlink.Handle { return nil }

// Command returns a command that fails to start.
func (h *Host) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return unsupportedCommand(ctx)
}

// Ifindex fails t.
func (h *Host) Ifindex(t testing.TB, dev string) int {
	t.Helper()
	t.Fatal(errNoNetns)
	return 0
}

// AddVM skips t.
func (h *Host) AddVM(t testing.TB, label string) *VM {
	t.Helper()
	t.Skip(errNoNetns)
	return nil
}

// Do returns an error wrapping errors.ErrUnsupported.
func (v *VM) Do(fn func() error) error { return errNoNetns }

// Handle returns nil.
func (v *VM) Handle() *netlink.Handle { return nil }

// Host returns the host the VM is plugged into.
func (v *VM) Host() *Host { return v.host }

// Command returns a command that fails to start.
func (v *VM) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return unsupportedCommand(ctx)
}

// Ping returns an error wrapping errors.ErrUnsupported.
func (v *VM) Ping(t testing.TB, dst net.IP, count int) error { return errNoNetns }

// DialTCP returns an error wrapping errors.ErrUnsupported.
func (v *VM) DialTCP(ctx context.Context, addr string) (net.Conn, error) { return nil, errNoNetns }

// ListenTCP returns an error wrapping errors.ErrUnsupported.
func (v *VM) ListenTCP(addr string) (net.Listener, error) { return nil, errNoNetns }

// ServeTCP fails t: there are no VMs here.
func (v *VM) ServeTCP(t testing.TB, port int, handle func(net.Conn)) { t.Fatal(errNoNetns) }

// ListenUDP returns an error wrapping errors.ErrUnsupported.
func (v *VM) ListenUDP(addr string) (*net.UDPConn, error) { return nil, errNoNetns }

// DialUDP returns an error wrapping errors.ErrUnsupported.
func (v *VM) DialUDP(ctx context.Context, addr string) (*net.UDPConn, error) {
	return nil, errNoNetns
}

// Iperf3Server skips t.
func (v *VM) Iperf3Server(t testing.TB, port int) {
	t.Helper()
	t.Skip(errNoNetns)
}

func unsupportedCommand(ctx context.Context) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter")
	cmd.Err = errNoNetns // Start and Run return it
	return cmd
}

// probe returns why r is unmet: off Linux, everything is.
func probe(r Requirement) string {
	return "needs Linux"
}
