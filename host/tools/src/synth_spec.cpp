// synth_spec.cpp — what a synthetic checkpoint is: presets (tiny … llama3-8b, the model types'
// shapes), the model types and Llama 3 RoPE scaling of `nwc synth`, the checks of a SynthSpec and
// byte sizes. The generator and the writer are synth.cpp.
#include "nwc/tools/synth.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

#include <cctype>
#include <climits>
#include <cmath>
#include <cstring>
#include <map>

namespace nwc::tools {

namespace {

constexpr int64_t kMaxDim = int64_t{1} << 24; // any one dimension (the generator's counters stay
                                              // below 2^32)
constexpr int64_t kMaxLayers = 100000;

} // namespace

std::vector<std::string> synth_preset_names() {
  return {"tiny",        "small",       "llama2-7b",  "llama3-8b",    "llama3-8b-block",
          "llama3.2-1b", "llama3.1-8b", "mistral-7b", "qwen2.5-0.5b", "qwen3-0.6b"};
}

std::vector<std::string> synth_model_types() {
  return {"llama", "mistral", "qwen2", "qwen3"};
}

void set_synth_model_type(Architecture &a, const std::string &type) {
  const auto types = synth_model_types();
  if (std::find(types.begin(), types.end(), type) == types.end()) {
    std::string list;
    for (const auto &n : types) list += (list.empty() ? "" : ", ") + n;
    fail(NWC_E_INVALID_ARG,
         "synth: model_type (--model-type) '" + type + "' is not one of " + list);
  }
  a.family = type;
  a.attention_bias = type == "qwen2";
  a.attention_out_bias = false;
  a.mlp_bias = false;
  a.qk_norm = type == "qwen3";
  if (type != "mistral") a.sliding_window = 0;
}

RopeScaling llama3_rope_scaling() {
  RopeScaling r;
  r.type = "llama3";
  r.factor = 8.0;
  r.low_freq_factor = 1.0;
  r.high_freq_factor = 4.0;
  r.original_max_position_embeddings = 8192;
  return r;
}

RopeScaling parse_rope_scaling(const std::string &text) {
  if (text == "none") return {};
  auto bad = [&](const std::string &why) {
    fail(NWC_E_INVALID_ARG, "rope scaling '" + text + "': " + why +
                                " (expected none, llama3 or llama3:factor=8,low_freq_factor=1,"
                                "high_freq_factor=4,original_max_position_embeddings=8192)");
  };
  const size_t colon = text.find(':');
  if (text.substr(0, colon) != "llama3") bad("unknown type");
  RopeScaling r = llama3_rope_scaling();
  if (colon == std::string::npos) return r;
  std::string rest = text.substr(colon + 1);
  while (!rest.empty()) {
    const size_t comma = rest.find(',');
    const std::string item = rest.substr(0, comma);
    rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) bad("'" + item + "' is not key=value");
    const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(value, &used);
    } catch (const std::exception &) {
      used = 0;
    }
    if (value.empty() || used != value.size() || !std::isfinite(v))
      bad("'" + value + "' is not a number");
    if (key == "factor")
      r.factor = v;
    else if (key == "low_freq_factor")
      r.low_freq_factor = v;
    else if (key == "high_freq_factor")
      r.high_freq_factor = v;
    else if (key == "original_max_position_embeddings" && v == std::floor(v) && v > 0 && v < 1e15)
      r.original_max_position_embeddings = static_cast<int64_t>(v);
    else
      bad("unknown key or bad value '" + item + "'");
  }
  return r;
}

