//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * vf_punt_all: the fast path filterd gives a filter that has only a slow
 * path. Every frame of the instance's directions is punted (VF_PUNT) to the
 * slot's punt device, or follows the slot's failure mode when the slow path
 * is not alive. Loaded once per instance; no maps of its own.
 */
#include "vnicfilter.h"

VF_FILTER(vf_punt_all)
{
	return VF_PUNT;
}

char __license[] SEC("license") = "Dual BSD/GPL";
