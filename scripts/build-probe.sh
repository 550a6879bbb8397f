#!/bin/sh
# Builds the escape probe the isolation tests run inside sandboxes
# (guest/probe/probe.c -> build/guest/actorvm-probe): static musl, like the
# agent, so it runs in any image. Test-only; never part of a shipped image.
# Cached by a hash of its source and this script. Called by scripts/setup.sh.
set -eu
cd "$(dirname "$0")/.."

SRC=guest/probe/probe.c
OUT=build/guest/actorvm-probe
STAMP=$OUT.stamp
CC=${AGENT_CC:-musl-gcc}

hash=$({ cat "$SRC" scripts/build-probe.sh; "$CC" --version 2>&1 | head -n 1; } | sha256sum | cut -d' ' -f1)
if [ -x "$OUT" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$hash" ]; then
  echo "build-probe: $OUT up to date"
  exit 0
fi
mkdir -p build/guest
"$CC" -std=c11 -Os -static -Wall -Wextra -Werror -Wno-unused-parameter -s "$SRC" -o "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
echo "$hash" > "$STAMP"
echo "build-probe: built $OUT"
