#!/usr/bin/env bash
# Installs dist/wix-printer_<v>_<arch>.deb into a clean Debian bookworm root file system
# (debootstrap, cached as a tarball in $ROOTFS_CACHE) with dpkg in a chroot, and checks what an
# operator gets: the binaries run, /etc/wix-printer with generated tokens (0600) and secret
# placeholders, conffiles, units that pass `systemd-analyze verify` inside the target system,
# a config error named at --check-config, tokens kept on reinstall, everything but the state
# gone on purge.
#   scripts/deb-install-test.sh dist/wix-printer_0.1.0_amd64.deb
# Needs root (chroot), debootstrap (installed if missing) and network access to Debian's
# mirror the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
DEB=${1:?usage: deb-install-test.sh PACKAGE.deb}
[ "$(id -u)" -eq 0 ] || { echo "deb-install-test.sh needs root (chroot)" >&2; exit 1; }

. scripts/lib/rootfs.sh
ensure_rootfs

root=$(mktemp -d)
cleanup() {
  for m in proc dev; do umount -l "$root/$m" 2>/dev/null || true; done
  rm -rf "$root"
}
trap cleanup EXIT
tar -C "$root" -xf "$ROOTFS_CACHE"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

cp "$DEB" "$root/tmp/wix-printer.deb"
note=$(in_root dpkg -i /tmp/wix-printer.deb 2>&1) || { echo "$note" >&2; fail "dpkg -i"; }
echo "$note" | grep -q "systemctl enable --now wix-ingest wix-print" || fail "no post-install note:\n$note"
ok "dpkg -i into a clean bookworm root; the post-install note says what to do"

for b in wix-ingest wix-print; do
  v=$(in_root /usr/bin/$b --version) || fail "$b --version"
  [ "$v" = "$b $(dpkg-deb -f "$DEB" Version)" ] || fail "$b --version said $v"
done
ok "both binaries run in the target system (--version)"

[ "$(stat -c %a "$root/etc/wix-printer")" = 755 ] || fail "/etc/wix-printer is not 0755"
for t in ingest-admin print-admin print-submit; do
  f="$root/etc/wix-printer/$t.token"
  [ "$(stat -c %a:%U "$f")" = 600:root ] || fail "$t.token is $(stat -c %a:%U "$f"), want 600:root"
  grep -Eqx '[0-9a-f]{64}' "$f" || fail "$t.token is not 32 random bytes in hex"
done
for f in wix-public.pem wix-api.key smtp-password; do
  [ -e "$root/etc/wix-printer/$f" ] && [ "$(stat -c %a "$root/etc/wix-printer/$f")" = 600 ] || fail "$f placeholder missing or not 0600"
done
for f in ingest.toml print.toml; do
  [ "$(stat -c %a "$root/etc/wix-printer/$f")" = 644 ] || fail "$f is not 0644 (the dynamic users read it)"
done
in_root dpkg-query -W -f='${Conffiles}\n' wix-printer | grep -q /etc/wix-printer/print.toml || fail "print.toml is not a conffile"
ok "/etc/wix-printer: tokens generated 0600, secret placeholders 0600, configs 0644 conffiles"

out=$(in_root systemd-analyze verify --man=no /lib/systemd/system/wix-ingest.service /lib/systemd/system/wix-print.service 2>&1) || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify: $out"
ok "systemd-analyze verify of both installed units, inside the target system: clean"

in_root /usr/bin/wix-print --check-config --config /etc/wix-printer/print.toml >/dev/null 2>&1 || fail "the shipped print.toml does not pass --check-config"
set +e
msg=$(in_root /usr/bin/env WIX_WEBHOOK_PUBLIC_KEY_FILE=/etc/wix-printer/wix-public.pem /usr/bin/wix-ingest --check-config --config /etc/wix-printer/ingest.toml 2>&1)
rc=$?
set -e
[ "$rc" = 78 ] || fail "wix-ingest with the empty public key placeholder exited $rc, want 78: $msg"
echo "$msg" | grep -q WIX_WEBHOOK_PUBLIC_KEY_FILE || fail "the error does not name WIX_WEBHOOK_PUBLIC_KEY_FILE: $msg"
ok "shipped print.toml passes --check-config; the empty public key is exit 78 naming WIX_WEBHOOK_PUBLIC_KEY_FILE"

before=$(cat "$root/etc/wix-printer/print-submit.token")
echo 'restaurant_name = "Edited"' >> "$root/etc/wix-printer/print.toml"
in_root dpkg -i --force-confold /tmp/wix-printer.deb >/dev/null 2>&1 || fail "reinstall"
[ "$(cat "$root/etc/wix-printer/print-submit.token")" = "$before" ] || fail "reinstall replaced a token"
grep -q Edited "$root/etc/wix-printer/print.toml" || fail "reinstall lost the operator's print.toml edit"
ok "reinstall keeps the tokens and the operator's config"

in_root dpkg -P wix-printer >/dev/null 2>&1 || fail "dpkg -P"
[ ! -e "$root/usr/bin/wix-ingest" ] || fail "purge left /usr/bin/wix-ingest"
[ ! -e "$root/etc/wix-printer/print-submit.token" ] || fail "purge left the tokens"
ok "purge removes the binaries, units, configs and tokens"
echo "deb-install-test: all checks passed for $(basename "$DEB")"
