package mirror

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" mirror mirror.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
