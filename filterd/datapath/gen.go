package datapath

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type vf_slot -type vf_counter dispatcher dispatcher.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" punt punt.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
