package encap

//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type encap_cfg -type encap_fib_key -type encap_host -type encap_member_list -type encap_neigh_key -type encap_neigh_entry encap encap.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
//go:generate go tool bpf2go -tags linux -target bpfel -cc clang -cflags "-O2 -g -Wall -Werror" -type encap_port_key -type encap_port -type encap_flood_list -type encap_rx_member_key -type encap_member_set_key -type encap_member_set -type encap_host rx encap_rx.c -- -I../../sdk/bpf -I/usr/include/x86_64-linux-gnu
