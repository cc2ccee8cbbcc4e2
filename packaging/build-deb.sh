#!/usr/bin/env bash
# Builds target/debian/subvol_VERSION_ARCH.deb: the binary, a man page per
# command, bash/zsh/fish completions and the systemd units of contrib/
# (pointing at /usr/bin/subvol). Needs cargo, dpkg-deb, python3.
#   packaging/build-deb.sh && dpkg -i target/debian/subvol_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."

version=$(cargo metadata --no-deps --format-version 1 |
    python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "subvol"))')
arch=$(dpkg --print-architecture)
cargo build --release --locked -p subvol

root=$(mktemp -d)
chmod 0755 "$root"
trap 'rm -rf "$root"' EXIT
bin=$root/usr/bin/subvol
install -D -m 0755 target/release/subvol "$bin"
strip --strip-debug "$bin"

"$bin" man --dir "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root"/usr/share/man/man1/*.1
install -d "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
    "$root/usr/share/fish/vendor_completions.d" "$root/lib/systemd/system" "$root/usr/share/doc/subvol"
"$bin" completions bash >"$root/usr/share/bash-completion/completions/subvol"
"$bin" completions zsh >"$root/usr/share/zsh/vendor-completions/_subvol"
"$bin" completions fish >"$root/usr/share/fish/vendor_completions.d/subvol.fish"
for unit in contrib/*.service contrib/*.timer; do
    sed 's#/usr/local/bin/subvol#/usr/bin/subvol#g' "$unit" >"$root/lib/systemd/system/$(basename "$unit")"
done
chmod 0644 "$root"/lib/systemd/system/* "$root"/usr/share/*/*/subvol* "$root"/usr/share/zsh/vendor-completions/_subvol
gzip -9n -c README.md >"$root/usr/share/doc/subvol/README.md.gz"
printf 'subvol %s\nLicense: Apache-2.0\n' "$version" >"$root/usr/share/doc/subvol/copyright"

# The newest glibc symbol version the binary needs is the libc6 it depends on.
glibc=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
install -d "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: subvol
Version: $version
Architecture: $arch
Maintainer: subvol developers <subvol@localhost>
Section: admin
Priority: optional
Installed-Size: $size
Depends: libc6 (>= $glibc), xfsprogs, util-linux
Recommends: e2fsprogs, btrfs-progs, openssh-client
Description: subvolumes, snapshots and replication on image files
 Subvolumes as sparse image files with their own filesystem on any XFS,
 btrfs or ext4 host: instant reflink snapshots and clones, space accounting
 with a guard that freezes writers before the host fills, and incremental
 extent-based replication.
CONTROL

mkdir -p target/debian
out=target/debian/subvol_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$out" >/dev/null
echo "$out"
