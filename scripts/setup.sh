#!/bin/sh
# Idempotent setup: the single place that installs what actorvm needs on a fresh
# Debian 12 machine. Called by `npm test`, `npm run demo` and .ci/run, so the
# README's two commands work as the first commands on a new machine.
#
#   1. Debian packages that are missing (apt-get, needs root);
#   2. npm dependencies when package-lock.json changed since the last `npm ci`;
#   3. the guest agent (scripts/build-agent.sh, cached by source hash) and the
#      escape probe the isolation tests run in sandboxes (scripts/build-probe.sh);
#   4. the TypeScript build (dist/), which workers and the actorctl bin load.
set -eu
cd "$(dirname "$0")/.."

# Everything the runtime, its tests and benches run for real. Kept in one list so
# CI, the demo and a developer machine agree. (bsdutils: `script`, which drives the PTY tests.)
PACKAGES="build-essential musl-tools clang libclang-rt-14-dev busybox-static
linux-image-cloud-amd64 qemu-system-x86 qemu-utils iproute2 iperf3 slirp4netns
passt dnsmasq-base cpio kmod util-linux procps bsdutils zstd e2fsprogs"

missing=""
for p in $PACKAGES; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -q >&2
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing >&2
fi

lock_hash=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f node_modules/.actorvm-lock ] || [ "$(cat node_modules/.actorvm-lock)" != "$lock_hash" ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >&2
  echo "$lock_hash" > node_modules/.actorvm-lock
fi

sh scripts/build-agent.sh >&2
sh scripts/build-probe.sh >&2
npx tsc -p tsconfig.build.json >&2
