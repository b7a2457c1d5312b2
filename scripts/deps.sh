#!/usr/bin/env bash
# Installs the Debian packages listed in deps/apt-packages.txt and mounts
# bpffs on /sys/fs/bpf. Idempotent: when everything is present it changes
# nothing and touches no network.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
list="${DEPS_APT_LIST:-$(cd "$here/.." && pwd)/deps/apt-packages.txt}"

log() { printf 'deps: %s\n' "$*"; }
die() { printf 'deps: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"
[[ -r $list ]] || die "cannot read package list $list"

# Strip comments and blank lines.
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$list")
[[ ${#packages[@]} -gt 0 ]] || die "no packages listed in $list"

missing=()
for pkg in "${packages[@]}"; do
	status="$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)"
	[[ $status == installed ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
	log "all ${#packages[@]} packages from $list are installed"
else
	log "installing ${#missing[@]} missing package(s): ${missing[*]}"
	# tshark asks whether non-root users may capture; answer no, unattended.
	log "preseeding wireshark-common/install-setuid=false"
	echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
	log "apt-get update"
	apt-get update
	log "apt-get install ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

bpffs=/sys/fs/bpf
if [[ $(stat -f -c %T "$bpffs" 2>/dev/null || true) == bpf_fs ]]; then
	log "bpffs already mounted on $bpffs"
else
	log "mounting bpffs on $bpffs"
	mkdir -p "$bpffs"
	mount -t bpf -o mode=0700 bpf "$bpffs"
fi
log "done"
