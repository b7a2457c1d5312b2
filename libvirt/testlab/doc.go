// Package testlab is the harness of the libvirt integration tests: a
// private libvirtd, a tiny bootable guest, and bridges to plug guests into.
// It is Linux-only; elsewhere the package is empty.
//
// A test binary normally shares one libvirtd and one guest image:
//
//	func TestMain(m *testing.M) {
//		code := m.Run()
//		testlab.StopShared()
//		os.Exit(code)
//	}
//
//	func TestPing(t *testing.T) {
//		l := testlab.Shared(t) // skips without root/libvirt/QEMU (fails if CI=true)
//		img, err := testlab.BuildGuestImage(t, "")
//		if err != nil {
//			t.Fatal(err)
//		}
//		br := testlab.NewBridge(t)
//		g := l.DefineGuest(t, img, testlab.GuestSpec{
//			NICs:    []testlab.NIC{{Bridge: br}},
//			Cmdline: map[string]string{"vf.ip": "10.88.0.5/24", "vf.cmd": "ping -c 3 10.88.0.6"},
//		})
//		if err := g.Start(); err != nil {
//			t.Fatal(err)
//		}
//		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//		defer cancel()
//		if err := g.WaitConsole(ctx, "VFGUEST READY"); err != nil {
//			t.Fatal(err)
//		}
//	}
//
// A test that needs hooks starts its own with StartLibvirtd(t,
// LibvirtdOptions{HooksDir: dir}): libvirtd reads the hooks directory only
// at start-up.
//
// # libvirtd
//
// Each libvirtd runs in the foreground in its own session (setsid) and its
// own mount namespace, in which /etc/libvirt, /run/libvirt,
// /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are bind mounts
// of directories under a fresh /tmp/vftestlab-lab-*: a private qemu.conf
// (stdio_handler "file", so no virtlogd; security_driver "none"; QEMU as
// root), a private libvirtd.conf (--config), a private socket, private
// domain definitions, and the hooks of LibvirtdOptions.HooksDir. The host's
// /etc/libvirt is never written and a system libvirtd is not disturbed; test
// binaries of different packages run their own libvirtds side by side. The
// network namespace is the host's, where the taps and the test's bridges
// are. The QEMU capability cache is kept across runs in the user cache
// directory (~/.cache/vnicfilter/testlab-libvirt-cache): probing costs
// seconds under TCG, and libvirt revalidates it against the binaries.
//
// libvirtd is stopped by the pid it was started with, which its pid file
// must name — never by name, as other test binaries' libvirtds look the
// same: Stop destroys leftover domains, sends SIGTERM, SIGKILL after 10 s,
// and kills by pid file any QEMU left behind. A test binary that dies takes
// its libvirtd along (PR_SET_PDEATHSIG); the next lab started on the
// machine reaps what it left (QEMUs, directories, bridges), recognising
// them by an owner tag (pid and start time) whose process is gone.
//
// # Guests
//
// See docs/guest-image.md for the image, the vf.* kernel command line keys
// its /init understands, and the console markers tests wait for.
package testlab
