#!/usr/bin/env bash
# The SDK as a package, end to end (registered with CTest by tests/consumer/CMakeLists.txt):
#   1. `cmake --install` the build tree under test into a temporary prefix and check the layout
#      (nwc, headers, plugins, codecs, pipelines, CMake package, pkg-config file);
#   2. configure and build examples/plugin-template against that prefix (find_package(nwc)),
#      check the plugin exports only nwc_module_entry, run its tests (a quantizer and the guide's
#      entropy coder over the installed harness), install them into a prefix of its own;
#   3. run the installed nwc with the template on NWC_PLUGIN_PATH: plugins show, compress,
#      inspect, decompress and eval on stories260K with the template's pipeline;
#   4. rebuild the template claiming other plugin ABI versions and check the host applies the rules
#      of docs/abi.md: an older minor (1.0) and a newer minor (1.99) load and work, another major
#      (2.0) is refused with a message naming the host's ABI.
# Configuration comes from the environment set by CTest (NWC_CONSUMER_*); the data directory is
# NWC_DATA, else the build's default (../shared/data next to the source tree).
set -euo pipefail

: "${NWC_CONSUMER_SOURCE_DIR:?}" "${NWC_CONSUMER_BUILD_DIR:?}" "${NWC_CONSUMER_WORK_DIR:?}"
CMAKE=${NWC_CONSUMER_CMAKE:-cmake}
GENERATOR=${NWC_CONSUMER_GENERATOR:-Ninja}
SRC=$NWC_CONSUMER_SOURCE_DIR
TEMPLATE=$SRC/examples/plugin-template
W=$NWC_CONSUMER_WORK_DIR
PREFIX=$W/prefix
TB=$W/template-build
DATA=${NWC_DATA:-${NWC_CONSUMER_DEFAULT_DATA:-$SRC/../shared/data}}
MODEL=$DATA/models/stories260K/stories260K.bin
TOKENIZER=$DATA/models/stories260K/tok512.bin
TEXT=$DATA/text/tinystories-eval.txt
START=$SECONDS