SynthSpec synth_preset(const std::string &name) {
  SynthSpec s;
  s.preset = name;
  Architecture &a = s.arch;
  a.family = "llama";
  a.rope_style = "rotate_half";
  a.norm_eps = 1e-5;
  auto set = [&](int64_t dim, int64_t hidden, int64_t layers, int64_t heads, int64_t kv,
                 int64_t vocab, int64_t seq, double theta) {
    a.dim = dim;
    a.hidden_dim = hidden;
    a.n_layers = layers;
    a.n_heads = heads;
    a.n_kv_heads = kv;
    a.vocab_size = vocab;
    a.max_seq_len = seq;
    a.rope_theta = theta;
  };
  if (name == "tiny")
    set(64, 172, 2, 8, 4, 512, 256, 10000.0);
  else if (name == "small")
    set(256, 688, 4, 8, 4, 2048, 512, 10000.0);
  else if (name == "llama2-7b")
    set(4096, 11008, 32, 32, 32, 32000, 4096, 10000.0);
  else if (name == "llama3-8b")
    set(4096, 14336, 32, 32, 8, 128256, 8192, 500000.0);
  else if (name == "llama3-8b-block")
    set(4096, 14336, 1, 32, 8, 512, 8192, 500000.0);
  else if (name == "llama3.2-1b") {
    set(2048, 8192, 16, 32, 8, 128256, 131072, 500000.0);
    a.tied_embeddings = true;
    a.rope_scaling = llama3_rope_scaling();
    a.rope_scaling.factor = 32.0;
  } else if (name == "llama3.1-8b") {
    set(4096, 14336, 32, 32, 8, 128256, 131072, 500000.0);
    a.rope_scaling = llama3_rope_scaling();
  } else if (name == "mistral-7b") { // v0.3: no sliding window
    set(4096, 14336, 32, 32, 8, 32768, 32768, 1000000.0);
    set_synth_model_type(a, "mistral");
  } else if (name == "qwen2.5-0.5b") {
    set(896, 4864, 24, 14, 2, 151936, 32768, 1000000.0);
    set_synth_model_type(a, "qwen2");
    a.tied_embeddings = true;
    a.norm_eps = 1e-6;
  } else if (name == "qwen3-0.6b") {
    set(1024, 3072, 28, 16, 8, 151936, 40960, 1000000.0);
    set_synth_model_type(a, "qwen3");
    a.head_dim = 128;
    a.tied_embeddings = true;
    a.norm_eps = 1e-6;
  } else {
    std::string list;
    for (const auto &n : synth_preset_names()) list += (list.empty() ? "" : ", ") + n;
    fail(NWC_E_INVALID_ARG, "synth: unknown preset '" + name + "' (expected one of " + list + ")");
  }
  return s;
}

