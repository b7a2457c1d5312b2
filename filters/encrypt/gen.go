package encrypt

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type enc_key -type enc_route -type enc_peer -type enc_cfg -type enc_sides encrypt encrypt.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
