#!/usr/bin/env bash
# aidreams260K has no matching text, so its evaluation and calibration texts are its own
# continuations of short prompts: one prompt set for evaluation (greedy), a disjoint one for
# calibration, sampled (temperature 1, top-p 0.9, five seeds per prompt, 256 tokens each: about
# 60,000 tokens). NLL on them measures how far a compressed model moves from the original's own
# predictions. Greedy continuations are too repetitive to calibrate on (they settle into loops
# such as "Dimensions unfold, 0.0000000."): 6,528 tokens of them made GPTQ at 4 bits, g32 worse
# than round-to-nearest (docs/baselines-as-run.md).
# usage: aidreams_text.sh NWC_BINARY OUT_DIR   (writes OUT_DIR/eval.txt and OUT_DIR/calib.txt)
set -euo pipefail
nwc=$1
out=$2
data=${NWC_DATA:-$(dirname "$0")/../../../../shared/data}
model=$data/models/aidreams260K/aidreams260K.bin
tok=$data/models/aidreams260K/tok512.bin
mkdir -p "$out"
words_eval="I The A In My When Dreams Light Data Every Somewhere Beyond Silence Through Under
Memory Colors Waves Inside Echoes Numbers Patterns Signals Whispers Today Night Morning Stars
Time Deep Soft Quiet Bright Dark Falling Rising Floating Drifting Learning Thinking Seeing
Feeling Listening Waiting Again Once Slowly Suddenly Perhaps Maybe Still Now"
words_calib="We They You Our Their This That These Those Here There Where Why How What Who
Nodes Vectors Layers Weights Gradients Tokens Circuits Neurons Threads Fragments Shadows Mirrors
Rivers Gardens Forests Oceans Clouds Rain Snow Fire Stone Glass Paper Music Words Stories
Questions Answers Shapes Lines Edges Spirals Circles Doors Windows Bridges Roads"
gen() { # prompts... -> one greedy continuation per line
  for w in "$@"; do
    "$nwc" generate --model "$model" --tokenizer "$tok" --prompt "$w" --steps 120 --quiet --threads 1 |
      tr '\n' ' '
    echo
  done
}
sample() { # prompts... -> five sampled continuations per prompt, one per line
  for w in "$@"; do
    for seed in 1 2 3 4 5; do
      "$nwc" generate --model "$model" --tokenizer "$tok" --prompt "$w" --steps 256 --quiet --threads 1 \
        --temperature 1 --top-p 0.9 --seed "$seed" | tr '\n' ' '
      echo
    done
  done
}
# shellcheck disable=SC2086
gen $words_eval >"$out/eval.txt.tmp" && mv "$out/eval.txt.tmp" "$out/eval.txt"
# shellcheck disable=SC2086
sample $words_calib >"$out/calib.txt.tmp" && mv "$out/calib.txt.tmp" "$out/calib.txt"
wc -w "$out/eval.txt" "$out/calib.txt"
