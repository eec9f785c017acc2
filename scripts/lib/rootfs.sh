# Sourced by scripts/deb-install-test.sh and scripts/systemd-boot-test.sh: a clean Debian
# bookworm root file system (minbase + systemd), made by debootstrap once and cached as a
# tarball ($ROOTFS_CACHE); each test extracts a fresh copy.
ROOTFS_CACHE=${ROOTFS_CACHE:-/var/cache/wixprint/rootfs-bookworm.tar}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

ensure_rootfs() {
  [ -s "$ROOTFS_CACHE" ] && return 0
  command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }
  local tmp
  tmp=$(mktemp -d)
  echo "debootstrap bookworm (minbase + systemd) into $tmp"
  debootstrap --variant=minbase --include=systemd,dbus bookworm "$tmp/root" "$DEBIAN_MIRROR" >/dev/null
  mkdir -p "$(dirname "$ROOTFS_CACHE")"
  tar -C "$tmp/root" -cf "$ROOTFS_CACHE.part" . && mv "$ROOTFS_CACHE.part" "$ROOTFS_CACHE"
  rm -rf "$tmp"
}
