package slowpath

import (
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Offload flags of TUNSETOFFLOAD (linux/if_tun.h); x/sys/unix lacks them.
const (
	tunFCsum   = 0x01
	tunFTSO4   = 0x02
	tunFTSO6   = 0x04
	tunFTSOECN = 0x08
	tunFUSO4   = 0x20
	tunFUSO6   = 0x40
)

// ethHdrLen is the smallest frame the runner hands to a slow path.
const ethHdrLen = 14

// openTap creates the non-persistent punt tap name in the calling thread's
// network namespace, with offloads so GSO frames arrive whole, IPv6 off so
// the host never sends its own frames into it, the given MTU, and up. The
// device lives as long as the returned file.
func openTap(name string, mtu int) (_ *os.File, ifindex int, err error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	var file *os.File
	defer func() {
		if err != nil {
			if file != nil {
				file.Close()
			} else {
				unix.Close(fd)
			}
		}
	}()
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, 0, fmt.Errorf("tap name %q: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, 0, fmt.Errorf("create tap %s: %w", name, err)
	}
	// Only a descriptor attached to a tap can join Go's poller, which then
	// lets Close interrupt a blocked Read.
	file = os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
	// USO (Linux 6.2+) lets UDP GSO frames through whole too; older
	// kernels refuse the flag, then UDP GSO is segmented before the tap.
	offloads := tunFCsum | tunFTSO4 | tunFTSO6 | tunFTSOECN
	rc, err := file.SyscallConn()
	if err != nil {
		return nil, 0, fmt.Errorf("tap %s: %w", name, err)
	}
	var ioctlErr error
	err = rc.Control(func(fd uintptr) {
		ioctlErr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, offloads|tunFUSO4|tunFUSO6)
		if ioctlErr != nil {
			ioctlErr = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD, offloads)
		}
	})
	if err = errors.Join(err, ioctlErr); err != nil {
		return nil, 0, fmt.Errorf("set offloads of tap %s: %w", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil, 0, fmt.Errorf("find tap %s: %w", name, err)
	}
	err = os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/disable_ipv6", []byte("1"), 0)
	if err != nil && !errors.Is(err, os.ErrNotExist) { // no IPv6 in the kernel: nothing to disable
		return nil, 0, fmt.Errorf("disable IPv6 on tap %s: %w", name, err)
	}
	if mtu > 0 {
		if err := netlink.LinkSetMTU(l, mtu); err != nil {
			return nil, 0, fmt.Errorf("set MTU %d of tap %s: %w", mtu, name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, 0, fmt.Errorf("bring tap %s up: %w", name, err)
	}
	return file, l.Attrs().Index, nil
}
