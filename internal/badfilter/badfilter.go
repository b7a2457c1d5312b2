// Package badfilter holds an eBPF object the verifier rejects (bad.c: a
// packet read without a bounds check), for tests that load external
// filters and must see the verifier's refusal named.
package badfilter

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" bad bad.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
