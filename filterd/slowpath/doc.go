// Package slowpath runs filters' Go slow paths: the frames a slot's fast
// path punts (VF_PUNT) reach a [sdk.SlowPath] through a punt tap, and the
// frames it passes go back into the vNIC's chain after the punting slot.
//
// Per handled direction of an instance, [Start] creates one tap
// (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, offloads on, so the kernel hands large
// GSO frames to Go unsegmented) named vfp<ifindex>s<slot><f|t>. The slot's
// fast path redirects punted frames to it (vf_slots[].punt_ifindex); one
// goroutine reads them, calls Process and writes passed frames back to the
// same tap. There the re-injection program (reinject.c, on the tap's tc
// ingress) marks them VF_MARK_RESUME|dir<<8|slot+1 and redirects them to the
// vNIC: to its ingress for from-vm frames, to its egress for to-vm frames.
// The vNIC's dispatcher sees the mark and resumes the chain at slot+1.
//
// Liveness is a lease: a heartbeat goroutine keeps vf_slots[].alive_until
// in the future while the handler is healthy. When the handler panics or
// stalls beyond the watchdog, the runner clears the lease at once and the
// fast path applies the slot's failure mode (fail-closed drops, fail-open
// continues) instead of punting. The taps are not persistent: if filterd
// dies they vanish with its file descriptors, the lease expires, and the
// failure mode applies without anyone cleaning up.
package slowpath
