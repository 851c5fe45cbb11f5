#!/usr/bin/env bash
# The main job on the bundled model: compress stories260K with a 4-bit pipeline (groups of 32),
# decompress it to safetensors, print bits per weight and MSE per tensor and in total, and
# evaluate the original and the compressed model side by side (protocol ppl-v1); then the same
# with the NWC neural codec (data-free preset, lambda 300).
set -euo pipefail
build=${1:-build/release}
data=${NWC_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
model="$data/models/stories260K/stories260K.bin"
if [ ! -f "$model" ]; then
  echo "demo: model not found: $model" >&2
  echo "demo: set NWC_DATA to the directory that holds models/stories260K/ (the shared data)" >&2
  exit 1
fi
nwc="$build/bin/nwc"
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"
pipeline=pipelines/rtn-4bit-g32.toml

echo "== nwc compress $model --pipeline $pipeline"
"$nwc" compress "$model" --pipeline "$pipeline" -o "$out/stories260K-rtn4.nwc"
echo
echo "== nwc decompress $out/stories260K-rtn4.nwc"
"$nwc" decompress "$out/stories260K-rtn4.nwc" -o "$out/stories260K-rtn4.safetensors"
echo
echo "== nwc inspect $out/stories260K-rtn4.nwc --reference $model"
"$nwc" inspect "$out/stories260K-rtn4.nwc" --reference "$model"
echo
tok="$data/models/stories260K/tok512.bin"
text="$data/text/tinystories-eval.txt"
echo "== nwc eval (ppl-v1, whole $text)"
orig=$("$nwc" eval --model "$model" --tokenizer "$tok" --text "$text" --json)
comp=$("$nwc" eval --model "$out/stories260K-rtn4.nwc" --tokenizer "$tok" --text "$text" --json)
nwc_pipeline=pipelines/nwc-datafree-l300.toml
"$nwc" compress "$model" --pipeline "$nwc_pipeline" -o "$out/stories260K-nwc.nwc" --quiet
neural=$("$nwc" eval --model "$out/stories260K-nwc.nwc" --tokenizer "$tok" --text "$text" --json)
field() { echo "$1" | sed -n "s/.*\"$2\": \([0-9.e+-]*\).*/\1/p" | head -1; }
bpw() { # bpw CONTAINER -> "linears all"
  local info
  info=$("$nwc" inspect "$1" --json)
  echo "$(echo "$info" | sed -n 's/.*"pipeline_bits_per_weight": \([0-9.]*\).*/\1/p')" \
    "$(echo "$info" | sed -n 's/.*"bits_per_weight": \([0-9.]*\).*/\1/p' | tail -1)"
}
printf '%-24s %16s %16s %10s %10s\n' model "bits/w (linears)" "bits/w (all)" NLL ppl
printf '%-24s %16s %16s %10.5f %10.4f\n' "stories260K (fp32)" 32 32 "$(field "$orig" nll)" "$(field "$orig" ppl)"
read -r lin all <<< "$(bpw "$out/stories260K-rtn4.nwc")"
printf '%-24s %16.3f %16.3f %10.5f %10.4f\n' "rtn-4bit-g32 (.nwc)" "$lin" "$all" \
  "$(field "$comp" nll)" "$(field "$comp" ppl)"
read -r lin all <<< "$(bpw "$out/stories260K-nwc.nwc")"
printf '%-24s %16.3f %16.3f %10.5f %10.4f\n' "nwc-datafree-l300 (.nwc)" "$lin" "$all" \
  "$(field "$neural" nll)" "$(field "$neural" ppl)"
echo
echo "decompressed model: $out/stories260K-rtn4.safetensors"
