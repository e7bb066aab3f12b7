#!/usr/bin/env bash
# Install what pallium needs on Debian 12 and build it (release).
# Usage (as root): ./extra/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential pkg-config ca-certificates curl iproute2 nftables passt slirp4netns >/dev/null
if ! command -v cargo >/dev/null; then
    apt-get install -y -qq --no-install-recommends cargo rustc >/dev/null
fi
# Debian ships /dev/net/tun world read-write; rootless networking needs that.
[ -e /dev/net/tun ] && chmod 0666 /dev/net/tun
cargo build --release --locked --workspace --bins
echo "built: $(pwd)/target/release/pallium (+ pallium-netbroker, pallium-sandboxer beside it)"
