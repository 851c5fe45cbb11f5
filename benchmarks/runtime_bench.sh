#!/usr/bin/env bash
# Model-runtime throughput on stories260K: ppl-v1 evaluation and calibration with 1 and 2 threads,
# with wall time and peak resident memory. Prints figures; asserts nothing. Run both thread counts
# in one go: these machines are shared and noisy, compare ratios within one run.
set -euo pipefail
build=${1:-build/release}
data=${NWC_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
nwc="$build/bin/nwc"
model="$data/models/stories260K/stories260K.bin"
tok="$data/models/stories260K/tok512.bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
peak() { sed -n 's/.*Maximum resident set size (kbytes): //p' "$1"; }
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-12s %8s %12s %10s %12s\n' job threads tokens/s seconds "peak RSS MB"
for t in 1 2; do
  /usr/bin/time -v "$nwc" eval --model "$model" --tokenizer "$tok" \
    --text "$data/text/tinystories-eval.txt" --threads "$t" --json >"$tmp/e.json" 2>"$tmp/e.time"
  tps=$(sed -n 's/.*"tokens_per_second": \([0-9.]*\).*/\1/p' "$tmp/e.json")
  secs=$(sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p' "$tmp/e.json")
  printf '%-12s %8s %12.0f %10.2f %12.1f\n' eval "$t" "$tps" "$secs" "$(($(peak "$tmp/e.time") / 1024))"
done
for t in 1 2; do
  /usr/bin/time -v "$nwc" calibrate --model "$model" --tokenizer "$tok" \
    --text "$data/text/tinystories-calib.txt" --tokens 65536 --threads "$t" \
    -o "$tmp/h.safetensors" --json >"$tmp/c.json" 2>"$tmp/c.time"
  tps=$(sed -n 's/.*"tokens_per_second": \([0-9.]*\).*/\1/p' "$tmp/c.json")
  secs=$(sed -n 's/.*"seconds": \([0-9.]*\).*/\1/p' "$tmp/c.json")
  printf '%-12s %8s %12.0f %10.2f %12.1f\n' calibrate "$t" "$tps" "$secs" "$(($(peak "$tmp/c.time") / 1024))"
done