step() { printf '[consumer %3ds] %s\n' "$((SECONDS - START))" "$*"; }
fail() {
  printf 'FAIL: %s\n' "$1" >&2
  if [[ $# -ge 2 && -f $2 ]]; then
    printf -- '--- last lines of %s ---\n' "$2" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}
# run LOG CMD...: runs CMD with stdout+stderr in LOG; on a nonzero exit, fails showing LOG.
run() {
  local log=$1
  shift
  local rc=0
  "$@" >"$log" 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || fail "exit $rc from: $*" "$log"
}
need_file() { [[ -f $1 ]] || fail "missing after install: $1"; }

for f in "$MODEL" "$TOKENIZER" "$TEXT"; do
  [[ -f $f ]] || fail "data file not found: $f (set NWC_DATA to the shared data directory)"
done

rm -rf "$W"
mkdir -p "$W"

# ---- 1. install the build tree under test -------------------------------------------------------
step "cmake --install $NWC_CONSUMER_BUILD_DIR --prefix $PREFIX"
run "$W/install.log" "$CMAKE" --install "$NWC_CONSUMER_BUILD_DIR" --prefix "$PREFIX"
NWC=$PREFIX/bin/nwc
[[ -x $NWC ]] || fail "installed nwc is missing or not executable: $NWC"
need_file "$PREFIX/include/nwc/nwc.h"
need_file "$PREFIX/include/nwc/abi.h"
need_file "$PREFIX/include/nwc/cpp/plugin.hpp"
for f in nwcConfig.cmake nwcConfigVersion.cmake nwcTargets.cmake NwcPluginLibrary.cmake \
  nwc-plugin.map; do
  need_file "$PREFIX/lib/cmake/nwc/$f"
done
need_file "$PREFIX/lib/pkgconfig/nwc-sdk.pc"
for p in group uniform raw rans none; do need_file "$PREFIX/lib/nwc/plugins/nwc-$p.so"; done
for f in "$SRC"/pipelines/*.toml; do need_file "$PREFIX/share/nwc/pipelines/$(basename "$f")"; done
[[ -d $PREFIX/share/nwc/codecs ]] || fail "missing after install: $PREFIX/share/nwc/codecs/"
shopt -s nullglob
for f in "$SRC"/codecs/*.nwcc; do need_file "$PREFIX/share/nwc/codecs/$(basename "$f")"; done
extra=$(find "$PREFIX/share/nwc/codecs" -type f ! -name '*.nwcc')
[[ -z $extra ]] || fail "files other than *.nwcc installed under share/nwc/codecs: $extra"
shopt -u nullglob

# pkg-config: the include directory of this prefix, the project's version.
if command -v pkg-config >/dev/null; then
  PC=(env PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig" PKG_CONFIG_ALLOW_SYSTEM_CFLAGS=1 pkg-config)
  cflags=$("${PC[@]}" --cflags nwc-sdk) || fail "pkg-config --cflags nwc-sdk failed"
  incdir=${cflags#-I}
  incdir=${incdir%% *}
  [[ $(realpath "$incdir") == $(realpath "$PREFIX/include") ]] ||
    fail "pkg-config nwc-sdk: Cflags '$cflags' do not name $PREFIX/include"
  want_version=$(sed -n 's/^project(nwc VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
  got_version=$("${PC[@]}" --modversion nwc-sdk)
  [[ $got_version == "$want_version" ]] ||
    fail "pkg-config nwc-sdk: version '$got_version', expected '$want_version'"
  # The ABI headers are C11: a C translation unit compiles with nothing but the .pc's flags.
  echo '#include "nwc/nwc.h"' >"$W/pc_check.c"
  run "$W/pc_check.log" "${NWC_CONSUMER_CXX:-c++}" -x c -std=c11 -fsyntax-only $cflags \
    "$W/pc_check.c"
fi

# ---- 2. the out-of-tree template against the installed prefix -----------------------------------
configure_template() { # BUILD_DIR LOG [extra cmake args...]
  local dir=$1 log=$2
  shift 2
  local args=(-S "$TEMPLATE" -B "$dir" -G "$GENERATOR" -DCMAKE_PREFIX_PATH="$PREFIX"
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF -DCMAKE_BUILD_TYPE="${NWC_CONSUMER_BUILD_TYPE:-Release}"
    -DCMAKE_CXX_FLAGS="${NWC_CONSUMER_CXX_FLAGS:-}" -DCMAKE_INSTALL_PREFIX="$W/template-prefix")
  [[ -n ${NWC_CONSUMER_MAKE_PROGRAM:-} ]] && args+=(-DCMAKE_MAKE_PROGRAM="$NWC_CONSUMER_MAKE_PROGRAM")
  [[ -n ${NWC_CONSUMER_CXX:-} ]] && args+=(-DCMAKE_CXX_COMPILER="$NWC_CONSUMER_CXX")
  [[ -n ${NWC_CONSUMER_CXX_LAUNCHER:-} ]] &&
    args+=(-DCMAKE_CXX_COMPILER_LAUNCHER="$NWC_CONSUMER_CXX_LAUNCHER")
  run "$log" "$CMAKE" "${args[@]}" "$@"
}

step "configure examples/plugin-template with CMAKE_PREFIX_PATH=$PREFIX"
configure_template "$TB" "$W/template-configure.log"
nwc_dir=$(sed -n 's/^nwc_DIR:PATH=//p' "$TB/CMakeCache.txt")
[[ $(realpath "$nwc_dir") == $(realpath "$PREFIX/lib/cmake/nwc") ]] ||
  fail "find_package(nwc) used '$nwc_dir', not the installed $PREFIX/lib/cmake/nwc"
step "build the template"
run "$W/template-build.log" "$CMAKE" --build "$TB"
SO=$TB/nwc-signmag.so
[[ -f $SO ]] || fail "template build did not produce $SO" "$W/template-build.log"
exported=$(nm -D --defined-only "$SO" | awk '{print $NF}' | sort -u)
[[ $exported == nwc_module_entry ]] ||
  fail "nwc-signmag.so must export only nwc_module_entry, exports: $(echo $exported)"
step "the template's own test, over the installed nwc/testing/stage_harness.hpp"
[[ -f $PREFIX/include/nwc/testing/stage_harness.hpp ]] ||
  fail "the SDK install lacks include/nwc/testing/stage_harness.hpp"
run "$W/template-test.log" "${NWC_CONSUMER_CTEST:-ctest}" --test-dir "$TB" --output-on-failure
grep -q "test_signmag: all checks passed" "$TB/Testing/Temporary/LastTest.log" ||
  fail "test_signmag did not report its checks" "$W/template-test.log"
grep -q "test_varint: all checks passed" "$TB/Testing/Temporary/LastTest.log" ||
  fail "test_varint (the guide's entropy coder) did not report its checks" "$W/template-test.log"
grep -q "fuzz_replay: [1-9][0-9]* inputs ran" "$TB/Testing/Temporary/LastTest.log" ||
  fail "fuzz_varint_replay (the fuzz-target template) did not replay its corpus" \
    "$W/template-test.log"
# The fuzz-target template under libFuzzer, when clang is here: a short run from the corpus.
CLANGXX=${NWC_CONSUMER_CLANGXX:-$(command -v clang++-14 || command -v clang++ || true)}
if [[ -n $CLANGXX ]]; then
  step "the fuzz-target template with libFuzzer ($CLANGXX)"
  NWC_CONSUMER_CXX=$CLANGXX NWC_CONSUMER_CXX_LAUNCHER="" NWC_CONSUMER_CXX_FLAGS="" \
    configure_template "$W/template-fuzz" "$W/template-fuzz-configure.log" -DTEMPLATE_FUZZ=ON
  run "$W/template-fuzz-build.log" "$CMAKE" --build "$W/template-fuzz" --target fuzz_varint
  cp -r "$TEMPLATE/tests/corpus/varint" "$W/fuzz-corpus"
  run "$W/template-fuzz-run.log" "$W/template-fuzz/fuzz_varint" -runs=20000 -seed=1 \
    "$W/fuzz-corpus"
  grep -q "Done 20000 runs" "$W/template-fuzz-run.log" ||
    fail "fuzz_varint did not complete its runs" "$W/template-fuzz-run.log"
fi
run "$W/template-install.log" "$CMAKE" --install "$TB"
for so in nwc-signmag.so nwc-varint.so; do
  [[ -f $W/template-prefix/lib/nwc/plugins/$so ]] ||
    fail "template install did not put $so under <prefix>/lib/nwc/plugins" "$W/template-install.log"
done

# ---- 3. the installed nwc with the out-of-tree plugin ---------------------------------------------
unset NWC_PLUGIN_PATH_ONLY
export NWC_PLUGIN_PATH=$TB

step "nwc plugins check org.example.entropy.varint (the guide's entropy coder)"
run "$W/check-varint.log" "$NWC" plugins check org.example.entropy.varint
step "nwc plugins show org.example.quant.signmag"
run "$W/show.log" "$NWC" plugins show org.example.quant.signmag
grep -q '^org\.example\.quant\.signmag 1\.0\.0 (quantizer' "$W/show.log" ||
  fail "plugins show: no 'org.example.quant.signmag 1.0.0 (quantizer' header" "$W/show.log"
grep -q "$SO" "$W/show.log" || fail "plugins show: library path is not $SO" "$W/show.log"
grep -Eq '^ +bits \(int, default 4, 2\.\.8' "$W/show.log" ||
  fail "plugins show: option 'bits' (int, default 4, 2..8) not listed" "$W/show.log"
# The shipped plugins come from the installed prefix (install-relative discovery).
run "$W/show-rans.log" "$NWC" plugins show nwc.entropy.rans
grep -q "lib/nwc/plugins/nwc-rans.so" "$W/show-rans.log" && grep -q "$PREFIX" "$W/show-rans.log" ||
  fail "nwc.entropy.rans is not loaded from $PREFIX/lib/nwc/plugins" "$W/show-rans.log"

PIPELINE=$TEMPLATE/signmag-4bit-g32.toml
step "nwc compress stories260K with $(basename "$PIPELINE")"
run "$W/compress.log" "$NWC" compress "$MODEL" --pipeline "$PIPELINE" -o "$W/s.nwc" --quiet
[[ -s $W/s.nwc ]] || fail "compress wrote no container" "$W/compress.log"
run "$W/inspect.log" "$NWC" inspect "$W/s.nwc" --json
grep -q 'org.example.quant.signmag' "$W/inspect.log" ||
  fail "inspect: the container does not name org.example.quant.signmag" "$W/inspect.log"
step "nwc decompress"
run "$W/decompress.log" "$NWC" decompress "$W/s.nwc" -o "$W/s.safetensors"
[[ -s $W/s.safetensors ]] || fail "decompress wrote no safetensors file" "$W/decompress.log"
step "nwc eval --max-tokens 2048"
run "$W/eval.log" "$NWC" eval --model "$W/s.nwc" --tokenizer "$TOKENIZER" --text "$TEXT" \
  --max-tokens 2048
grep -Eiq 'nll' "$W/eval.log" || fail "eval printed no nll line" "$W/eval.log"
nll=$(grep -Eio 'nll[^0-9]*[0-9]+\.[0-9]+' "$W/eval.log" | head -n1 | grep -Eo '[0-9]+\.[0-9]+$' || true)
[[ -n $nll ]] || fail "eval: cannot read the nll value" "$W/eval.log"
# stories260K itself is ~1.5 nats/token; a broken quantizer gives several nats.
awk -v n="$nll" 'BEGIN { exit !(n > 0 && n < 3) }' ||
  fail "eval: nll $nll of the 4-bit signmag model is not in (0, 3)" "$W/eval.log"
step "eval nll = $nll"

# ---- 4. ABI version rules (docs/abi.md) --------------------------------------------------------
TA=$W/template-abi
for claim in 1.0 1.99 2.0; do
  step "template claiming plugin ABI $claim"
  configure_template "$TA" "$W/abi-$claim-configure.log" -DTEMPLATE_CLAIM_ABI="$claim"
  grep -q "claims plugin ABI $claim" "$W/abi-$claim-configure.log" ||
    fail "template configure did not apply TEMPLATE_CLAIM_ABI=$claim" "$W/abi-$claim-configure.log"
  run "$W/abi-$claim-build.log" "$CMAKE" --build "$TA"
  mkdir -p "$W/abi-$claim"
  cp "$TA/nwc-signmag.so" "$W/abi-$claim/"
  export NWC_PLUGIN_PATH=$W/abi-$claim
  log=$W/abi-$claim-list.log
  json=$W/abi-$claim-list.json
  run "$log" "$NWC" plugins list
  run "$json" "$NWC" plugins list --json
  case $claim in
  1.*) # same major: an older or newer minor loads (rule 2), without any diagnostic
    grep -q '"id": "org.example.quant.signmag"' "$json" ||
      fail "a plugin built for ABI $claim is not listed (same major must load)" "$json"
    if grep 'nwc-signmag.so' "$log" | grep -q 'skipped'; then
      fail "a plugin built for ABI $claim was skipped" "$log"
    fi
    # ... and it works: same pipeline, same bytes as the build with the installed headers' ABI.
    run "$W/abi-$claim-compress.log" "$NWC" compress "$MODEL" --pipeline "$PIPELINE" \
      -o "$W/abi-$claim.nwc" --quiet
    cmp -s "$W/s.nwc" "$W/abi-$claim.nwc" ||
      fail "ABI $claim build of the plugin wrote a different container than the default build"
    ;;
  *) # another major: refused with a clear message, never listed
    if grep -q '"id": "org.example.quant.signmag"' "$json"; then
      fail "a plugin built for ABI $claim was loaded (another major must be refused)" "$json"
    fi
    grep -q '"message": "nwc_module_entry refused host ABI 1\.[0-9]*"' "$json" ||
      fail "plugins list --json: no problem entry refusing the ABI $claim plugin" "$json"
    grep -q "nwc-signmag.so: nwc_module_entry refused host ABI 1\.[0-9]*; skipped" "$log" ||
      fail "plugins list: no warning refusing the plugin built for ABI $claim" "$log"
    ;;
  esac
done

step "passed"
