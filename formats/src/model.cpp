// model.cpp — Architecture <-> JSON, tensor lookup, and load_model's choice of reader.
#include "nwc/formats/model.hpp"

#include <regex>

#include "nwc/cpp/error.hpp"
#include "nwc/formats/gguf.hpp"
#include "nwc/formats/llama2c.hpp"
#include "nwc/formats/safetensors.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fcntl.h>
#include <unistd.h>

namespace nwc {

namespace fs = std::filesystem;

int64_t Architecture::head_size() const {
  if (head_dim > 0) return head_dim;
  return n_heads > 0 ? dim / n_heads : 0;
}

int64_t Architecture::attention_dim() const {
  return n_heads * head_size();
}

nlohmann::json Architecture::to_json() const {
  nlohmann::json j{{"family", family},         {"dim", dim},
                   {"hidden_dim", hidden_dim}, {"n_layers", n_layers},
                   {"n_heads", n_heads},       {"n_kv_heads", n_kv_heads},
                   {"vocab_size", vocab_size}, {"max_seq_len", max_seq_len},
                   {"norm_eps", norm_eps},     {"rope_theta", rope_theta},
                   {"rope_style", rope_style}, {"tied_embeddings", tied_embeddings}};
  if (head_dim != 0) j["head_dim"] = head_dim;
  if (attention_bias) j["attention_bias"] = true;
  if (attention_out_bias) j["attention_out_bias"] = true;
  if (mlp_bias) j["mlp_bias"] = true;
  if (qk_norm) j["qk_norm"] = true;
  if (sliding_window != 0) j["sliding_window"] = sliding_window;
  if (!rope_scaling.type.empty())
    j["rope_scaling"] = {
        {"type", rope_scaling.type},
        {"factor", rope_scaling.factor},
        {"low_freq_factor", rope_scaling.low_freq_factor},
        {"high_freq_factor", rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", rope_scaling.original_max_position_embeddings}};
  if (!rope_freq_factors.empty()) j["rope_freq_factors"] = rope_freq_factors;
  return j;
}

std::vector<std::string> llama_variant_fields(const Architecture &a) {
  std::vector<std::string> out;
  if (a.head_dim != 0 && (a.n_heads <= 0 || a.head_dim * a.n_heads != a.dim))
    out.push_back("head_dim");
  if (a.attention_bias) out.push_back("attention_bias");
  if (a.attention_out_bias) out.push_back("attention_out_bias");
  if (a.mlp_bias) out.push_back("mlp_bias");
  if (a.qk_norm) out.push_back("qk_norm");
  if (a.sliding_window != 0) out.push_back("sliding_window");
  if (!a.rope_scaling.type.empty()) out.push_back("rope_scaling");
  if (!a.rope_freq_factors.empty()) out.push_back("rope_freq_factors");
  return out;
}

Architecture Architecture::from_json(const nlohmann::json &j) {
  if (!j.is_object())
    fail(NWC_E_CORRUPT_STREAM,
         std::string("architecture: expected a JSON object, got ") + j.type_name());
  Architecture a;
  // Missing keys keep their defaults ("the file does not say"); present keys must be well typed.
  auto get_int = [&](const char *key, int64_t &out) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_number_integer())
      fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key '") + key +
                                     "' must be an integer, got " + it->type_name());
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key '") + key + "' is out of range");
    out = it->get<int64_t>();
    if (out < 0)
      fail(NWC_E_CORRUPT_STREAM,
           std::string("architecture: key '") + key + "' must not be negative");
  };
  auto get_double = [&](const char *key, double &out) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_number())
      fail(NWC_E_CORRUPT_STREAM,
           std::string("architecture: key '") + key + "' must be a number, got " + it->type_name());
    out = it->get<double>();
  };
  auto get_string = [&](const char *key, std::string &out) {
    auto it = j.find(key);
    if (it == j.end()) return;
    if (!it->is_string())
      fail(NWC_E_CORRUPT_STREAM,
           std::string("architecture: key '") + key + "' must be a string, got " + it->type_name());
    out = it->get<std::string>();
  };
  get_string("family", a.family);
  get_int("dim", a.dim);
  get_int("hidden_dim", a.hidden_dim);
  get_int("n_layers", a.n_layers);
  get_int("n_heads", a.n_heads);
  get_int("n_kv_heads", a.n_kv_heads);
  get_int("vocab_size", a.vocab_size);
  get_int("max_seq_len", a.max_seq_len);
  get_double("norm_eps", a.norm_eps);
  get_double("rope_theta", a.rope_theta);
  get_string("rope_style", a.rope_style);
  auto get_bool = [&](const nlohmann::json &obj, const char *key, bool &out) {
    auto it = obj.find(key);
    if (it == obj.end()) return;
    if (!it->is_boolean())
      fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key '") + key +
                                     "' must be a boolean, got " + it->type_name());
    out = it->get<bool>();
  };
  get_bool(j, "tied_embeddings", a.tied_embeddings);
  get_int("head_dim", a.head_dim);
  get_bool(j, "attention_bias", a.attention_bias);
  get_bool(j, "attention_out_bias", a.attention_out_bias);
  get_bool(j, "mlp_bias", a.mlp_bias);
  get_bool(j, "qk_norm", a.qk_norm);
  get_int("sliding_window", a.sliding_window);
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null()) {
    if (!it->is_object())
      fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key 'rope_scaling' must be an "
                                             "object, got ") +
                                     it->type_name());
    RopeScaling &r = a.rope_scaling;
    const nlohmann::json &o = *it;
    auto num = [&](const char *key, double &out) {
      auto k = o.find(key);
      if (k == o.end()) return;
      if (!k->is_number())
        fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key 'rope_scaling.") + key +
                                       "' must be a number, got " + k->type_name());
      out = k->get<double>();
    };
    if (auto t = o.find("type"); t != o.end()) {
      if (!t->is_string())
        fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key 'rope_scaling.type' must be a "
                                               "string, got ") +
                                       t->type_name());
      r.type = t->get<std::string>();
    }
    num("factor", r.factor);
    num("low_freq_factor", r.low_freq_factor);
    num("high_freq_factor", r.high_freq_factor);
    if (auto k = o.find("original_max_position_embeddings"); k != o.end()) {
      if (!k->is_number_integer() || k->get<int64_t>() < 0)
        fail(NWC_E_CORRUPT_STREAM, "architecture: key 'rope_scaling.original_max_position_"
                                   "embeddings' must be a non-negative integer");
      r.original_max_position_embeddings = k->get<int64_t>();
    }
  }
  if (auto it = j.find("rope_freq_factors"); it != j.end()) {
    if (!it->is_array())
      fail(NWC_E_CORRUPT_STREAM, std::string("architecture: key 'rope_freq_factors' must be an "
                                             "array, got ") +
                                     it->type_name());
    for (const auto &v : *it) {
      if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>()))
        fail(NWC_E_CORRUPT_STREAM,
             "architecture: key 'rope_freq_factors' must hold finite positive numbers");
      a.rope_freq_factors.push_back(v.get<double>());
    }
  }
  return a;
}

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= d > 0 ? static_cast<uint64_t>(d) : 0u;
  return n;
}

