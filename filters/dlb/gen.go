package dlb

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type dlb_svc_key -type dlb_svc -type dlb_target -type dlb_ct_key -type dlb_ct_val -type dlb_traffic dlb dlb.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
