//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bad: a filter the verifier rejects (it reads the packet without a bounds
 * check), for the tests of external filter loading. Built by bpf2go
 * (make generate) like every other object in the tree.
 */
#include "vnicfilter.h"

VF_FILTER(vf_bad)
{
	__u8 *data = (void *)(long)skb->data;

	return data[20] == 1 ? VF_DROP : VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
