// Package e2e holds vnicfilter's libvirt acceptance tests: a private
// libvirtd (libvirt/testlab) with the hook installed by `make install`
// into its hooks directory, real QEMU guests under TCG on test bridges,
// and filterd started by the tests as a process in the host's network
// namespace (where libvirt's taps are), with a private bpffs root, state
// directory and socket. There is no library code here: see the tests.
//
// The tests need root, libvirtd, QEMU and the guest kernel (make deps);
// without them they skip, and fail under CI=true. All tests of the
// package share one libvirtd, whose hooks directory TestMain prepares:
//
//	HOOKS/qemu                 empty dispatcher (make install)
//	HOOKS/qemu.d/00-trace      records "time hook domain op sub-op"
//	HOOKS/qemu.d/vnicfilter    the hook (make install)
//	HOOKS/qemu.d/zz-trace      records again, once the hook returned
//	HOOKS/vnicfilter.conf      socket=… of the tests' filterd
//
// The two trace hooks bracket ours, so the test reads the phase order and
// when the chain was attached (zz-trace at start) without a probe of its
// own.
package e2e
