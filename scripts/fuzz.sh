#!/usr/bin/env bash
# Fuzzing (tests/fuzz/README.md).
#
#   bash scripts/fuzz.sh [SECONDS] [TARGET...]
#       Configures build/fuzz with clang (-DNWC_FUZZ=ON), builds the libFuzzer targets, generates
#       their seed corpora into build/fuzz/corpus/<target>/, runs each target for SECONDS
#       (default $FUZZ_SECONDS, else 60) one after the other, and copies every crash, timeout or
#       out-of-memory input into tests/fuzz/regressions/<target>/. Exits 1 if any target found one.
#       FUZZ_JOBS (default 1) is the ninja -j value; FUZZ_BUILD (default build/fuzz) the build dir.
#   bash scripts/fuzz.sh seeds NWC_BIN SEEDS_TOOL OUTDIR
#       Only the seed corpora, made with a built `nwc` and nwc_fuzz_seeds (CTest's fuzz_seeds).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${NWC_DATA:-$ROOT/../shared/data}"
ALL_TARGETS=(container safetensors gguf llama2c pipeline codec_file entropy_raw entropy_zstd
             entropy_rans entropy_rans_cdf nwc_stream)
TARGETS=("${ALL_TARGETS[@]}")

# seeds NWC_BIN SEEDS_TOOL OUTDIR: real files for every target, in OUTDIR/fuzz_<target>/.
make_seeds() {
  local nwc="$1" tool="$2" out="$3"
  local model="$DATA/models/stories260K/stories260K.bin"
  [[ -f "$model" ]] || { echo "fuzz.sh: $model not found (set NWC_DATA)" >&2; return 1; }
  local tmp
  tmp="$(mktemp -d)"
  SEED_TMP="$tmp"
  trap 'rm -rf "$SEED_TMP"' EXIT
  # Seeds are added next to what earlier fuzzing put there (same names are overwritten).
  for t in "${ALL_TARGETS[@]}"; do mkdir -p "$out/fuzz_$t"; done
  # Containers: the golden files, and stories260K through raw, zstd, rANS (own tables) and the
  # NWC codec (rANS with external tables; once with the codec embedded; once with trellis-coded
  # latents; the NWC presets' row scales are log8, the golden files' f16), and RTN after the
  # Hadamard rotation (a per-tensor `rotation` side stream, inverted after merging).
  sed 's/nwc.entropy.raw/nwc.entropy.rans/' "$ROOT/pipelines/rtn-4bit-g32.toml" >"$tmp/rans.toml"
  { printf '[rotation]\nplugin = "nwc.rotation.hadamard"\n\n'
    cat "$ROOT/pipelines/rtn-4bit-g32.toml"; } >"$tmp/hadamard.toml"
  "$nwc" compress "$model" -p "$tmp/hadamard.toml" -o "$tmp/rtn4-hadamard.nwc" -q
  "$nwc" compress "$model" -p "$ROOT/pipelines/rtn-4bit-g32.toml" -o "$tmp/rtn4-raw.nwc" -q
  "$nwc" compress "$model" -p "$ROOT/pipelines/rtn-8bit-g64-zstd.toml" -o "$tmp/rtn8-zstd.nwc" -q
  "$nwc" compress "$model" -p "$tmp/rans.toml" -o "$tmp/rtn4-rans.nwc" -q
  if [[ -f "$ROOT/codecs/nwc-s-l300.nwcc" ]]; then
    "$nwc" compress "$model" -p "$ROOT/pipelines/nwc-datafree-l300.toml" -o "$tmp/nwc-l300.nwc" -q
    "$nwc" compress "$model" -p "$ROOT/pipelines/nwc-datafree-l300.toml" --embed-codec \
      -o "$tmp/nwc-l300-embedded.nwc" -q
    # Trellis-coded latents: nwc.quant.tcq's dequantize walks untrusted symbols.
    "$nwc" compress "$model" -p "$ROOT/pipelines/nwc-tcq-datafree-l300.toml" \
      -o "$tmp/nwc-tcq-l300.nwc" -q
    cp "$ROOT"/codecs/*.nwcc "$out/fuzz_codec_file/"
    cp "$ROOT"/codecs/*.nwcc "$out/fuzz_safetensors/"
  fi
  cp "$tmp"/*.nwc "$ROOT"/tests/golden/*.nwc "$out/fuzz_container/"
  # The trellis container first: its streams are coded with nwc-t-l300's tables (a prior per
  # level), the codec fuzz_nwc_stream decodes with, so its seeds decode to the end.
  local first=()
  [[ -f "$tmp/nwc-tcq-l300.nwc" ]] && first=("$tmp/nwc-tcq-l300.nwc")
  "$tool" "$out" "$ROOT/codecs/nwc-t-l300.nwcc" "${first[@]}" "$out"/fuzz_container/*.nwc
  # Model files: safetensors and GGUF written by `nwc convert`, the llama2.c checkpoints.
  "$nwc" convert -m "$model" -o "$tmp/hf" --dtype BF16 -q
  cp "$tmp/hf/model.safetensors" "$out/fuzz_safetensors/stories260K-bf16.safetensors"
  "$nwc" convert -m "$model" -o "$out/fuzz_gguf/stories260K-f32.gguf" --layout gguf -q
  "$nwc" convert -m "$model" -o "$out/fuzz_gguf/stories260K-f16.gguf" --layout gguf --dtype F16 -q
  cp "$model" "$out/fuzz_llama2c/stories260K.bin"
  [[ -f "$DATA/models/aidreams260K/aidreams260K.bin" ]] &&
    cp "$DATA/models/aidreams260K/aidreams260K.bin" "$out/fuzz_llama2c/"
  # The comparison suite adds [[allocate.candidate]] tables, which no preset of pipelines/ has.
  cp "$ROOT"/pipelines/*.toml "$ROOT"/tests/golden/*.toml \
    "$ROOT"/benchmarks/suites/comparison/gptq-ao-g*-mix-4.5.toml "$out/fuzz_pipeline/"
  for t in "${ALL_TARGETS[@]}"; do
    echo "corpus fuzz_$t: $(find "$out/fuzz_$t" -type f | wc -l) files"
  done
}

if [[ "${1:-}" == seeds ]]; then
  shift
  make_seeds "$@"
  exit
fi

SECONDS_EACH="${1:-${FUZZ_SECONDS:-60}}"
[[ $# -gt 0 ]] && shift
[[ $# -gt 0 ]] && TARGETS=("$@")
BUILD="${FUZZ_BUILD:-$ROOT/build/fuzz}"
CLANG="${CLANG:-$(command -v clang-14 || command -v clang)}"
CLANGXX="${CLANGXX:-$(command -v clang++-14 || command -v clang++)}"
# The seed corpora are made with a release `nwc` (gcc; LibTorch code is not built with clang here).
NWC_BIN="${NWC_BIN:-$ROOT/build/release/bin/nwc}"

echo "== configure $BUILD (clang, NWC_FUZZ=ON)"
# Line tables only (-g1): crash reports name file and line, and the build is faster than with -g.
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DNWC_FUZZ=ON \
  -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
  -DNWC_WERROR=OFF -DCMAKE_C_COMPILER="$CLANG" -DCMAKE_CXX_COMPILER="$CLANGXX" \
  -DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build "$BUILD" --target nwc_fuzz_all -j "${FUZZ_JOBS:-1}"
# The container and pipeline targets load the plugins of that build (C ABI: a gcc-built plugin
# serves a clang-built host); the entropy decoders are compiled into their own targets.
export NWC_FUZZ_PLUGIN_DIR="${NWC_FUZZ_PLUGIN_DIR:-$(dirname "$NWC_BIN")/../lib/nwc/plugins}"
SEEDS_TOOL="${SEEDS_TOOL:-$(dirname "$NWC_BIN")/../fuzz/nwc_fuzz_seeds}"
if [[ ! -x "$NWC_BIN" || ! -x "$SEEDS_TOOL" || ! -f "$NWC_FUZZ_PLUGIN_DIR/nwc-neural.so" ]]; then
  echo "== building the release build (nwc, plugins, nwc_fuzz_seeds)"
  cmake --preset release >/dev/null
  cmake --build --preset release -j "${FUZZ_JOBS:-1}"
fi
echo "== seeds"
make_seeds "$NWC_BIN" "$SEEDS_TOOL" "$BUILD/corpus"

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
found=0
summary=()
for t in "${TARGETS[@]}"; do
  exe="$BUILD/fuzz/fuzz_$t"
  corpus="$BUILD/corpus/fuzz_$t"
  regress="$ROOT/tests/fuzz/regressions/fuzz_$t"
  art="$BUILD/artifacts/fuzz_$t"
  rm -rf "$art"
  mkdir -p "$corpus" "$art"
  log="$BUILD/fuzz_$t.log"
  echo "== fuzz_$t for ${SECONDS_EACH}s"
  start=$(date +%s)
  # Regressions first (as seeds: libFuzzer reads every corpus directory given), new inputs go to
  # the first directory (the build's corpus), never into the source tree.
  set +e
  "$exe" "$corpus" $([[ -d "$regress" ]] && echo "$regress") -max_total_time="$SECONDS_EACH" \
    -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=1048576 -print_final_stats=1 \
    -artifact_prefix="$art/" >"$log" 2>&1
  rc=$?
  set -e
  took=$(($(date +%s) - start))
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
  n_art=$(find "$art" -type f | wc -l)
  if ((n_art > 0)); then
    mkdir -p "$regress"
    cp "$art"/* "$regress/"
    found=1
    echo "fuzz_$t: FOUND $n_art input(s) (copied to $regress); log: $log"
    grep -m3 -E 'ERROR|SUMMARY|runtime error|deadly signal' "$log" || true
  elif ((rc != 0)); then
    found=1
    echo "fuzz_$t: exited $rc without an artifact; log: $log"
    tail -5 "$log"
  fi
  summary+=("$(printf '%-26s %6ss %12s execs %s' "fuzz_$t" "$took" "${execs:-?}" \
    "$( ((n_art > 0 || rc != 0)) && echo FOUND || echo ok)")")
done
echo "== summary (${SECONDS_EACH}s per target)"
printf '%s\n' "${summary[@]}"
exit "$found"
