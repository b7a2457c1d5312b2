package dlb

import (
	"hash/fnv"
	"math/bits"
)

// Maglev builds the lookup table of Eisenbud et al., "Maglev: A Fast and
// Reliable Software Network Load Balancer" (NSDI 2016), section 3.4, with
// weights: every backend i has a permutation of the m slots given by
// offset(i) = h1(name) mod m and skip(i) = h2(name) mod (m-1) + 1; backends
// take turns claiming their next free preferred slot until the table is
// full. A weighted backend takes its turn in a round only while its credit
// (weight added per round, the largest weight spent per claim) allows, so
// it claims a share of slots proportional to its weight. Backends of
// weight 0 claim nothing. names identify backends (their permutation only
// depends on the name, so pool changes move few slots); m must be a prime
// larger than the number of backends. The result holds backend indexes.
func Maglev(names []string, weights []uint32, m int) []int32 {
	n := len(names)
	table := make([]int32, m)
	for i := range table {
		table[i] = -1
	}
	var maxW uint32
	for _, w := range weights {
		maxW = max(maxW, w)
	}
	if n == 0 || maxW == 0 {
		return table
	}
	offset := make([]uint64, n)
	skip := make([]uint64, n)
	next := make([]uint64, n)
	credit := make([]uint64, n)
	for i, name := range names {
		offset[i] = hashName(name, 0x9e37) % uint64(m)
		skip[i] = hashName(name, 0x7f4a)%uint64(m-1) + 1
	}
	filled := 0
	for filled < m {
		for i := range n {
			if weights[i] == 0 {
				continue
			}
			credit[i] += uint64(weights[i])
			if credit[i] < uint64(maxW) {
				continue
			}
			credit[i] -= uint64(maxW)
			c := (offset[i] + next[i]*skip[i]) % uint64(m)
			for table[c] >= 0 {
				next[i]++
				c = (offset[i] + next[i]*skip[i]) % uint64(m)
			}
			table[c] = int32(i)
			next[i]++
			filled++
			if filled == m {
				break
			}
		}
	}
	return table
}

func hashName(name string, seed uint16) uint64 {
	h := fnv.New64a()
	h.Write([]byte{byte(seed), byte(seed >> 8)})
	h.Write([]byte(name))
	v := h.Sum64()
	// fnv's low bits mix poorly for short, similar names: finish with a
	// 64-bit avalanche.
	v ^= v >> 33
	v *= 0xff51afd7ed558ccd
	v ^= v >> 33
	v *= 0xc4ceb9fe1a85ec53
	v ^= v >> 33
	return v
}

// IsPrime reports whether n is prime (trial division; n ≤ MaxTableSize).
func IsPrime(n int) bool {
	if n < 2 {
		return false
	}
	for d := 2; d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// FlowHash is the IPv4 5-tuple hash the fast path uses (dlb.c,
// flow_hash): murmur3's 32-bit mixing over the addresses and ports as the
// program loads them (network-order bytes read as little-endian words).
func FlowHash(saddr, daddr uint32, sport, dport uint16, proto uint8) uint32 {
	h := uint32(0x5bd1e995)
	h = murmurMix(h, saddr)
	h = murmurMix(h, daddr)
	return flowHashFinish(h, sport, dport, proto, 16)
}

// FlowHash6 is FlowHash for IPv6 (addresses as 4 words each).
func FlowHash6(saddr, daddr [4]uint32, sport, dport uint16, proto uint8) uint32 {
	h := uint32(0x5bd1e995)
	for _, w := range saddr {
		h = murmurMix(h, w)
	}
	for _, w := range daddr {
		h = murmurMix(h, w)
	}
	return flowHashFinish(h, sport, dport, proto, 40)
}

func flowHashFinish(h uint32, sport, dport uint16, proto uint8, n uint32) uint32 {
	h = murmurMix(h, uint32(sport)|uint32(dport)<<16)
	h = murmurMix(h, uint32(proto))
	h ^= n
	h ^= h >> 16
	h *= 0x85ebca6b
	h ^= h >> 13
	h *= 0xc2b2ae35
	h ^= h >> 16
	return h
}

func murmurMix(h, k uint32) uint32 {
	k *= 0xcc9e2d51
	k = bits.RotateLeft32(k, 15)
	k *= 0x1b873593
	h ^= k
	h = bits.RotateLeft32(h, 13)
	return h*5 + 0xe6546b64
}
