#!/usr/bin/env bash
# aidreams260K has no matching text, so its evaluation and calibration texts are its own
# continuations of short prompts: one prompt set for evaluation (greedy), a disjoint one for
# calibration, sampled (temperature 1, top-p 0.9, 256 tokens each; seeds 1-5 for every prompt,
# then seeds 6-10: about 59,000 tokens, enough for the 288 windows of 128 tokens that the
# nwc-tcq-l* presets' fine-tuning takes; seeds 1-5 alone give 29,661). NLL on them measures how far a compressed model moves from the original's own
# predictions. Greedy continuations are too repetitive to calibrate on (they settle into loops
# such as "Dimensions unfold, 0.0000000."): 6,528 tokens of them made GPTQ at 4 bits, g32 worse
# than round-to-nearest (docs/baselines-as-run.md).
# The prompts are the words of aidreams-prompts-{eval,calib}.txt (tests/integration/
# test_baseline_order.cpp generates the same texts in-process).
# usage: aidreams_text.sh NWC_BINARY OUT_DIR   (writes OUT_DIR/eval.txt and OUT_DIR/calib.txt)
set -euo pipefail
nwc=$1
out=$2
data=${NWC_DATA:-$(dirname "$0")/../../../../shared/data}
model=$data/models/aidreams260K/aidreams260K.bin
tok=$data/models/aidreams260K/tok512.bin
mkdir -p "$out"
gen() { # prompts... -> one greedy continuation per line
  for w in "$@"; do
    "$nwc" generate --model "$model" --tokenizer "$tok" --prompt "$w" --steps 120 --quiet --threads 1 |
      tr '\n' ' '
    echo
  done
}
sample() { # "SEEDS" prompts... -> one sampled continuation per seed and prompt, one per line
  local seeds=$1
  shift
  for w in "$@"; do
    for seed in $seeds; do
      "$nwc" generate --model "$model" --tokenizer "$tok" --prompt "$w" --steps 256 --quiet --threads 1 \
        --temperature 1 --top-p 0.9 --seed "$seed" | tr '\n' ' '
      echo
    done
  done
}
here=$(dirname "$0")
# shellcheck disable=SC2046
gen $(cat "$here/aidreams-prompts-eval.txt") >"$out/eval.txt.tmp" && mv "$out/eval.txt.tmp" "$out/eval.txt"
# shellcheck disable=SC2046
{
  sample "1 2 3 4 5" $(cat "$here/aidreams-prompts-calib.txt")
  # shellcheck disable=SC2046
  sample "6 7 8 9 10" $(cat "$here/aidreams-prompts-calib.txt")
} >"$out/calib.txt.tmp" && mv "$out/calib.txt.tmp" "$out/calib.txt"
wc -w "$out/eval.txt" "$out/calib.txt"
