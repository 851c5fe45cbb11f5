#!/usr/bin/env bash
# Trains the NWC codecs this repository ships (codecs/) and the ones the measurements in
# docs/results.md compare (out/codecs/): the lambda ladder, the fast and trellis ladders, codec
# sizes, codec transfer and training on every model but one.
#
#   bash benchmarks/codecs/train_codecs.sh [ladder|top|fast|trellis|sizes|transfer|holdout|all]
#   (default: all)
#
# Each codec's exact command is printed before it runs; `nwc train-codec` resumes an interrupted
# run from OUTPUT.ckpt. Threads: NWC_TRAIN_THREADS (default 2).
set -euo pipefail
cd "$(dirname "$0")/../.."
NWC=${NWC:-build/release/bin/nwc}
DATA=${NWC_DATA:-../shared/data}
STORIES=$DATA/models/stories260K/stories260K.bin
AIDREAMS=$DATA/models/aidreams260K/aidreams260K.bin
TS656K=$DATA/models/tinystories656K
THREADS=${NWC_TRAIN_THREADS:-2}
what=${1:-all}
mkdir -p codecs out/codecs

train() { # train OUTPUT ARGS...
  local out=$1
  shift
  echo "+ $NWC train-codec $* -o $out --threads $THREADS --quiet --json"
  local t0=$(date +%s)
  "$NWC" train-codec "$@" -o "$out" --threads "$THREADS" --quiet --json > "$out.json"
  echo "  $(($(date +%s) - t0)) s"
}

# The shipped ladder: D 64, one residual block, trained on stories260K's weights only, so that
# aidreams260K stays held out for every measurement.
if [[ $what == ladder || $what == all ]]; then
  for lambda in 30 100 300 1000 3000 10000 30000; do
    train codecs/nwc-s-l$lambda.nwcc --model "$STORIES" --lambda $lambda \
      --width 64 --blocks 1 --steps 6000 --lr 3e-3 --lr-drop 4000 --eval-every 500
  done
fi

# The fast ladder: D 32 (128 multiply-adds per decoded weight against 384 for D 64),
# the same data and schedule; decodes about 1.7x faster than the D 64 ladder.
if [[ $what == fast || $what == all ]]; then
  for lambda in 100 300 1000; do
    train codecs/nwc-f-l$lambda.nwcc --model "$STORIES" --lambda $lambda \
      --width 32 --blocks 1 --steps 6000 --lr 3e-3 --lr-drop 4000 --eval-every 500
  done
fi

# The trellis ladder: the ladder's lambda 100, 300 and 1000 codecs fine-tuned for trellis-coded
# latents (nwc.quant.tcq in the distortion term, straight-through; the rate at the trellis'
# symbols) with their shared prior (out/codecs/nwc-t-l*-shared.nwcc), then given a prior per
# quality level trained on the trellis' symbols with the transforms frozen (--prior-only: the same
# reconstructions, fewer bits); the lambda 3000 rung is the ladder's codec given such priors
# directly (its transforms fine-tuned for the trellis were no better in nwc-tcq-mix-4.5). The
# nwc-tcq-* presets use them. Needs the ladder. A shared codec already in out/codecs is kept: the
# shipped codecs' priors were trained from the shared codecs shipped before them
# (git show 9bfffe8:codecs/nwc-t-l300.nwcc).
if [[ $what == trellis || $what == all ]]; then
  for lambda in 100 300 1000 3000; do
    from=codecs/nwc-s-l$lambda.nwcc
    if [[ $lambda != 3000 ]]; then
      from=out/codecs/nwc-t-l$lambda-shared.nwcc
      [[ -f $from ]] || train $from --model "$STORIES" --lambda $lambda \
        --width 64 --blocks 1 --steps 4000 --lr 1e-3 --lr-drop 2500 --eval-every 250 \
        --latent-quantizer nwc.quant.tcq --init codecs/nwc-s-l$lambda.nwcc
    fi
    train codecs/nwc-t-l$lambda.nwcc --model "$STORIES" --lambda $lambda \
      --width 64 --blocks 1 --steps 2000 --lr 1e-3 --lr-drop 1500 --eval-every 500 \
      --latent-quantizer nwc.quant.tcq --init $from --level-priors --prior-only
  done
fi

# The top of the ladder, past the lambda 30000 rung's ~6.3 b/w: there the latents' scale, not the
# rate term, is what stops (every level codes at the same rate), because Adam at lr 3e-3 grows the
# transforms' gains only slowly; lr 1e-2 and each rung started from the one below reach 7.4 b/w
# with the weight MSE still falling (docs/results.md, "The top of the ladder"). The shipped
# lambda 100000 and 300000 codecs were trained with NWC_TRAIN_THREADS=1.
if [[ $what == top || $what == all ]]; then
  train out/codecs/top-l30000.nwcc --model "$STORIES" --lambda 30000 \
    --width 64 --blocks 1 --steps 6000 --lr 1e-2 --lr-drop 4000 --eval-every 500
  train codecs/nwc-s-l100000.nwcc --model "$STORIES" --lambda 100000 --width 64 --blocks 1 \
    --steps 6000 --lr 1e-2 --lr-drop 4000 --eval-every 500 --init out/codecs/top-l30000.nwcc
  train codecs/nwc-s-l300000.nwcc --model "$STORIES" --lambda 300000 --width 64 --blocks 1 \
    --steps 12000 --lr 1e-2 --lr-drop 9000 --eval-every 1000 --init codecs/nwc-s-l100000.nwcc
  train out/codecs/top-l1000000.nwcc --model "$STORIES" --lambda 1000000 --width 64 --blocks 1 \
    --steps 12000 --lr 1e-2 --lr-drop 9000 --eval-every 1000 --init codecs/nwc-s-l300000.nwcc
fi

# Codec size trade-off at lambda 300 (the last is the paper's size: D 512, 4 blocks).
if [[ $what == sizes || $what == all ]]; then
  for size in "16 1" "64 1" "128 2" "512 4"; do
    set -- $size
    lr=3e-3
    [[ $1 -ge 512 ]] && lr=1e-3
    train out/codecs/size-d$1-b$2-l300.nwcc --model "$STORIES" --lambda 300 \
      --width $1 --blocks $2 --steps 6000 --lr $lr --lr-drop 4000 --eval-every 500
  done
fi

# Transfer: the ladder's lambda 300 codec (stories260K weights) against the same codec trained on
# aidreams260K's weights alone.
if [[ $what == transfer || $what == all ]]; then
  train out/codecs/transfer-aidreams-l300.nwcc --model "$AIDREAMS" --lambda 300 \
    --width 64 --blocks 1 --steps 6000 --lr 3e-3 --lr-drop 4000 --eval-every 500
fi

# More training data: the ladder's recipe on the weights of every real model but one, for
# lambda 100, 300 and 1000 (out/codecs/holdout-<held-out model>-l<lambda>.nwcc); each is measured
# on the model it did not see, against the ladder codec (stories260K's weights alone).
if [[ $what == holdout || $what == all ]]; then
  for lambda in 100 300 1000; do
    train out/codecs/holdout-aidreams260K-l$lambda.nwcc --model "$STORIES" --model "$TS656K" \
      --lambda $lambda --width 64 --blocks 1 --steps 6000 --lr 3e-3 --lr-drop 4000 --eval-every 500
    train out/codecs/holdout-tinystories656K-l$lambda.nwcc --model "$STORIES" --model "$AIDREAMS" \
      --lambda $lambda --width 64 --blocks 1 --steps 6000 --lr 3e-3 --lr-drop 4000 --eval-every 500
  done
fi
