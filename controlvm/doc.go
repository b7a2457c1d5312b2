// Package controlvm builds and describes the control VM: the per-host
// libvirt domain that runs the agent (controlvm/agent, cmd/vfagent) with
// one NIC on filterd's hidden bridge and one on the management network.
// Its image is the test guest's (libvirt/guestimage: a distribution kernel and
// a busybox initramfs) plus the static vfagent binary and the agent's
// credentials; `vfctl controlvm install` drives it (docs/controlvm.md).
package controlvm