void validate_synth_spec(const SynthSpec &s) {
  const Architecture &a = s.arch;
  auto positive = [](int64_t v, const char *field, const char *flag, int64_t max) {
    if (v < 1 || v > max)
      fail(NWC_E_INVALID_ARG, std::string("synth: ") + field + " (" + flag + ") must be in [1, " +
                                  std::to_string(max) + "], got " + std::to_string(v));
  };
  positive(a.dim, "dim", "--dim", kMaxDim);
  positive(a.hidden_dim, "hidden_dim", "--hidden-dim", kMaxDim);
  positive(a.n_layers, "n_layers", "--layers", kMaxLayers);
  positive(a.n_heads, "n_heads", "--heads", a.dim);
  positive(a.n_kv_heads, "n_kv_heads", "--kv-heads", a.n_heads);
  positive(a.vocab_size, "vocab_size", "--vocab", kMaxDim);
  positive(a.max_seq_len, "max_seq_len", "--max-seq-len", kMaxDim);
  if (a.head_dim != 0) {
    positive(a.head_dim, "head_dim", "--head-dim", kMaxDim);
    if (a.head_dim % 2 != 0)
      fail(NWC_E_INVALID_ARG,
           "synth: head_dim (--head-dim) " + std::to_string(a.head_dim) + " must be even for RoPE");
    if (a.n_heads * a.head_dim > kMaxDim)
      fail(NWC_E_INVALID_ARG, "synth: n_heads * head_dim (--heads * --head-dim) must be at most " +
                                  std::to_string(kMaxDim));
  } else if (a.dim % a.n_heads != 0) {
    fail(NWC_E_INVALID_ARG, "synth: dim (--dim) " + std::to_string(a.dim) +
                                " must be divisible by n_heads (--heads) " +
                                std::to_string(a.n_heads) + " (or give --head-dim)");
  } else if ((a.dim / a.n_heads) % 2 != 0) {
    fail(NWC_E_INVALID_ARG, "synth: the head dimension dim / n_heads (--dim / --heads) = " +
                                std::to_string(a.dim / a.n_heads) + " must be even for RoPE");
  }
  if (a.n_heads % a.n_kv_heads != 0)
    fail(NWC_E_INVALID_ARG, "synth: n_kv_heads (--kv-heads) " + std::to_string(a.n_kv_heads) +
                                " must divide n_heads (--heads) " + std::to_string(a.n_heads));
  if (!(a.norm_eps > 0) || !std::isfinite(a.norm_eps))
    fail(NWC_E_INVALID_ARG, "synth: norm_eps must be a positive number");
  if (!(a.rope_theta > 0) || !std::isfinite(a.rope_theta))
    fail(NWC_E_INVALID_ARG, "synth: rope_theta must be a positive number");
  if (a.rope_style != "rotate_half")
    fail(NWC_E_INVALID_ARG,
         "synth: rope_style must be rotate_half (the HF layout), got '" + a.rope_style + "'");
  if (s.dtype != DType::BF16 && s.dtype != DType::F16 && s.dtype != DType::F32)
    fail(NWC_E_INVALID_ARG, "synth: dtype (--dtype) must be BF16, F16 or F32, got " +
                                std::string(dtype_name(s.dtype)));
  const auto types = synth_model_types();
  if (!a.family.empty() && std::find(types.begin(), types.end(), a.family) == types.end()) {
    Architecture copy = a;
    set_synth_model_type(copy, a.family); // the error naming --model-type
  }
  if (a.sliding_window < 0 || a.sliding_window > kMaxDim)
    fail(NWC_E_INVALID_ARG, "synth: sliding_window (--sliding-window) must be in [0, " +
                                std::to_string(kMaxDim) + "], got " +
                                std::to_string(a.sliding_window));
  const RopeScaling &r = a.rope_scaling;
  if (!r.type.empty() &&
      (r.type != "llama3" || !(r.factor > 0) || !std::isfinite(r.factor) ||
       !(r.low_freq_factor > 0) || !(r.high_freq_factor > r.low_freq_factor) ||
       !std::isfinite(r.high_freq_factor) || r.original_max_position_embeddings <= 0))
    fail(NWC_E_INVALID_ARG, "synth: rope_scaling (--rope-scaling) must be llama3 with factor > 0, "
                            "0 < low_freq_factor < high_freq_factor and "
                            "original_max_position_embeddings > 0");
  // What the model type cannot hold (e.g. mlp_bias in qwen2), as config.json's writer refuses it.
  try {
    hf_llama_config(a, s.dtype);
  } catch (const Error &e) {
    fail(NWC_E_INVALID_ARG, std::string("synth: ") + e.what());
  }
}

uint64_t parse_byte_size(const std::string &text) {
  auto bad = [&]() -> uint64_t {
    fail(NWC_E_INVALID_ARG, "'" + text +
                                "' is not a size in bytes (expected e.g. 1000000, 500MB, 5GB, "
                                "2GiB)");
  };
  size_t i = 0;
  while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.'))
    ++i;
  const std::string num = text.substr(0, i);
  std::string unit;
  for (size_t j = i; j < text.size(); ++j)
    if (text[j] != ' ')
      unit += static_cast<char>(std::toupper(static_cast<unsigned char>(text[j])));
  if (num.empty() || std::count(num.begin(), num.end(), '.') > 1 || num == ".") return bad();
  static const std::map<std::string, double> units = {{"", 1.0},
                                                      {"B", 1.0},
                                                      {"KB", 1e3},
                                                      {"MB", 1e6},
                                                      {"GB", 1e9},
                                                      {"TB", 1e12},
                                                      {"KIB", 1024.0},
                                                      {"MIB", 1048576.0},
                                                      {"GIB", 1073741824.0},
                                                      {"TIB", 1099511627776.0},
                                                      {"K", 1e3},
                                                      {"M", 1e6},
                                                      {"G", 1e9},
                                                      {"T", 1e12}};
  auto u = units.find(unit);
  if (u == units.end()) return bad();
  if (num.find('.') == std::string::npos && u->second == 1.0) {
    if (num.size() > 19) return bad();
    return std::stoull(num);
  }
  const double v = std::stod(num) * u->second;
  if (!(v >= 0) || v >= 1.8e19) return bad();
  return static_cast<uint64_t>(std::llround(v));
}

} // namespace nwc::tools
