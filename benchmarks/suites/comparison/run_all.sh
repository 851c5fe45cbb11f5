#!/usr/bin/env bash
# The whole comparison of docs/results.md: every suite (the NWC ladders, the ablation, the
# baselines, GPTQ + blockft, llama.cpp's types) on every real model of the shared data, one
# `nwc bench` run per model, then the equal-rate tables and plots.
# usage: run_all.sh OUT_DIR [NWC_BINARY]   (NWC_DATA: the shared data folder)
#   OUT_DIR/{stories260K,aidreams260K,tinystories656K}/results.{md,json,csv}, OUT_DIR/summary.md
set -euo pipefail
out=$1
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
nwc=${2:-$root/build/release/bin/nwc}
data=${NWC_DATA:-$root/../shared/data}
export NWC_DATA=$data
suites=("$root/pipelines" "$root/benchmarks/suites/nwc-ablation" "$root/benchmarks/suites/baselines"
  "$root/benchmarks/suites/comparison" "$root/benchmarks/suites/ggml")
mkdir -p "$out"

# stories260K: ppl-v1 on the whole tinystories-eval.txt, calibration on tinystories-calib.txt.
"$nwc" bench --model "$data/models/stories260K/stories260K.bin" \
  --tokenizer "$data/models/stories260K/tok512.bin" \
  --pipelines "${suites[@]}" "$root/benchmarks/suites/ggml-mixtures/stories260K" -o "$out/stories260K"
# aidreams260K: its own continuations (aidreams_text.sh) for evaluation and calibration.
bash "$here/aidreams_text.sh" "$nwc" "$out/aidreams-text"
"$nwc" bench --model "$data/models/aidreams260K/aidreams260K.bin" \
  --tokenizer "$data/models/aidreams260K/tok512.bin" --eval-text "$out/aidreams-text/eval.txt" \
  --calib-text "$out/aidreams-text/calib.txt" \
  --pipelines "${suites[@]}" "$root/benchmarks/suites/ggml-mixtures/aidreams260K" -o "$out/aidreams260K"
# tinystories656K: the HF directory with its tokenizer.json, TinyStories texts.
"$nwc" bench --model "$data/models/tinystories656K" \
  --tokenizer "$data/models/tinystories656K/tokenizer.json" \
  --pipelines "${suites[@]}" "$root/benchmarks/suites/ggml-mixtures/tinystories656K" \
  -o "$out/tinystories656K"

{
  for m in stories260K aidreams260K tinystories656K; do
    echo "## $m"
    echo
    python3 "$here/summarize.py" "$out/$m/results.json" --rates 3 3.5 4 4.5 5 6 \
      --plot "$out/$m/nwc-comparison-$m.svg" --methods "NWC, trellis-coded latents" NWC \
      "NWC data-free, trellis-coded latents" "NWC data-free" "GPTQ act-order g128" \
      "GPTQ act-order g32" "GPTQ act-order g32, dynamic groups" "GPTQ act-order g32 + rANS" \
      "GPTQ act-order g32 + blockft" "AWQ + GPTQ act-order g128" "AWQ + RTN g128" \
      "LDLQ g32 (block 32)" "HQQ g64" "RTN g128" "RTN g32" "RTN g32 + rANS"
    echo
  done
} >"$out/summary.md"
echo "wrote $out/summary.md"
