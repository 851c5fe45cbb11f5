#!/usr/bin/env bash
# Measures the NWC codecs (after benchmarks/codecs/train_codecs.sh) and writes the tables of
# docs/results.md to out/codecs/results.md:
#   1. each shipped codec on stories260K, data-free: measured bits per weight of the coded linears
#      (rANS streams + row scales) next to the density's entropy estimate, weight MSE against the
#      Shannon bound at the measured rate, ppl-v1 NLL on the whole tinystories-eval.txt;
#   2. against rounding the same normalized vectors to a grid (rANS-coded), on held-out weights;
#   3. codec transfer: the lambda 300 codec trained on stories260K against one trained on
#      aidreams260K alone, both used on stories260K;
#   4. codec sizes: rate-distortion on aidreams260K's weights (never seen in training) and
#      encode/decode throughput;
#   5. encode/decode throughput of every shipped codec, 1 and 2 threads, beside RTN.
#
#   bash benchmarks/codecs/measure_codecs.sh        (uses build/release; NWC=... to override)
set -euo pipefail
cd "$(dirname "$0")/../.."
NWC=${NWC:-build/release/bin/nwc}
BENCH=${BENCH:-$(dirname "$NWC")/nwc_codec_throughput}
DATA=${NWC_DATA:-../shared/data}
STORIES=$DATA/models/stories260K/stories260K.bin
TOK=$DATA/models/stories260K/tok512.bin
AIDREAMS=$DATA/models/aidreams260K/aidreams260K.bin
TEXT=$DATA/text/tinystories-eval.txt
OUT=out/codecs
mkdir -p "$OUT/work"
RESULTS=$OUT/results.md
LAMBDAS="30 100 300 1000 3000 10000 30000"

# A data-free pipeline for any codec file (same stages as pipelines/nwc-datafree-*.toml).
pipeline_for() { # pipeline_for CODEC NAME -> path
  local p=$OUT/work/$2.toml
  sed -e "s|^codec = .*|codec = \"$(realpath "$1")\"|" -e "s|^name = .*|name = \"$2\"|" \
    pipelines/nwc-datafree-l300.toml > "$p"
  echo "$p"
}

jget() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# Coded-linear bits per weight (streams incl. row scales) and MSE of a container.
coded() { # coded CONTAINER MODEL -> "bpw mse"
  "$NWC" inspect "$1" --reference "$2" --json | python3 -c '
import json, sys
j = json.load(sys.stdin)
b = e = n = 0
for t in j["tensors"]:
    if t["storage"] != "pipeline": continue
    k = 1
    for d in t["shape"]: k *= d
    b += t["stream_bytes"]; e += t["mse"] * k; n += k
print(f"{8 * b / n:.4f} {e / n:.4e}")'
}

nll() { # nll CONTAINER -> "nll ppl"
  local j
  j=$("$NWC" eval -m "$1" -t "$TOK" --text "$TEXT" --threads 2 --json)
  printf '%.5f %.4f' "$(echo "$j" | jget nll)" "$(echo "$j" | jget ppl)"
}

{
  echo "### Shipped codecs on stories260K, data-free (level 0, row scales f16)"
  echo
  echo "| codec | λ | bits/w measured | bits/w estimate | rANS vs estimate | MSE | Shannon bound σ²·2^(−2R) | NLL | ppl |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for l in $LAMBDAS; do
    c=codecs/nwc-s-l$l.nwcc
    "$NWC" compress "$STORIES" -p pipelines/nwc-datafree-l$l.toml -o "$OUT/work/l$l.nwc" --quiet
    read -r bpw mse <<< "$(coded "$OUT/work/l$l.nwc" "$STORIES")"
    m=$("$NWC" codec measure "$c" -m "$STORIES" --json)
    est=$(printf '%.4f' "$(echo "$m" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["estimate_bpw"] + d["side_bpw"])')")
    gap=$(printf '%+.2f%%' "$(echo "$m" | jget rans_over_estimate_percent)")
    bound=$(printf '%.3e' "$(echo "$m" | python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["variance"] * 2 ** (-2 * float(sys.argv[1])))' "$bpw")")
    read -r n p <<< "$(nll "$OUT/work/l$l.nwc")"
    echo "| nwc-s-l$l | $l | $bpw | $est | $gap | $mse | $bound | $n | $p |"
  done
  echo
  echo "### Against plain rounding, on aidreams260K's weights (held out)"
  echo
  python3 benchmarks/codecs/rounding_compare.py "$NWC" "$AIDREAMS" "$OUT/work" $LAMBDAS
  echo
  echo "### Codec transfer (λ 300, D 64, 1 block), used on stories260K"
  echo
  echo "| codec trained on | bits/w | MSE | NLL | ppl |"
  echo "|---|---:|---:|---:|---:|"
  for t in stories:codecs/nwc-s-l300.nwcc aidreams:out/codecs/transfer-aidreams-l300.nwcc; do
    name=${t%%:*}
    file=${t#*:}
    p=$(pipeline_for "$file" "transfer-$name")
    "$NWC" compress "$STORIES" -p "$p" -o "$OUT/work/t-$name.nwc" --quiet
    read -r bpw mse <<< "$(coded "$OUT/work/t-$name.nwc" "$STORIES")"
    read -r n pp <<< "$(nll "$OUT/work/t-$name.nwc")"
    echo "| ${name}260K | $bpw | $mse | $n | $pp |"
  done
  echo
  echo "### Codec sizes (λ 300): rate-distortion on aidreams260K's weights (held out), level 0 and 2"
  echo
  echo "| codec (width D, blocks) | parameters | level 0 bits/w | level 0 MSE | level 2 bits/w | level 2 MSE |"
  echo "|---|---:|---:|---:|---:|---:|"
  sizes=""
  for f in out/codecs/size-d16-b1 out/codecs/size-d64-b1 out/codecs/size-d128-b2 out/codecs/size-d512-b4; do
    params=$("$NWC" codec info "$f-l300.nwcc" --json | python3 -c "
import json, sys
d = json.load(sys.stdin)['config']
D, B, M, L = d['width'], d['blocks'], d['latent'], d['chunk']
coder = lambda i, o: i * D + D + B * (D * D + D + (2 * D if d['layer_norm'] else 0)) + D * o + o
print(coder(L, M) + coder(M, L) + d['levels'] * D)")
    row="| ${f##*/} | $params |"
    for q in 0 2; do
      m=$("$NWC" codec measure "$f-l300.nwcc" -m "$AIDREAMS" --level $q --json)
      row="$row $(printf '%.4f | %.4e' "$(echo "$m" | jget bits_per_weight)" "$(echo "$m" | jget mse)") |"
    done
    echo "$row"
    sizes="$sizes $(pipeline_for "$f-l300.nwcc" "${f##*/}")"
  done
  echo
  echo "### Throughput on stories260K's linears (this machine; best of 3; Mw/s = million weights per second)"
  echo
  shipped=""
  for l in $LAMBDAS; do shipped="$shipped pipelines/nwc-datafree-l$l.toml"; done
  "$BENCH" --model "$STORIES" --threads 2 --repeat 3 pipelines/rtn-4bit-g32.toml $shipped $sizes
} | tee "$RESULTS"
echo "wrote $RESULTS"
