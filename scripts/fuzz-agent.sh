#!/bin/sh
# Fuzzes the guest agent's frame and request decoders with libFuzzer.
#
#   sh scripts/fuzz-agent.sh [SECONDS]     (default 60; `npm run fuzz:agent -- 60`)
#
# Builds guest/agent/fuzz/frame_fuzz.c against guest/agent/proto.c (the same
# decoder the agent links) with ASan and UBSan, seeds it from the checked-in
# corpus, and runs it for SECONDS. Exits non-zero on a crash, leak, timeout or
# sanitizer report; the reproducer is left in build/fuzz/.
set -eu
cd "$(dirname "$0")/.."

SECONDS_TO_RUN=${1:-60}
SRC=guest/agent
OUT=build/fuzz
CC=${FUZZ_CC:-clang}

if ! command -v "$CC" >/dev/null 2>&1; then
  echo "fuzz-agent: $CC not found (Debian: apt-get install clang libclang-rt-14-dev)" >&2
  exit 1
fi

mkdir -p "$OUT/corpus"
"$CC" -g -O1 -std=c11 -Wall -Wextra -Werror \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  -I "$SRC" "$SRC/fuzz/frame_fuzz.c" "$SRC/proto.c" -o "$OUT/frame_fuzz"

echo "fuzz-agent: running for ${SECONDS_TO_RUN}s" >&2
# New inputs go to build/fuzz/corpus; the checked-in seeds are read only.
"$OUT/frame_fuzz" \
  -max_total_time="$SECONDS_TO_RUN" \
  -max_len=8192 \
  -timeout=10 \
  -rss_limit_mb=2048 \
  -print_final_stats=1 \
  -artifact_prefix="$OUT/" \
  "$OUT/corpus" "$SRC/fuzz/corpus"
echo "fuzz-agent: no crashes in ${SECONDS_TO_RUN}s" >&2
