#!/usr/bin/env bash
# Builds the package, installs it, and checks what it promises: the binary
# runs from /usr/bin, man finds subvol(1), bash loads the completion, the
# units are in place. Then removes it again. Run as root (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(packaging/build-deb.sh)
dpkg-deb --info "$deb" >/dev/null
if dpkg -s subvol >/dev/null 2>&1; then
    echo "test-deb.sh: a subvol package is already installed; not replacing it" >&2
    exit 1
fi
trap 'dpkg -r subvol >/dev/null' EXIT
dpkg -i "$deb" >/dev/null
/usr/bin/subvol --version | grep -q "^subvol "
man -w subvol >/dev/null
man -w subvol-pool-init >/dev/null
bash -c 'source /usr/share/bash-completion/completions/subvol && complete -p subvol' | grep -q _subvol_names
for unit in subvol-guard.service subvol-pool.service subvol-autosnap.timer subvol-metrics.timer subvol-scrub.timer; do
    test -f "/lib/systemd/system/$unit"
done
! grep -q /usr/local/bin /lib/systemd/system/subvol-*.service
echo "package $deb: installs, runs, has its man pages, completions and units"
