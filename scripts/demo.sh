#!/usr/bin/env bash
# The main job on the bundled model: compress stories260K with a 4-bit pipeline (groups of 32),
# decompress it to safetensors, and print bits per weight and MSE per tensor and in total.
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
echo "decompressed model: $out/stories260K-rtn4.safetensors"
