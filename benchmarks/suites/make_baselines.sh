#!/usr/bin/env bash
# Writes the baseline suite (one pipeline file per point) into baselines/. The files are committed;
# rerun this after changing the grid. Used by: nwc bench --pipelines benchmarks/suites/baselines
#
# RTN, GPTQ and LDLQ use GPTQ's grid (nwc.quant.uniform grid "gptq": range containing 0, fp16
# scale, integer zero point of `bits` bits), the grid of GPTQ's reference code and of the
# AutoGPTQ/GPTQModel checkpoints the field runs. The *-minmax points keep nwc's float-offset
# min/max grid (grid "offset", fp16 scale + fp16 offset) at g32/g128, 3 and 4 bits, so both
# grids appear in a comparison. HQQ points use nwc.quant.hqq with round_zero at 4 bits, as
# hqq_base_quant_config, in the same 128-column blocks as RTN (same groups and padding; HQQ's early
# stop then looks at one block instead of the whole tensor, see plugins/quantizer/hqq/README.md).
# GPTQ and LDLQ calibrate sequentially as GPTQ's reference code does ([calibration] mode =
# "sequential": each linear's Hessian from the model with everything before it coded); the
# gptq-ao-*-orig points take every Hessian from the original model instead, to show the difference.
# The *-had points add incoherence processing (QuIP#'s randomized Hadamard transform,
# nwc.rotation.hadamard, both sides, seed 0) in front of the same chains; their GPTQ runs without
# act-order, as QuIP# does (after the transform the Hessian's diagonal is nearly flat, so the column
# order has nothing to go by), and their LDLQ is QuIP#'s LDLQ on incoherent weights with a scalar
# grid instead of the E8 lattice codebook.
# The gptq-aod-* points are GPTQ's act-order with dynamic groups (the reference's actorder=True
# without static_groups, GPTQModel's desc_act default): nwc.rotation.act_order permutes the columns
# by decreasing Hessian diagonal and GPTQ codes them in that order; gptq-ao-* keep static groups.
# The awq-* points run AWQ's scale and clipping search ([awq], AutoAWQ's defaults; its search grid
# takes bits and group from the quantizer and chunker) before RTN or sequential GPTQ act-order.
set -euo pipefail
cd "$(dirname "$0")"
out=baselines
rm -f "$out"/*.toml
mkdir -p "$out"
head() { # name method
  printf '[pipeline]\nname = "%s"\nmethod = "%s"\nselect = ["model.layers.*_proj.weight"]\n\n' "$1" "$2"
}
uniform() { # group bits entropy [grid]
  printf '[chunker]\nplugin = "nwc.chunk.group"\ngroup = %s\n\n[quantizer]\nplugin = "nwc.quant.uniform"\nbits = %s\ngrid = "%s"\n\n[entropy]\nplugin = "%s"\n\n' "$1" "$2" "${4:-gptq}" "$3"
}
none() { printf '[compensator]\nplugin = "nwc.comp.none"\nblock = 128\n'; }
hadamard() { printf '[rotation]\nplugin = "nwc.rotation.hadamard"\n\n'; }
gptq_plain() { # group: GPTQ in column order, sequential calibration
  printf '[compensator]\nplugin = "nwc.comp.gptq"\ngroup = %s\nblock = 128\nact_order = false\n' "$1"
  sequential
}
sequential() { printf '\n[calibration]\nmode = "sequential"\n'; }
awq() { printf '\n[awq]\n'; }
gptq_ao() { # group [original]
  printf '[compensator]\nplugin = "nwc.comp.gptq"\ngroup = %s\nblock = 128\nact_order = true\n' "$1"
  [ "${2:-}" = original ] || sequential
}
for g in 32 64 128; do
  for b in 2 3 4 5 6 8; do
    { head "rtn-g$g-${b}b" "RTN g$g"; uniform "$g" "$b" nwc.entropy.raw; none; } >"$out/rtn-g$g-${b}b.toml"
  done
done
for g in 32 128; do
  for b in 2 3 4 6; do
    { head "gptq-ao-g$g-${b}b" "GPTQ act-order g$g"; uniform "$g" "$b" nwc.entropy.raw; gptq_ao "$g"; } \
      >"$out/gptq-ao-g$g-${b}b.toml"
  done
  for b in 3 4; do
    { head "gptq-ao-g$g-${b}b-orig" "GPTQ act-order g$g (Hessians of the original model)"
      uniform "$g" "$b" nwc.entropy.raw; gptq_ao "$g" original; } >"$out/gptq-ao-g$g-${b}b-orig.toml"
    { head "rtn-g$g-${b}b-minmax" "RTN g$g (min/max grid, fp16 offset)"
      uniform "$g" "$b" nwc.entropy.raw offset; none; } >"$out/rtn-g$g-${b}b-minmax.toml"
    { head "gptq-ao-g$g-${b}b-minmax" "GPTQ act-order g$g (min/max grid, fp16 offset)"
      uniform "$g" "$b" nwc.entropy.raw offset; gptq_ao "$g"; } >"$out/gptq-ao-g$g-${b}b-minmax.toml"
  done
done
for b in 3 4; do
  for g in 32 128; do
    { head "awq-rtn-g$g-${b}b" "AWQ + RTN g$g"; uniform "$g" "$b" nwc.entropy.raw; none; awq; } \
      >"$out/awq-rtn-g$g-${b}b.toml"
  done
  { head "awq-gptq-g128-${b}b" "AWQ + GPTQ act-order g128"; uniform 128 "$b" nwc.entropy.raw
    gptq_ao 128; awq; } >"$out/awq-gptq-g128-${b}b.toml"
done
for b in 2 3 4; do
  { head "rtn-g32-${b}b-rans" "RTN g32 + rANS"; uniform 32 "$b" nwc.entropy.rans; none; } \
    >"$out/rtn-g32-${b}b-rans.toml"
  { head "gptq-ao-g32-${b}b-rans" "GPTQ act-order g32 + rANS"; uniform 32 "$b" nwc.entropy.rans; gptq_ao 32; } \
    >"$out/gptq-ao-g32-${b}b-rans.toml"
  { head "ldlq-g32-${b}b" "LDLQ g32 (block 32)"; uniform 32 "$b" nwc.entropy.raw
    printf '[compensator]\nplugin = "nwc.comp.ldlq"\nblock = 32\n'; sequential; } >"$out/ldlq-g32-${b}b.toml"
done
for g in 32 128; do
  for b in 3 4; do
    { head "rtn-had-g$g-${b}b" "RTN g$g + Hadamard"; hadamard; uniform "$g" "$b" nwc.entropy.raw; none; } \
      >"$out/rtn-had-g$g-${b}b.toml"
    { head "gptq-had-g$g-${b}b" "GPTQ g$g + Hadamard"; hadamard; uniform "$g" "$b" nwc.entropy.raw
      gptq_plain "$g"; } >"$out/gptq-had-g$g-${b}b.toml"
  done
done
for g in 32 128; do
  for b in 3 4; do
    { head "gptq-aod-g$g-${b}b" "GPTQ act-order g$g, dynamic groups"
      printf '[rotation]\nplugin = "nwc.rotation.act_order"\n\n'; uniform "$g" "$b" nwc.entropy.raw
      gptq_plain "$g"; } >"$out/gptq-aod-g$g-${b}b.toml"
  done
done
for b in 2 3 4; do
  { head "ldlq-had-g32-${b}b" "LDLQ g32 (block 32) + Hadamard"; hadamard; uniform 32 "$b" nwc.entropy.raw
    printf '[compensator]\nplugin = "nwc.comp.ldlq"\nblock = 32\n'; sequential; } >"$out/ldlq-had-g32-${b}b.toml"
done
for g in 32 64 128; do
  for b in 3 4; do
    rz=$([ "$b" = 4 ] && echo true || echo false)
    { head "hqq-g$g-${b}b" "HQQ g$g"
      printf '[chunker]\nplugin = "nwc.chunk.group"\ngroup = %s\n\n[quantizer]\nplugin = "nwc.quant.hqq"\nbits = %s\nround_zero = %s\n\n[entropy]\nplugin = "nwc.entropy.raw"\n\n' "$g" "$b" "$rz"
      none; } >"$out/hqq-g$g-${b}b.toml"
  done
done
for dq in false true; do
  name=nf4-g64$([ "$dq" = true ] && echo -dq || true)
  { head "$name" "NF4 g64$([ "$dq" = true ] && echo ' + double quant' || true)"
    printf '[chunker]\nplugin = "nwc.chunk.group"\ngroup = 64\n\n[quantizer]\nplugin = "nwc.quant.nf4"\ndouble_quant = %s\n\n[entropy]\nplugin = "nwc.entropy.raw"\n' "$dq"; } >"$out/$name.toml"
done
# Lossless reference: every tensor rounded to fp16 and zstd-compressed, nothing quantized.
printf '[pipeline]\nname = "zstd-fp16"\nmethod = "zstd fp16 (lossless ref.)"\nselect = []\nunselected = "zstd-f16"\n' >"$out/zstd-fp16.toml"
ls "$out" | wc -l
