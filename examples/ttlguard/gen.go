package ttlguard

// bpf2go runs from the main module (its tool), writing here.
//go:generate sh -c "cd ../.. && go tool bpf2go -tags linux -target bpfel -cc clang -cflags '-O2 -g -Wall -Werror' -go-package ttlguard -output-dir examples/ttlguard ttlguard examples/ttlguard/ttlguard.c -- -Isdk/bpf -I/usr/include/x86_64-linux-gnu"
