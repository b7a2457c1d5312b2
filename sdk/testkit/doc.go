// Package testkit builds throwaway hypervisors and guests out of network
// namespaces, so filters are tested against the real kernel datapath without
// QEMU or libvirt.
//
// The model mirrors a KVM host:
//
//   - a [Host] namespace plays the hypervisor: it holds the bridge "br0";
//   - each [VM] namespace plays a guest with one interface, "eth0";
//   - eth0's veth peer lives in the host namespace as "vnet<k>", a port of
//     br0: it plays the guest's tap device, the vNIC filterd protects. A
//     filter attaches to VM.TapName (index VM.TapIndex) inside the host
//     namespace, through Host.Handle or Host.Do.
//
// The k-th VM of a host has MAC 02:76:66:00:00:<k>, 10.99.0.<k>/24 and
// fd99::<k>/64. Namespaces are bind-mounted under /run/netns with random
// names ("vfh-…", "vfv-…"), so parallel tests in different packages never
// collide and `ip netns exec` works on them while debugging. Every object is
// removed by t.Cleanup, also when the test fails halfway.
//
// Privileged tests open with [Need], which skips with the reason when the
// machine lacks something and fails instead when CI=true:
//
//	func TestFirewallDropsPing(t *testing.T) {
//		testkit.Need(t, testkit.Root, testkit.BPF, testkit.TCX)
//		host := testkit.NewHost(t)
//		a, b := host.AddVM(t, "a"), host.AddVM(t, "b")
//		if err := a.Ping(t, b.IPv4.IP, 1); err != nil {
//			t.Fatalf("before attach: %v", err)
//		}
//		// attach the filter to b.TapName in host, then expect a.Ping to fail.
//	}
//
// Sockets made by VM.DialTCP, VM.ListenTCP and friends are created inside
// the VM namespace and may be used from any goroutine. Code passed to Do
// runs on a locked OS thread inside the namespace; goroutines it starts do
// not. Programs run inside a namespace through Command (nsenter --net), which
// keeps the caller's mount namespace, so /sys/fs/bpf stays visible.
package testkit
