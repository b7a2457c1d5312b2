package firewall

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type fw_lpm_key -type fw_cross_key -type fw_ct_key -type fw_ct_val firewall firewall.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
