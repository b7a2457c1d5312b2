//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * vf_reinject: runs on tc ingress of a slow path's punt tap. Every frame
 * the Go slow path writes back to the tap (a frame it passed) is sent back
 * to the vNIC it came from, marked so that the vNIC's dispatcher resumes
 * the chain after the slot that punted it:
 *
 *   from-vm: redirect to the vNIC's ingress, as if the VM had sent it again;
 *   to-vm:   redirect to the vNIC's egress, towards the VM.
 *
 * No maps. The constants are set by the loader, one program per punt tap.
 */
#include "vnicfilter.h"

volatile const __u32 target_ifindex = 0; /* the vNIC */
volatile const __u32 target_dir = 0;     /* VF_DIR_* of the punt tap */
volatile const __u32 resume_slot = 0;    /* punting slot + 1 */

SEC("tc")
int vf_reinject(struct __sk_buff *skb)
{
	skb->mark = VF_MARK_RESUME | (target_dir << 8) | resume_slot;
	return bpf_redirect(target_ifindex,
			    target_dir == VF_DIR_FROM_VM ? BPF_F_INGRESS : 0);
}

char __license[] SEC("license") = "Dual BSD/GPL";
