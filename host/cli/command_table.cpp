// The command table: every command of `nwc` in help order. Dispatch, `nwc --help`, the group help
// and the mpirun check all read it (dispatch.cpp). The handlers of runtime commands are compiled
// only in builds with the model runtime; without it their entries stay (so that their names get a
// clear error and the help can say what this build lacks) but have no handler.
#include "command.hpp"
#include "commands/commands.hpp"
#include "plugin_check/plugin_check.hpp"

#include <stdexcept>

namespace nwc::cli {

namespace {

#if NWC_WITH_RUNTIME
constexpr Handler kEval = &cmd_eval, kGenerate = &cmd_generate, kCalibrate = &cmd_calibrate,
                  kBench = &cmd_bench, kTrainCodec = &cmd_train_codec;
#else
constexpr Handler kEval = nullptr, kGenerate = nullptr, kCalibrate = nullptr, kBench = nullptr,
                  kTrainCodec = nullptr;
#endif

constexpr Command kCodecCommands[] = {
    {.name = "info",
     .group = "codec",
     .summary = "a codec's configuration, hash and training metadata",
     .usage = "nwc codec info FILE.nwcc",
     .handler = &cmd_codec_info},
    {.name = "measure",
     .group = "codec",
     .summary = "a codec's real rANS bits per weight on a model's linears",
     .usage = "nwc codec measure FILE.nwcc --model M [--level Q]",
     .handler = &cmd_codec_measure},
};

constexpr Command kPluginsCommands[] = {
    {.name = "list",
     .group = "plugins",
     .summary = "installed plugins and their options",
     .usage = "nwc plugins list",
     .handler = &cmd_plugins_list},
    {.name = "show",
     .group = "plugins",
     .summary = "one plugin's description and option docs, or its Markdown page",
     .usage = "nwc plugins show ID [--markdown] | nwc plugins show --all --markdown "
              "[--output-dir DIR]",
     .handler = &cmd_plugins_show},
    {.name = "check",
     .group = "plugins",
     .summary = "load and exercise plugins, each in a child process",
     .usage = "nwc plugins check ID... | --all [--set KEY=VALUE]... [--json]",
     .handler = &cmd_plugins_check},
};

constexpr Command kCommands[] = {
    {.name = "compress",
     .summary = "code a model into a container",
     .usage = "nwc compress MODEL --pipeline FILE.toml -o OUT.nwc [--calibration H.safetensors | "
              "--calibrate --tokenizer T]",
     .mpi = true,
     .handler = &cmd_compress},
    {.name = "decompress",
     .summary = "decode every tensor",
     .usage = "nwc decompress IN.nwc -o OUT.safetensors [--dtype F32|F16|BF16]",
     .handler = &cmd_decompress},
    {.name = "inspect",
     .summary = "sizes, bits/weight, MSE",
     .usage = "nwc inspect IN.nwc [--reference MODEL]",
     .handler = &cmd_inspect},
    {.name = "eval",
     .summary = "perplexity (protocol ppl-v1 or wikitext2)",
     .usage = "nwc eval --model M --tokenizer T --text FILE [--protocol ppl-v1|wikitext2] "
              "[--seq-len N] [--max-tokens N]",
     .needs_runtime = true,
     .handler = kEval},
    {.name = "generate",
     .summary = "greedy or sampled decoding",
     .usage = "nwc generate --model M --tokenizer T [--prompt S] [--steps N] [--temperature T] "
              "[--top-p P] [--seed S]",
     .needs_runtime = true,
     .handler = kGenerate},
    {.name = "tokenize",
     .summary = "the ids (and pieces) a tokenizer gives a text",
     .usage = "nwc tokenize --tokenizer T (--text FILE | --string S) [--bos] [--eos] [--pieces]",
     .handler = &cmd_tokenize},
    {.name = "calibrate",
     .summary = "per-linear input Hessians",
     .usage = "nwc calibrate --model M --tokenizer T [--text FILE] -o H.safetensors",
     .needs_runtime = true,
     .mpi = true,
     .handler = kCalibrate},
    {.name = "convert",
     .summary = "HF Llama directory or GGUF file",
     .usage = "nwc convert --model M -o OUT [--layout hf|gguf] [--dtype F32|F16|BF16]",
     .handler = &cmd_convert},
    {.name = "synth",
     .summary = "synthetic Llama checkpoint",
     .usage = "nwc synth -o DIR [--preset NAME] [--layers N] [--dim D --hidden-dim F "
              "--heads H --kv-heads K --vocab V --max-seq-len L] [--model-type T] [--head-dim N] "
              "[--attention-bias on|off] [--mlp-bias on|off] [--sliding-window N] "
              "[--rope-scaling llama3[:k=v,...]] [--seed S] [--dtype BF16|F16|F32] "
              "[--shard-size 5GB]",
     .handler = &cmd_synth},
    {.name = "bench",
     .summary = "compare pipelines",
     .usage = "nwc bench --model M --tokenizer T --pipelines a.toml b.toml ... -o results/ "
              "[--eval-text F] [--calib-text F] [--max-tokens N]",
     .needs_runtime = true,
     .handler = kBench},
    {.name = "train-codec",
     .summary = "train an NWC neural codec",
     .usage = "nwc train-codec --model M [--model M2 ...] --lambda L -o codec.nwcc [--steps N]",
     .needs_runtime = true,
     .handler = kTrainCodec},
    {.name = "codec", .summary = "a codec's metadata, its rates", .subcommands = kCodecCommands},
    {.name = "plugins",
     .summary = "installed plugins, their options, checks",
     .subcommands = kPluginsCommands},
    {.name = kPluginCheckChild,
     .summary = "one plugin's check (the child process of plugins check)",
     .usage = "nwc __plugin-check-child ID [--set KEY=VALUE]...",
     .handler = &cmd_plugin_check_child,
     .hidden = true},
};

// Every command has a handler, a group has subcommands instead, and only runtime commands lack
// a handler, in builds without the runtime. Checked when the table is first used (comparing
// function addresses is not a constant expression under the sanitizers).
bool consistent(std::span<const Command> table) {
  for (const auto &c : table) {
    if (c.is_group() ? c.handler != nullptr || !consistent(c.subcommands)
                     : c.handler == nullptr && !(c.needs_runtime && !NWC_WITH_RUNTIME))
      return false;
  }
  return true;
}

} // namespace

std::span<const Command> commands() {
  static const bool checked = consistent(kCommands);
  if (!checked) throw std::logic_error("nwc: the command table has a command without a handler");
  return kCommands;
}

} // namespace nwc::cli
