#!/bin/sh
# Builds the guest agent: the single source of truth, used by `npm run
# build:agent`, scripts/setup.sh, CI and image builds.
#
#   sh scripts/build-agent.sh        -> build/guest/actorvm-agent
#
# Static musl binary, size-optimised and stripped. Cached: the build is skipped
# when a hash of the agent sources, this script and the compiler version matches
# the stamp file next to the output. Fails when the binary exceeds the size
# budget. Exits non-zero on any failure.
set -eu
cd "$(dirname "$0")/.."

SRC_DIR=guest/agent
OUT_DIR=build/guest
OUT=$OUT_DIR/actorvm-agent
STAMP=$OUT.stamp
CC=${AGENT_CC:-musl-gcc}
MAX_BYTES=307200 # 300 KB budget (issue: stripped binary <= 300 KB)

if ! command -v "$CC" >/dev/null 2>&1; then
  echo "build-agent: $CC not found (Debian: apt-get install musl-tools)" >&2
  exit 1
fi

SOURCES=$(ls "$SRC_DIR"/*.c | LC_ALL=C sort)
HEADERS=$(ls "$SRC_DIR"/*.h | LC_ALL=C sort)

hash=$(
  {
    for f in $SOURCES $HEADERS scripts/build-agent.sh; do
      printf '%s\n' "$f"
      cat "$f"
    done
    "$CC" --version 2>&1 | head -n 1
  } | sha256sum | cut -d' ' -f1
)

size_of() { wc -c < "$1" | tr -d ' '; }

if [ -x "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
  echo "build-agent: $OUT up to date ($(size_of "$OUT") bytes)"
  exit 0
fi

mkdir -p "$OUT_DIR"
tmp="$OUT.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM

# shellcheck disable=SC2086
"$CC" -std=c11 -Os -static \
  -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
  -ffunction-sections -fdata-sections \
  -fno-asynchronous-unwind-tables -fno-unwind-tables -fstack-protector-strong \
  -Wl,--gc-sections -Wl,--build-id=none -Wl,-z,noexecstack -s \
  -I "$SRC_DIR" $SOURCES -o "$tmp"

size=$(size_of "$tmp")
if [ "$size" -gt "$MAX_BYTES" ]; then
  echo "build-agent: binary is $size bytes, over the $MAX_BYTES byte budget" >&2
  exit 1
fi
mv -f "$tmp" "$OUT"
trap - EXIT INT TERM
echo "$hash" > "$STAMP"
echo "build-agent: built $OUT ($size bytes)"
