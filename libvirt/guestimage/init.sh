#!/bin/sh
# /init of the vnicfilter test guest, built by libvirt/testlab (image.go).
# Runs as PID 1 from the initramfs; every line it prints goes to ttyS0,
# which libvirt writes to the guest's console log. Markers start with
# "VFGUEST " so tests can wait for them. See docs/guest-image.md.
export PATH=/bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run/vf /tmp /www
up() { cut -d' ' -f1 /proc/uptime; }
echo "VFGUEST BOOT uptime=$(up)"

# Modules in dependency order; the harness wrote the order file.
while read -r m; do
	insmod "/lib/modules/$m.ko" || echo "VFGUEST ERROR insmod $m"
done </lib/modules/load-order

# Every vf.KEY=VALUE of the kernel command line lands in /run/vf/KEY.
# Words split on blanks outside double quotes and the quotes are dropped,
# as the kernel does; nothing is evaluated by the shell.
awk '{
	n = length($0); w = ""; q = 0
	for (i = 1; i <= n + 1; i++) {
		c = (i <= n) ? substr($0, i, 1) : " "
		if (c == "\"") { q = !q; continue }
		if ((c == " " || c == "\t") && !q) { if (w != "") print w; w = ""; continue }
		w = w c
	}
}' /proc/cmdline | while IFS= read -r w; do
	case "$w" in
	vf.*=*) k=${w%%=*}; printf '%s' "${w#*=}" >"/run/vf/${k#vf.}" ;;
	esac
done
vf() { cat "/run/vf/$1" 2>/dev/null; }

name=$(vf name)
[ -n "$name" ] && hostname "$name"
ip link set lo up

# virtio_net registers eth0 during insmod; wait a little all the same.
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done
for d in /sys/class/net/eth*; do
	[ -e "$d" ] || { echo "VFGUEST ERROR no ethernet interface"; break; }
	dev=${d##*/}; n=${dev#eth}; key=ip; [ "$n" = 0 ] || key=ip$n
	ip link set "$dev" up
	addr=$(vf $key)
	[ -z "$addr" ] || ip addr add "$addr" dev "$dev" || echo "VFGUEST ERROR address $addr on $dev"
done
gw=$(vf gw)
[ -z "$gw" ] || ip route add default via "$gw" || echo "VFGUEST ERROR gateway $gw"

# Listeners for tests: HTTP serving the hostname, and a TCP echo.
port=$(vf http); port=${port:-80}
if [ "$port" != off ]; then
	hostname >/www/index.html
	httpd -p "$port" -h /www || echo "VFGUEST ERROR httpd on $port"
fi
port=$(vf echo); port=${port:-7}
[ "$port" = off ] || nc -ll -p "$port" -e cat &

echo "VFGUEST READY name=$(hostname) ip=$(vf ip) uptime=$(up)"

cmd=$(vf cmd)
if [ -n "$cmd" ]; then
	(sh -c "$cmd"; echo "VFGUEST CMD EXIT $?") &
fi

# An operator's shell on the second serial port when vf.shell=on (the
# control VM: virsh console DOMAIN serial1). A login shell, so /etc/profile
# applies; opened after setsid, the port becomes its controlling terminal.
if [ "$(vf shell)" = on ]; then
	(while :; do setsid sh -c 'exec sh -l <>/dev/ttyS1 >&0 2>&1'; sleep 1; done) &
fi

# PID 1 must never exit (the kernel panics); reap what it can.
while :; do wait; sleep 1; done