const ModelTensor *Model::find(const std::string &name) const {
  for (const auto &t : tensors)
    if (t.info.name == name) return &t;
  return nullptr;
}

namespace {

std::string lower_extension(const fs::path &p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

// Reads up to n bytes from the start of the file; fewer when the file is shorter.
size_t read_prefix(const fs::path &path, uint8_t *buf, size_t n) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    fail(NWC_E_IO, path.string() + ": cannot open for reading: " + std::strerror(err));
  }
  size_t got = 0;
  while (got < n) {
    const ssize_t r = ::read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      const int err = errno;
      ::close(fd);
      fail(NWC_E_IO, path.string() + ": read failed: " + std::strerror(err));
    }
    if (r == 0) break;
    got += static_cast<size_t>(r);
  }
  ::close(fd);
  return got;
}

bool looks_like_safetensors(const uint8_t *b, size_t got, uint64_t file_size) {
  if (got < 9 || file_size < 9) return false;
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | b[i];
  return n >= 2 && n <= file_size - 8 && b[8] == '{';
}

} // namespace

Model load_model(const fs::path &path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) {
    if (ec && ec != std::errc::no_such_file_or_directory && ec != std::errc::not_a_directory)
      fail(NWC_E_IO, path.string() + ": cannot access: " + ec.message());
    fail(NWC_E_IO, path.string() + ": no such file or directory");
  }
  if (fs::is_directory(st)) return read_safetensors(path);
  if (!fs::is_regular_file(st)) fail(NWC_E_IO, path.string() + ": not a regular file");

  // An extension that names a format is a claim: content that does not match is an error that
  // names the claimed format, never a silent fallback to another reader.
  const std::string ext = lower_extension(path);
  if (ext == ".gguf") return read_gguf(path);
  if (ext == ".safetensors") return read_safetensors(path);

  uint8_t head[9] = {};
  const size_t got = read_prefix(path, head, sizeof head);
  const uint64_t size = fs::file_size(path, ec);
  if (ec) fail(NWC_E_IO, path.string() + ": cannot read the file size: " + ec.message());
  if (got >= 4 && std::memcmp(head, "GGUF", 4) == 0) return read_gguf(path);
  if (looks_like_safetensors(head, got, size)) return read_safetensors(path);
  if (ext == ".bin") return read_llama2c(path);
  fail(NWC_E_CORRUPT_STREAM, path.string() +
                                 ": unrecognized model format (expected a llama2.c .bin, a "
                                 ".safetensors file or directory, or a .gguf file)");
}

std::vector<float> permute_rope_rows(const std::vector<float> &w, int64_t heads, int64_t head_dim,
                                     int64_t cols, bool to_rotate_half) {
  std::vector<float> out(w.size());
  const int64_t half = head_dim / 2;
  if (static_cast<int64_t>(w.size()) != heads * head_dim * cols)
    fail(NWC_E_INVALID_ARG,
         "permute_rope_rows: tensor size does not match heads x head_dim x cols");
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t inter = h * head_dim + 2 * i + j, halves = h * head_dim + j * half + i;
        const int64_t from = to_rotate_half ? inter : halves, to = to_rotate_half ? halves : inter;
        std::copy_n(w.begin() + from * cols, cols, out.begin() + to * cols);
      }
  return out;
}

bool is_decoder_linear(const std::string &name) {
  static const std::regex re(
      R"(model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)\.weight)");
  return std::regex_match(name, re);
}

} // namespace nwc
