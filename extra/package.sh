#!/usr/bin/env bash
# Build the Debian package target/debian/pallium_<version>_<arch>.deb (cargo-deb): the three
# binaries, the man pages and bash/zsh/fish completions the supervisor's build script generates,
# the ready-made profiles (/usr/share/pallium/profiles), pallium@.service and the docs.
#   ./extra/package.sh            a release build
#   PALLIUM_PACKAGE_PROFILE=dev ./extra/package.sh   package the debug build (tests)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${PALLIUM_PACKAGE_PROFILE:-release}
if ! command -v cargo-deb >/dev/null; then
    echo "package.sh: cargo-deb is missing: cargo install cargo-deb --locked" >&2
    exit 1
fi
cargo build --profile "$profile" -p pallium-supervisor -p pallium-netbroker -p pallium-sandboxer
case $profile in dev) dir=target/debug ;; *) dir=target/$profile ;; esac
# The build script's output of the build just made: the newest of its out directories.
page=$(ls -t "$dir"/build/pallium-supervisor-*/out/man/pallium.1 | head -1)
out=$(dirname "$(dirname "$page")")
rm -rf target/debian-assets
mkdir -p target/debian-assets
cp -r "$out/man" "$out/completions" target/debian-assets/
gzip -9n target/debian-assets/man/*.1
cargo deb -p pallium-supervisor --no-build --profile "$profile" --no-strip "$@"
