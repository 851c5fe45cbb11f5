#!/usr/bin/env bash
# Writes the baseline suite (one pipeline file per point) into baselines/. The files are committed;
# rerun this after changing the grid. Used by: nwc bench --pipelines benchmarks/suites/baselines
set -euo pipefail
cd "$(dirname "$0")"
out=baselines
rm -f "$out"/*.toml
mkdir -p "$out"
head() { # name method
  printf '[pipeline]\nname = "%s"\nmethod = "%s"\nselect = ["model.layers.*_proj.weight"]\n\n' "$1" "$2"
}
uniform() { # group bits entropy
  printf '[chunker]\nplugin = "nwc.chunk.group"\ngroup = %s\n\n[quantizer]\nplugin = "nwc.quant.uniform"\nbits = %s\n\n[entropy]\nplugin = "%s"\n\n' "$1" "$2" "$3"
}
for g in 32 64 128; do
  for b in 2 3 4 5 6 8; do
    f="$out/rtn-g$g-${b}b.toml"
    { head "rtn-g$g-${b}b" "RTN g$g"; uniform "$g" "$b" nwc.entropy.raw
      printf '[compensator]\nplugin = "nwc.comp.none"\nblock = 128\n'; } >"$f"
  done
done
for g in 32 128; do
  for b in 2 3 4 6; do
    f="$out/gptq-ao-g$g-${b}b.toml"
    { head "gptq-ao-g$g-${b}b" "GPTQ act-order g$g"; uniform "$g" "$b" nwc.entropy.raw
      printf '[compensator]\nplugin = "nwc.comp.gptq"\ngroup = %s\nblock = 128\nact_order = true\n' "$g"; } >"$f"
  done
done
for b in 2 3 4; do
  { head "rtn-g32-${b}b-rans" "RTN g32 + rANS"; uniform 32 "$b" nwc.entropy.rans
    printf '[compensator]\nplugin = "nwc.comp.none"\nblock = 128\n'; } >"$out/rtn-g32-${b}b-rans.toml"
  { head "gptq-ao-g32-${b}b-rans" "GPTQ act-order g32 + rANS"; uniform 32 "$b" nwc.entropy.rans
    printf '[compensator]\nplugin = "nwc.comp.gptq"\ngroup = 32\nblock = 128\nact_order = true\n'; } >"$out/gptq-ao-g32-${b}b-rans.toml"
  { head "ldlq-g32-${b}b" "LDLQ g32 (block 32)"; uniform 32 "$b" nwc.entropy.raw
    printf '[compensator]\nplugin = "nwc.comp.ldlq"\nblock = 32\n'; } >"$out/ldlq-g32-${b}b.toml"
done
for dq in false true; do
  name=nf4-g64$([ "$dq" = true ] && echo -dq || true)
  { head "$name" "NF4 g64$([ "$dq" = true ] && echo ' + double quant' || true)"
    printf '[chunker]\nplugin = "nwc.chunk.group"\ngroup = 64\n\n[quantizer]\nplugin = "nwc.quant.nf4"\ndouble_quant = %s\n\n[entropy]\nplugin = "nwc.entropy.raw"\n' "$dq"; } >"$out/$name.toml"
done
# Lossless reference: every tensor rounded to fp16 and zstd-compressed, nothing quantized.
printf '[pipeline]\nname = "zstd-fp16"\nmethod = "zstd fp16 (lossless ref.)"\nselect = []\nunselected = "zstd-f16"\n' >"$out/zstd-fp16.toml"
ls "$out" | wc -l
