#!/usr/bin/env bash
# make demo: two namespace "VMs" on a bridge in a "hypervisor" namespace,
# filterd protecting one of them with a chain, traffic, counters, then a
# full cleanup (namespaces, bpffs pins, the daemon by pid). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
[ "$(id -u)" = 0 ] || { echo "make demo needs root (it creates network namespaces and loads eBPF)"; exit 1; }
command -v busybox >/dev/null || bash scripts/deps.sh

id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
HOST=vfdemo-h-$id VM1=vfdemo-a-$id VM2=vfdemo-b-$id
WORK=$(mktemp -d /tmp/vfdemo.XXXXXX)
ROOT=/sys/fs/bpf/vfdemo-$id
SOCK=$WORK/filterd.sock
FILTERD_PID=

cleanup() {
	set +e
	if [ -n "$FILTERD_PID" ]; then
		kill "$FILTERD_PID" 2>/dev/null; wait "$FILTERD_PID" 2>/dev/null
	fi
	for ns in "$VM1" "$VM2" "$HOST"; do ip netns del "$ns" 2>/dev/null; done
	rm -rf "$ROOT" "$WORK"
	echo "== cleaned up: namespaces, pins under $ROOT, filterd (pid ${FILTERD_PID:-none})"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
vfctl() { "$BIN/vfctl" --socket "$SOCK" "$@"; }

mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf

step "hypervisor namespace $HOST with bridge br0; VMs $VM1 (10.42.0.1) and $VM2 (10.42.0.2)"
ip netns add "$HOST"; ip netns add "$VM1"; ip netns add "$VM2"
ip -n "$HOST" link add br0 type bridge
ip -n "$HOST" link set br0 up
i=1
for vm in "$VM1" "$VM2"; do
	ip -n "$HOST" link add "vnet$i" type veth peer name eth0 netns "$vm"
	ip -n "$HOST" link set "vnet$i" master br0 up
	ip -n "$vm" addr add "10.42.0.$i/24" dev eth0
	ip -n "$vm" link set eth0 up
	ip -n "$vm" link set lo up
	i=$((i + 1))
done

step "filterd starts (embedded defaults; private socket, state and bpffs root for the demo)"
nsenter --net=/run/netns/"$HOST" "$BIN/filterd" --socket "$SOCK" --bpffs-root "$ROOT" \
	--state-dir "$WORK/state" --log-level warn &
FILTERD_PID=$!
for _ in $(seq 100); do vfctl list >/dev/null 2>&1 && break; sleep 0.1; done
vfctl version

step "vfctl check: what this kernel offers"
vfctl check || true

step "attach a chain to vnet1 (VM $VM1's tap): slot 0 count (eBPF fast path), slot 1 dnslog (fast path punts DNS to a Go slow path)"
vfctl chain set vnet1 count dnslog --owner demo
vfctl list

step "traffic: ping $VM1 -> $VM2, and a DNS query (nobody answers; dnslog logs it)"
ip netns exec "$VM1" busybox ping -c 5 -i 0.2 10.42.0.2
timeout 2 ip netns exec "$VM1" busybox nslookup demo.example 10.42.0.2 >/dev/null 2>&1 || true

step "vfctl show vnet1: per-slot verdicts, filter counters, chain totals"
vfctl show vnet1

step "kill -9 filterd: the pinned chain keeps counting while the daemon is down"
kill -9 "$FILTERD_PID"; wait "$FILTERD_PID" 2>/dev/null || true
ip netns exec "$VM1" busybox ping -c 3 -i 0.2 10.42.0.2 | tail -2
nsenter --net=/run/netns/"$HOST" "$BIN/filterd" --socket "$SOCK" --bpffs-root "$ROOT" \
	--state-dir "$WORK/state" --log-level warn &
FILTERD_PID=$!
for _ in $(seq 100); do vfctl list >/dev/null 2>&1 && break; sleep 0.1; done
step "restarted filterd adopted the chain (same state, counters kept)"
vfctl stats

step "metrics (excerpt)"
vfctl metrics | grep -E '^vnicfilter_(chain|filter)_' | head -8

step "detach"
vfctl detach vnet1
vfctl list
