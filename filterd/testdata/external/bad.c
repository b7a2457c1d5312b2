// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * bad: a filter the verifier rejects (it reads the packet without a bounds
 * check). Build: clang -O2 -g -target bpf -I../../../sdk/bpf
 * -I/usr/include/x86_64-linux-gnu -c bad.c -o bad.o
 */
#include "vnicfilter.h"

VF_FILTER(vf_bad)
{
	__u8 *data = (void *)(long)skb->data;

	return data[20] == 1 ? VF_DROP : VF_CONTINUE;
}

char __license[] SEC("license") = "Dual BSD/GPL";
