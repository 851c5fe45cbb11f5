// nwc synth -o DIR [--preset NAME] [architecture overrides and variants] [--seed S] [--dtype D]
// [--shard-size N]
#include "commands/commands.hpp"
#include "common.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/tools/synth.hpp"

#include <iostream>

namespace nwc::cli {

namespace {

struct SynthFlags {
  std::string out, preset = "tiny", dtype_text = "BF16", shard_size = "0", tied;
  std::string model_type, attention_bias, mlp_bias, rope_scaling;
  int64_t layers = 0, dim = 0, hidden = 0, heads = 0, kv_heads = 0, vocab = 0, seq = 0;
  int64_t head_dim = 0, sliding_window = 0;
  uint64_t seed = 0;
};

void add_synth_options(po::options_description &d, SynthFlags &f) {
  d.add_options()("output,o", po::value(&f.out)->required(), "output directory (HF Llama layout)")(
      "preset", po::value(&f.preset)->default_value("tiny"),
      "tiny, small, llama2-7b, llama3-8b, llama3-8b-block, llama3.2-1b, llama3.1-8b, mistral-7b, "
      "qwen2.5-0.5b or qwen3-0.6b")("layers", po::value(&f.layers),
                                    "decoder layers (overrides the preset)")(
      "dim", po::value(&f.dim), "hidden size")("hidden-dim", po::value(&f.hidden), "MLP size")(
      "heads", po::value(&f.heads), "attention heads")("kv-heads", po::value(&f.kv_heads),
                                                       "key/value heads")(
      "vocab", po::value(&f.vocab), "vocabulary size")("max-seq-len", po::value(&f.seq),
                                                       "max_position_embeddings")(
      "tied-embeddings", po::value(&f.tied), "on or off: lm_head shares the embedding")(
      "model-type", po::value(&f.model_type),
      "llama, mistral, qwen2 (q/k/v biases) or qwen3 (q/k norms)")(
      "head-dim", po::value(&f.head_dim), "size of one attention head (default dim / heads)")(
      "attention-bias", po::value(&f.attention_bias), "on or off: q/k/v/o biases (llama, qwen3)")(
      "mlp-bias", po::value(&f.mlp_bias), "on or off: gate/up/down biases (llama)")(
      "sliding-window", po::value(&f.sliding_window),
      "keys a query sees, itself included (mistral; 0 = all)")(
      "rope-scaling", po::value(&f.rope_scaling),
      "none, llama3 or llama3:factor=8,low_freq_factor=1,high_freq_factor=4,"
      "original_max_position_embeddings=8192")("seed", po::value(&f.seed)->default_value(0),
                                               "random seed (same seed, same bytes)")(
      "dtype", po::value(&f.dtype_text)->default_value("BF16"),
      "BF16, F16 or F32")("shard-size", po::value(&f.shard_size)->default_value("0"),
                          "bytes per shard, e.g. 5GB or 500MiB (0 = one model.safetensors)");
}

// The preset with the overrides given on the command line; every value checked up front (a bad
// one is a usage error naming the option).
tools::SynthSpec synth_spec(const SynthFlags &f, const po::variables_map &vm, unsigned threads) {
  tools::SynthSpec spec;
  try {
    spec = tools::synth_preset(f.preset);
  } catch (const Error &e) {
    throw UsageError(std::string("--preset: ") + e.what());
  }
  auto over = [&](const char *flag, int64_t v, int64_t &field) {
    if (!vm.count(flag)) return;
    if (v < 1)
      throw UsageError(std::string("--") + flag + ": expected >= 1, got " + std::to_string(v));
    field = v;
    spec.preset = f.preset + " (modified)";
  };
  over("layers", f.layers, spec.arch.n_layers);
  over("dim", f.dim, spec.arch.dim);
  over("hidden-dim", f.hidden, spec.arch.hidden_dim);
  over("heads", f.heads, spec.arch.n_heads);
  over("kv-heads", f.kv_heads, spec.arch.n_kv_heads);
  over("vocab", f.vocab, spec.arch.vocab_size);
  over("max-seq-len", f.seq, spec.arch.max_seq_len);
  auto on_off = [&](const char *flag, const std::string &v, bool &field) {
    if (!vm.count(flag)) return;
    if (v != "on" && v != "off")
      throw UsageError(std::string("--") + flag + ": expected on or off, got '" + v + "'");
    field = v == "on";
    spec.preset = f.preset + " (modified)";
  };
  on_off("tied-embeddings", f.tied, spec.arch.tied_embeddings);
  // The model type first: it sets the biases and norms the type implies, which the flags below
  // may then change where the type allows.
  if (vm.count("model-type")) {
    try {
      tools::set_synth_model_type(spec.arch, f.model_type);
    } catch (const Error &e) {
      throw UsageError(std::string("--model-type: ") + e.what());
    }
    spec.preset = f.preset + " (modified)";
  }
  over("head-dim", f.head_dim, spec.arch.head_dim);
  on_off("attention-bias", f.attention_bias, spec.arch.attention_bias);
  if (vm.count("attention-bias")) spec.arch.attention_out_bias = spec.arch.attention_bias;
  on_off("mlp-bias", f.mlp_bias, spec.arch.mlp_bias);
  if (vm.count("sliding-window")) {
    if (f.sliding_window < 0)
      throw UsageError("--sliding-window: expected >= 0, got " + std::to_string(f.sliding_window));
    spec.arch.sliding_window = f.sliding_window;
    spec.preset = f.preset + " (modified)";
  }
  if (vm.count("rope-scaling")) {
    try {
      spec.arch.rope_scaling = tools::parse_rope_scaling(f.rope_scaling);
    } catch (const Error &e) {
      throw UsageError(std::string("--rope-scaling: ") + e.what());
    }
    spec.preset = f.preset + " (modified)";
  }
  spec.seed = f.seed;
  spec.dtype = parse_output_dtype(f.dtype_text);
  try {
    spec.shard_bytes = tools::parse_byte_size(f.shard_size);
  } catch (const Error &e) {
    throw UsageError(std::string("--shard-size: ") + e.what());
  }
  spec.threads = threads;
  try {
    tools::plan_synthetic_model(spec);
  } catch (const Error &e) {
    throw UsageError(e.what());
  }
  return spec;
}

void print_synth(const tools::SynthSpec &spec, const tools::SynthResult &r, const Common &c) {
  const double mbps = r.seconds > 0 ? static_cast<double>(r.file_bytes) / 1e6 / r.seconds : 0;
  if (c.json) {
    print_json({{"output", r.dir.string()},
                {"preset", spec.preset},
                {"seed", spec.seed},
                {"dtype", std::string(dtype_name(spec.dtype))},
                {"architecture", spec.arch.to_json()},
                {"files", r.files},
                {"tensors", r.tensors},
                {"parameters", r.parameters},
                {"data_bytes", r.data_bytes},
                {"bytes", r.file_bytes},
                {"seconds", r.seconds},
                {"mb_per_second", mbps}});
  } else if (!c.quiet) {
    std::cout << "wrote " << r.dir.string() << ": " << r.tensors << " tensors, " << r.parameters
              << " parameters, " << r.file_bytes << " bytes (" << dtype_name(spec.dtype) << ", "
              << r.files.size() << (r.files.size() == 1 ? " file" : " files") << ") in "
              << fmt(r.seconds, 2) << " s (" << fmt(mbps, 1) << " MB/s)\n";
  }
}

} // namespace

int cmd_synth(const Command &self, const Args &args) {
  Common c;
  SynthFlags f;
  po::options_description d(self.title());
  add_synth_options(d, f);
  add_common(d, c);
  auto vm = parse(args, d, {}, self.usage);
  const tools::SynthSpec spec = synth_spec(f, vm, c.threads);
  Progress prog(!c.quiet && !c.json, "synth");
  print_synth(spec, tools::write_synthetic_model(spec, f.out, std::ref(prog)), c);
  return 0;
}

} // namespace nwc::cli
