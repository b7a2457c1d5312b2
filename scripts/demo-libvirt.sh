#!/usr/bin/env bash
# make demo-libvirt: vnicfilter on a libvirt host. A private libvirtd (its
# own mount namespace, so the host's /etc/libvirt and any system libvirtd
# are untouched) runs the hook installed by `make install`; filterd watches
# it. Two QEMU guests (TCG) boot with their filter chains in the domain
# XML: "web" (count) and "quarantine" (count + punt:verdict=drop). Both
# ping the host; only web gets answers. Then quarantine's chain is changed
# live with `virsh metadata` and its pings go through. Everything is
# removed at the end: domains, QEMU, libvirtd and filterd (by pid), the
# bridge, bpffs pins, files. Needs root, libvirt and QEMU (make deps).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make demo-libvirt needs root (libvirtd, QEMU, eBPF)"; exit 1; }
command -v libvirtd >/dev/null && command -v qemu-system-x86_64 >/dev/null || bash scripts/deps.sh

id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
WORK=$(mktemp -d /tmp/vfdemo-libvirt.XXXXXX)
LAB=$WORK/lab            # libvirtd's private /etc/libvirt, /run/libvirt, …
STAGE=$WORK/stage        # make install DESTDIR
HOOKS=$STAGE/etc/libvirt/hooks
ROOT=/sys/fs/bpf/vfdemo-$id
SOCK=$WORK/filterd.sock
BR=vfdemo$id
NS=https://vnicfilter.dev/xmlns/domain/1
LIBVIRTD_PID= FILTERD_PID=
DOMS=(vfdemo-web-$id vfdemo-quarantine-$id)
NET=10.79.$((16#${id:0:2} % 200 + 1))

step() { printf '\n== %s\n' "$*"; }
virsh() { command virsh -q -c "qemu:///system?socket=$LAB/run/libvirt-sock" "$@"; }
vfctl() { "$STAGE/usr/local/bin/vfctl" --socket "$SOCK" "$@"; }

cleanup() {
	set +e
	if [ -n "$LIBVIRTD_PID" ]; then
		for d in "${DOMS[@]}"; do virsh destroy "$d" >/dev/null 2>&1; virsh undefine "$d" >/dev/null 2>&1; done
		kill "$LIBVIRTD_PID" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$LIBVIRTD_PID" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$LIBVIRTD_PID" 2>/dev/null
		for f in "$LAB"/run/qemu/*.pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null; done
	fi
	if [ -n "$FILTERD_PID" ]; then kill "$FILTERD_PID" 2>/dev/null; wait "$FILTERD_PID" 2>/dev/null; fi
	ip link del "$BR" 2>/dev/null
	rm -rf "$ROOT" "$WORK"
	echo "== cleaned up: domains, libvirtd (pid ${LIBVIRTD_PID:-none}), filterd (pid ${FILTERD_PID:-none}), bridge $BR, pins under $ROOT, $WORK"
}
trap cleanup EXIT

step "make install into a staging root: binaries, qemu.d/vnicfilter, vnicfilter.conf, qemu dispatcher"
make -s install DESTDIR="$STAGE" BIN="$WORK/build"
printf 'socket=%s\n' "$SOCK" >"$HOOKS/vnicfilter.conf"
find "$HOOKS" | sed "s|$STAGE||"

step "guest image: the apt cloud kernel and a busybox initramfs (libvirt/cmd/vfguest)"
eval "$(go run ./libvirt/cmd/vfguest image "$WORK/img")"
echo "kernel=$kernel initrd=$initrd"

step "private libvirtd with the staged hooks (its own mount namespace)"
mkdir -p "$LAB"/{etc,run,lib,log}
for m in /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt; do mkdir -p "$m"; done
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vnicfilter/testlab-libvirt-cache # QEMU capability cache, shared with the tests
mkdir -p "$cache"
cat >"$LAB/etc/qemu.conf" <<EOF
stdio_handler = "file"
security_driver = "none"
user = "root"
group = "root"
dynamic_ownership = 0
EOF
cat >"$LAB/libvirtd.conf" <<EOF
unix_sock_group = "root"
unix_sock_rw_perms = "0700"
unix_sock_ro_perms = "0700"
auth_unix_rw = "none"
auth_unix_ro = "none"
EOF
ln -s "$HOOKS" "$LAB/etc/hooks"
setsid unshare -m --propagation private sh -c '
	mount --bind "$1/etc" /etc/libvirt; mount --bind "$1/run" /run/libvirt
	mount --bind "$1/lib" /var/lib/libvirt; mount --bind "$1/log" /var/log/libvirt
	mount --bind "$2" /var/cache/libvirt
	exec libvirtd --pid-file "$1/libvirtd.pid" --config "$1/libvirtd.conf"' sh "$LAB" "$cache" \
	>"$LAB/libvirtd.log" 2>&1 &
LIBVIRTD_PID=$!
for _ in $(seq 300); do [ -S "$LAB/run/libvirt-sock" ] && virsh uri >/dev/null 2>&1 && break; sleep 0.1; done
echo "libvirtd pid $LIBVIRTD_PID: $(virsh version --daemon | grep -i daemon)"

step "bridge $BR, the host is $NET.1 on it"
ip link add "$BR" type bridge
echo 1 >/proc/sys/net/ipv6/conf/"$BR"/disable_ipv6
ip addr add "$NET.1/24" dev "$BR"
ip link set "$BR" up

step "filterd with --libvirt-uri (the watcher: events and reconcile)"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
"$STAGE/usr/local/bin/filterd" --socket "$SOCK" --bpffs-root "$ROOT" --state-dir "$WORK/state" \
	--libvirt-uri "qemu:///system?socket=$LAB/run/libvirt-sock" --log-level info 2>"$WORK/filterd.log" &
FILTERD_PID=$!
for _ in $(seq 100); do vfctl list >/dev/null 2>&1 && break; sleep 0.1; done
echo "filterd pid $FILTERD_PID"

step "define the guests; their chains are in <metadata>"
i=0
for d in "${DOMS[@]}"; do
	i=$((i + 1))
	mac=52:54:00:79:00:0$i
	case $d in
	*web*) chain='<vnicfilter:filter name="count"/>' ;;
	*) chain='<vnicfilter:filter name="count"/><vnicfilter:filter name="punt"><vnicfilter:param name="verdict" value="drop"/></vnicfilter:filter>' ;;
	esac
	printf '<vnicfilter:filters xmlns:vnicfilter="%s"><vnicfilter:interface mac="%s">%s</vnicfilter:interface></vnicfilter:filters>' \
		"$NS" "$mac" "$chain" >"$WORK/$d.meta"
	go run ./libvirt/cmd/vfguest xml --kernel "$kernel" --initrd "$initrd" --name "$d" --bridge "$BR" --mac "$mac" \
		--ip "$NET.1$i/24" --cmd "ping -c 300 $NET.1" --metadata "$WORK/$d.meta" --console "$WORK/$d.console" >"$WORK/$d.xml"
	virsh define "$WORK/$d.xml" >/dev/null
	echo "$d ($NET.1$i):"
	virsh metadata "$d" "$NS" | sed 's/^/    /'
done

step "virsh start: the hook validates at prepare and attaches at start, before QEMU runs"
for d in "${DOMS[@]}"; do
	t0=$(date +%s%N)
	virsh start "$d"
	echo "   took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
done
vfctl list

step "an invalid chain is refused by virsh start, with the hook's message"
sed 's/name="count"/name="nosuch"/' "$WORK/${DOMS[0]}.xml" | sed "s/<name>${DOMS[0]}/<name>vfdemo-bad-$id/; s/52:54:00:79:00:01/52:54:00:79:00:09/g" >"$WORK/bad.xml"
DOMS+=(vfdemo-bad-$id)
virsh define "$WORK/bad.xml" >/dev/null
virsh start "vfdemo-bad-$id" 2>&1 | grep -o 'vnicfilter: domain.*' || true

step "both guests boot (~5 s under TCG) and ping the host"
for _ in $(seq 200); do
	grep -q "bytes from" "$WORK/${DOMS[0]}.console" 2>/dev/null && grep -q "VFGUEST READY" "$WORK/${DOMS[1]}.console" 2>/dev/null && break
	sleep 0.1
done
sleep 3
for d in "${DOMS[0]}" "${DOMS[1]}"; do
	echo "$d: $(grep -c 'bytes from' "$WORK/$d.console" || true) replies so far"
done
for d in "${DOMS[0]}" "${DOMS[1]}"; do
	tap=$(virsh domiflist "$d" | awk 'NR>0 {print $1; exit}')
	echo "-- $d on $tap"
	vfctl show "$tap" | sed 's/^/    /'
done

step "lift the quarantine live: virsh metadata --live (the watcher swaps the chain atomically)"
q=${DOMS[1]}
virsh metadata "$q" "$NS" --key vnicfilter --live \
	--set '<filters><interface mac="52:54:00:79:00:02"><filter name="count"/></interface></filters>'
sleep 3
echo "$q: $(grep -c 'bytes from' "$WORK/$q.console" || true) replies now"
vfctl list

step "virsh destroy: the hook detaches the chains at stopped/release"
for d in "${DOMS[0]}" "${DOMS[1]}"; do virsh destroy "$d" >/dev/null; done
vfctl list
echo
echo "filterd log (watcher):"
grep -i "libvirt\|chain" "$WORK/filterd.log" | sed 's/^/    /' | tail -8
