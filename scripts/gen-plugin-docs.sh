#!/usr/bin/env bash
# Regenerates docs/plugins/ — one Markdown page per bundled plugin and README.md (the index) — from
# the plugins' own descriptors and option schemas, with a built nwc and only the build tree's
# plugins (NWC_PLUGIN_PATH is ignored). tests/integration/test_plugin_docs.cpp fails when the
# committed pages differ from what this writes.
#
#   scripts/gen-plugin-docs.sh [BUILD_DIR]      # default: build/release (`make build`)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/release}
if [ ! -d "$build" ]; then
  echo "gen-plugin-docs: build directory $build not found (build first: make build)" >&2
  exit 1
fi
build=$(cd "$build" && pwd)
nwc=$build/bin/nwc
plugins=$build/lib/nwc/plugins
if [ ! -x "$nwc" ] || [ ! -d "$plugins" ]; then
  echo "gen-plugin-docs: $nwc or $plugins not found (build nwc and every plugin first)" >&2
  exit 1
fi
out=$root/docs/plugins
mkdir -p "$out"
rm -f "$out"/*.md # pages of plugins that are gone go too
env -u NWC_PLUGIN_PATH -u NWC_PLUGIN_PATH_ONLY "$nwc" plugins show --all --markdown \
  --output-dir "$out" --no-default-plugin-path --plugin-path "$plugins" --quiet
echo "gen-plugin-docs: wrote $(ls "$out"/*.md | wc -l) pages to docs/plugins/"
