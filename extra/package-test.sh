#!/usr/bin/env bash
# Build the .deb (extra/package.sh) and install it into a clean root: a fresh mount namespace
# whose /usr, /etc and /var are overlays with throwaway upper layers, so dpkg really installs
# it (dependencies checked against this machine's) and nothing outside changes. Then run the
# README's demo with the installed /usr/bin/pallium and check what the package put in place.
#   PALLIUM_PACKAGE_PROFILE=dev ./extra/package-test.sh   (CI: reuses the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "package-test.sh: needs root (dpkg -i in a mount namespace)" >&2; exit 1; }

./extra/package.sh 2>&1 | grep -v "^warning: Only source paths" || true
deb=$(ls -t target/debian/pallium_*.deb | head -1)
[ -f "$deb" ] || { echo "package-test.sh: no .deb was built" >&2; exit 1; }
echo "package-test.sh: installing $deb in a fresh mount namespace"

unshare --mount --propagation private bash -euo pipefail -s "$(realpath "$deb")" <<'INNER'
deb=$1
scratch=$(mktemp -d /tmp/pallium-pkgtest.XXXXXX)
mount -t tmpfs tmpfs "$scratch"
for d in usr etc var; do
    mkdir -p "$scratch/$d/upper" "$scratch/$d/work"
    mount -t overlay overlay -o "lowerdir=/$d,upperdir=$scratch/$d/upper,workdir=$scratch/$d/work" "/$d"
done
# Nothing of pallium on this root before: the test is of the package alone.
if [ -e /usr/bin/pallium ]; then echo "package-test.sh: /usr/bin/pallium exists before the install" >&2; exit 1; fi
dpkg -i "$deb" >/dev/null
for f in /usr/bin/pallium /usr/bin/pallium-netbroker /usr/bin/pallium-sandboxer \
         /usr/share/man/man1/pallium.1.gz /usr/share/man/man1/pallium-run.1.gz \
         /usr/share/bash-completion/completions/pallium /usr/share/zsh/vendor-completions/_pallium \
         /usr/share/fish/vendor_completions.d/pallium.fish /lib/systemd/system/pallium@.service \
         /usr/share/pallium/profiles/tor-shell.json; do
    [ -e "$f" ] || { echo "package-test.sh: the package lacks $f" >&2; exit 1; }
done
dpkg -s pallium | grep -q '^Status: install ok installed'
# The README's demo, with the installed binary (found on PATH as a user would).
out=$(cd / && PATH=/usr/bin:/bin pallium exec --one-shot default -- sh -c 'hostname; ip -brief addr; cat /etc/resolv.conf')
echo "$out"
echo "$out" | head -1 | grep -qx pallium
echo "$out" | grep -q '^eth0'
# A shipped profile passes check with the installed binary.
pallium check /usr/share/pallium/profiles/tor-shell.json >/dev/null
dpkg -r pallium >/dev/null
[ ! -e /usr/bin/pallium ] || { echo "package-test.sh: dpkg -r left /usr/bin/pallium" >&2; exit 1; }
echo "package-test.sh: ok (installed, demo ran, removed)"
INNER
