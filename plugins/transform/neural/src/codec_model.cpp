#include "codec_model.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

namespace nwc::neural {

namespace {

using nlohmann::json;

void bad(const std::string &where, const std::string &what) {
  fail(NWC_E_CORRUPT_STREAM, where + ": " + what);
}

} // namespace

// ---- configuration -----------------------------------------------------------------------------

json CodecConfig::to_json() const {
  return json{{"chunk", chunk},           {"width", width},
              {"blocks", blocks},         {"latent", latent},
              {"levels", levels},         {"layer_norm", layer_norm},
              {"density_filters", density_filters}, {"init_scale", init_scale},
              {"tail_mass", tail_mass}};
}

CodecConfig CodecConfig::from_json(const json &j, const std::string &where) {
  if (!j.is_object()) bad(where, "codec config must be an object");
  CodecConfig c;
  auto integer = [&](const char *key, int64_t &out) {
    if (!j.contains(key) || !j[key].is_number_integer())
      bad(where, std::string("codec config: '") + key + "' must be an integer");
    out = j[key].get<int64_t>();
  };
  integer("chunk", c.chunk);
  integer("width", c.width);
  integer("blocks", c.blocks);
  integer("latent", c.latent);
  integer("levels", c.levels);
  if (!j.contains("layer_norm") || !j["layer_norm"].is_boolean())
    bad(where, "codec config: 'layer_norm' must be a bool");
  c.layer_norm = j["layer_norm"].get<bool>();
  if (!j.contains("density_filters") || !j["density_filters"].is_array())
    bad(where, "codec config: 'density_filters' must be an array of integers");
  c.density_filters.clear();
  for (const auto &f : j["density_filters"]) {
    if (!f.is_number_integer()) bad(where, "codec config: 'density_filters' must hold integers");
    c.density_filters.push_back(f.get<int64_t>());
  }
  for (const char *key : {"init_scale", "tail_mass"})
    if (!j.contains(key) || !j[key].is_number())
      bad(where, std::string("codec config: '") + key + "' must be a number");
  c.init_scale = j["init_scale"].get<double>();
  c.tail_mass = j["tail_mass"].get<double>();
  c.validate(where);
  return c;
}

void CodecConfig::validate(const std::string &where) const {
  auto in = [&](const char *what, int64_t v, int64_t lo, int64_t hi) {
    if (v < lo || v > hi)
      bad(where, std::string("codec config: ") + what + " = " + std::to_string(v) +
                     " is outside [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  };
  in("chunk", chunk, 1, 4096);
  in("width", width, 1, 8192);
  in("blocks", blocks, 0, 64);
  in("latent", latent, 1, 4096);
  in("levels", levels, 1, 16);
  if (density_filters.empty() || density_filters.size() > 8)
    bad(where, "codec config: density_filters must have 1 to 8 entries");
  for (int64_t f : density_filters) in("density filter", f, 1, 64);
  if (!(init_scale > 0 && init_scale < 1e6)) bad(where, "codec config: init_scale out of range");
  if (!(tail_mass > 0 && tail_mass < 0.1)) bad(where, "codec config: tail_mass out of range");
}

std::vector<double> default_level_coefficients(int64_t levels) {
  switch (levels) {
  case 1:
    return {1.0};
  case 2:
    return {3.4, 0.05};
  case 4:
    return {3.4, 1.2, 0.1, 0.05};
  case 8:
    return {4.0, 1.707, 0.724, 0.307, 0.130, 0.055, 0.024, 0.010};
  default: { // geometric from 4.0 down to 0.001, as the reference does for Q = 16
    std::vector<double> c(static_cast<size_t>(levels));
    for (int64_t q = 0; q < levels; ++q)
      c[static_cast<size_t>(q)] =
          4.0 * std::pow(0.001 / 4.0, static_cast<double>(q) / static_cast<double>(levels - 1));
    return c;
  }
  }
}

// ---- modules -----------------------------------------------------------------------------------

CoderImpl::CoderImpl(int64_t in, int64_t out, const CodecConfig &cfg) {
  input = register_module("input", torch::nn::Linear(in, cfg.width));
  for (int64_t b = 0; b < cfg.blocks; ++b) {
    linears.push_back(register_module("linear" + std::to_string(b),
                                      torch::nn::Linear(cfg.width, cfg.width)));
    if (cfg.layer_norm)
      norms.push_back(register_module("norm" + std::to_string(b),
                                      torch::nn::LayerNorm(torch::nn::LayerNormOptions({cfg.width}))));
  }
  output = register_module("output", torch::nn::Linear(cfg.width, out));
}

torch::Tensor CoderImpl::forward(const torch::Tensor &x, const torch::Tensor &e) {
  torch::Tensor h = input(x);
  for (size_t b = 0; b < linears.size(); ++b) {
    torch::Tensor t = linears[b](h);
    if (!norms.empty()) t = norms[b](t);
    h = (h + torch::relu(t)) * e;
  }
  return output(h);
}

EntropyBottleneckImpl::EntropyBottleneckImpl(const CodecConfig &cfg)
    : channels(cfg.latent), tail_mass(cfg.tail_mass) {
  std::vector<int64_t> f{1};
  f.insert(f.end(), cfg.density_filters.begin(), cfg.density_filters.end());
  f.push_back(1);
  const double scale =
      std::pow(cfg.init_scale, 1.0 / static_cast<double>(cfg.density_filters.size() + 1));
  for (size_t i = 0; i + 1 < f.size(); ++i) {
    const double init = std::log(std::expm1(1.0 / scale / static_cast<double>(f[i + 1])));
    matrices.push_back(register_parameter("matrix" + std::to_string(i),
                                          torch::full({channels, f[i + 1], f[i]}, init)));
    biases.push_back(register_parameter("bias" + std::to_string(i),
                                        torch::rand({channels, f[i + 1], 1}) - 0.5));
    if (i + 2 < f.size())
      factors.push_back(register_parameter("factor" + std::to_string(i),
                                           torch::zeros({channels, f[i + 1], 1})));
  }
  auto q = torch::tensor({-cfg.init_scale, 0.0, cfg.init_scale}, torch::kFloat32);
  quantiles = register_parameter("quantiles", q.repeat({channels, 1, 1}));
}

torch::Tensor EntropyBottleneckImpl::logits_cumulative(const torch::Tensor &x,
                                                       bool stop_gradient) const {
  torch::Tensor logits = x;
  for (size_t i = 0; i < matrices.size(); ++i) {
    torch::Tensor m = torch::softplus(matrices[i]);
    torch::Tensor b = biases[i];
    if (stop_gradient) {
      m = m.detach();
      b = b.detach();
    }
    logits = torch::matmul(m, logits) + b;
    if (i < factors.size()) {
      torch::Tensor f = torch::tanh(factors[i]);
      if (stop_gradient) f = f.detach();
      logits = logits + f * torch::tanh(logits);
    }
  }
  return logits;
}

torch::Tensor EntropyBottleneckImpl::likelihood(const torch::Tensor &y) const {
  torch::Tensor lower = logits_cumulative(y - 0.5, false);
  torch::Tensor upper = logits_cumulative(y + 0.5, false);
  // Evaluate in the tail where the sigmoid is not saturated (the reference's sign trick).
  torch::Tensor sign = -torch::sign(lower + upper).detach();
  torch::Tensor p = torch::abs(torch::sigmoid(sign * upper) - torch::sigmoid(sign * lower));
  // Lower bound with a straight-through gradient, so tiny probabilities still learn.
  torch::Tensor bounded = torch::clamp_min(p, 1e-9);
  return p + (bounded - p).detach();
}

torch::Tensor EntropyBottleneckImpl::aux_loss() const {
  const double t = std::log(2.0 / tail_mass - 1.0);
  auto target = torch::tensor({-t, 0.0, t}, torch::kFloat32).view({1, 1, 3});
  torch::Tensor logits = logits_cumulative(quantiles, true);
  return torch::abs(logits - target).sum();
}

torch::Tensor EntropyBottleneckImpl::medians() const {
  return quantiles.index({torch::indexing::Slice(), 0, 1});
}

NwcCodecImpl::NwcCodecImpl(const CodecConfig &cfg) : config(cfg) {
  cfg.validate("codec");
  g_a = register_module("g_a", Coder(cfg.chunk, cfg.latent, cfg));
  g_s = register_module("g_s", Coder(cfg.latent, cfg.chunk, cfg));
  // Starts as the identity scaling so every level begins from the same transform; the levels
  // then diverge through their different rate weights.
  level_embedding = register_module("level_embedding", torch::nn::Embedding(cfg.levels, cfg.width));
  torch::NoGradGuard no_grad;
  level_embedding->weight.fill_(1.0);
  bottleneck = register_module("bottleneck", EntropyBottleneck(cfg));
}

torch::Tensor NwcCodecImpl::analyze(const torch::Tensor &x, const torch::Tensor &levels) {
  return g_a(x, level_embedding(levels));
}

torch::Tensor NwcCodecImpl::synthesize(const torch::Tensor &y_hat, const torch::Tensor &levels) {
  return g_s(y_hat, level_embedding(levels));
}

torch::Tensor NwcCodecImpl::likelihoods(const torch::Tensor &y_hat) {
  // [N, C] -> [C, 1, N]: each latent dimension is one channel of the factorized prior.
  torch::Tensor lik = bottleneck->likelihood(y_hat.t().unsqueeze(1));
  return lik.squeeze(1).t();
}

std::pair<torch::Tensor, torch::Tensor> NwcCodecImpl::forward_noisy(const torch::Tensor &x,
                                                                    const torch::Tensor &levels) {
  torch::Tensor e = level_embedding(levels);
  torch::Tensor y = g_a(x, e);
  torch::Tensor y_tilde = y + (torch::rand_like(y) - 0.5);
  return {g_s(y_tilde, e), likelihoods(y_tilde)};
}

std::vector<torch::Tensor> NwcCodecImpl::main_parameters() {
  std::vector<torch::Tensor> out;
  for (auto &p : named_parameters())
    if (p.key() != "bottleneck.quantiles") out.push_back(p.value());
  return out;
}

std::vector<torch::Tensor> NwcCodecImpl::aux_parameters() { return {bottleneck->quantiles}; }

// ---- CDF tables ----------------------------------------------------------------------------------

std::vector<uint32_t> quantize_pmf(const std::vector<double> &pmf, uint32_t precision) {
  const size_t n = pmf.size();
  const uint64_t total = uint64_t{1} << precision;
  if (n == 0 || n > total) fail(NWC_E_INVALID_ARG, "quantize_pmf: bad symbol count");
  double sum = 0;
  for (double p : pmf) {
    if (!(p >= 0) || !std::isfinite(p)) fail(NWC_E_INVALID_ARG, "quantize_pmf: bad probability");
    sum += p;
  }
  // One unit per symbol, the rest shared in proportion to the mass (floor), and the remainder
  // handed out one unit at a time by largest fractional part (ties: lower index).
  const uint64_t spare = total - n;
  std::vector<uint64_t> freq(n, 1);
  std::vector<std::pair<double, size_t>> frac(n);
  uint64_t used = n;
  for (size_t i = 0; i < n; ++i) {
    const double share = sum > 0 ? pmf[i] / sum * static_cast<double>(spare) : 0.0;
    const auto whole = static_cast<uint64_t>(std::floor(share));
    freq[i] += whole;
    used += whole;
    frac[i] = {share - static_cast<double>(whole), i};
  }
  if (used > total) fail(NWC_E_INTERNAL, "quantize_pmf: rounding overflow");
  std::stable_sort(frac.begin(), frac.end(), [](const auto &a, const auto &b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  for (size_t k = 0; used < total; ++k, ++used) ++freq[frac[k % n].second];
  std::vector<uint32_t> cdf(n + 1, 0);
  for (size_t i = 0; i < n; ++i) cdf[i + 1] = cdf[i] + static_cast<uint32_t>(freq[i]);
  return cdf;
}

CdfTables compute_tables(const NwcCodec &codec) {
  torch::NoGradGuard no_grad;
  const EntropyBottleneckImpl &eb = *codec->bottleneck;
  auto q = eb.quantiles.detach().to(torch::kFloat64).contiguous();
  auto qa = q.accessor<double, 3>();
  const int64_t C = eb.channels;
  CdfTables t;
  t.channels = C;
  std::vector<int64_t> minima(C), maxima(C);
  std::vector<double> median(C);
  for (int64_t c = 0; c < C; ++c) {
    median[c] = qa[c][0][1];
    minima[c] = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(median[c] - qa[c][0][0])));
    maxima[c] = std::max<int64_t>(0, static_cast<int64_t>(std::ceil(qa[c][0][2] - median[c])));
    // A density trained far off could ask for huge tables; the coder escapes the rest anyway.
    minima[c] = std::min<int64_t>(minima[c], 4096);
    maxima[c] = std::min<int64_t>(maxima[c], 4096);
  }
  int64_t max_pmf = 0;
  for (int64_t c = 0; c < C; ++c) max_pmf = std::max(max_pmf, minima[c] + maxima[c] + 1);
  t.max_length = max_pmf + 2;
  t.cdf.assign(static_cast<size_t>(C * t.max_length), 0);
  t.lengths.resize(C);
  t.offsets.resize(C);
  t.medians.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    const int64_t len = minima[c] + maxima[c] + 1;
    // Evaluate the density in double precision for this channel alone.
    auto samples =
        torch::arange(len, torch::kFloat64) + (median[c] - static_cast<double>(minima[c]));
    auto x = samples.view({1, 1, len});
    std::vector<torch::Tensor> ms, bs, fs;
    auto channel = [&](const torch::Tensor &p) {
      return p.detach().index({torch::indexing::Slice(c, c + 1)}).to(torch::kFloat64);
    };
    auto logits = [&](torch::Tensor v) {
      for (size_t i = 0; i < eb.matrices.size(); ++i) {
        v = torch::matmul(torch::softplus(channel(eb.matrices[i])), v) + channel(eb.biases[i]);
        if (i < eb.factors.size()) v = v + torch::tanh(channel(eb.factors[i])) * torch::tanh(v);
      }
      return v;
    };
    auto lower = logits(x - 0.5), upper = logits(x + 0.5);
    auto sign = -torch::sign(lower + upper);
    auto pmf_t = torch::abs(torch::sigmoid(sign * upper) - torch::sigmoid(sign * lower)).view({len});
    const double tail = torch::sigmoid(lower.view({len})[0]).item<double>() +
                        torch::sigmoid(-upper.view({len})[len - 1]).item<double>();
    std::vector<double> pmf(static_cast<size_t>(len) + 1);
    auto pa = pmf_t.accessor<double, 1>();
    for (int64_t i = 0; i < len; ++i) pmf[static_cast<size_t>(i)] = pa[i];
    pmf[static_cast<size_t>(len)] = tail; // the escape interval
    std::vector<uint32_t> cdf = quantize_pmf(pmf, t.precision);
    std::copy(cdf.begin(), cdf.end(), t.cdf.begin() + c * t.max_length);
    t.lengths[c] = static_cast<uint32_t>(len + 2);
    t.offsets[c] = static_cast<int32_t>(-minima[c]);
    t.medians[c] = static_cast<float>(median[c]);
  }
  return t;
}

// ---- codec files -------------------------------------------------------------------------------

void save_codec(const std::filesystem::path &path, const NwcCodec &model, const CdfTables &tables,
                const json &metadata) {
  std::vector<TensorInfo> infos;
  std::vector<std::vector<float>> data;
  for (const auto &p : model->named_parameters()) {
    auto v = p.value().detach().to(torch::kFloat32).contiguous();
    infos.push_back({p.key(), DType::F32, std::vector<int64_t>(v.sizes().begin(), v.sizes().end())});
    data.emplace_back(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
  }
  auto add_table = [&](const std::string &name, DType dt, std::vector<int64_t> shape,
                       std::vector<float> values) {
    infos.push_back({name, dt, std::move(shape)});
    data.push_back(std::move(values));
  };
  const int64_t C = tables.channels;
  add_table("tables.cdf", DType::I32, {C, tables.max_length},
            std::vector<float>(tables.cdf.begin(), tables.cdf.end()));
  add_table("tables.lengths", DType::I32, {C},
            std::vector<float>(tables.lengths.begin(), tables.lengths.end()));
  add_table("tables.offsets", DType::I32, {C},
            std::vector<float>(tables.offsets.begin(), tables.offsets.end()));
  add_table("tables.medians", DType::F32, {C}, tables.medians);

  json meta = metadata;
  meta["format"] = "nwcc";
  meta["version"] = kCodecFormatVersion;
  meta["config"] = model->config.to_json();
  meta["cdf_precision"] = tables.precision;
  SafetensorsWriter w(path, infos, {{"nwc.codec", meta.dump()}});
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].dtype == DType::I32) {
      std::vector<int32_t> ints(data[i].size());
      for (size_t k = 0; k < ints.size(); ++k) ints[k] = static_cast<int32_t>(data[i][k]);
      w.write_raw(infos[i].name, ints.data(), ints.size() * sizeof(int32_t));
    } else {
      w.write(infos[i].name, data[i].data());
    }
  }
  w.commit();
}

CodecFile load_codec(const std::filesystem::path &path) {
  const std::string where = path.string();
  Model m = read_safetensors(path);
  json meta;
  try {
    meta = json::parse(m.metadata.at("__metadata__").at("nwc.codec").get<std::string>());
  } catch (const std::exception &) {
    bad(where, "not an NWC codec file (safetensors metadata lacks a valid \"nwc.codec\" entry)");
  }
  if (!meta.is_object() || meta.value("format", "") != "nwcc")
    bad(where, "not an NWC codec file (metadata format is not \"nwcc\")");
  if (!meta.contains("version") || !meta["version"].is_number_integer() ||
      meta["version"].get<int>() != kCodecFormatVersion)
    bad(where, "unsupported codec file version (expected " + std::to_string(kCodecFormatVersion) +
                   ")");
  CodecFile f;
  f.config = CodecConfig::from_json(meta.value("config", json()), where);
  f.metadata = meta;
  f.model = NwcCodec(f.config);
  std::map<std::string, const ModelTensor *> by_name;
  for (const auto &t : m.tensors) by_name[t.info.name] = &t;
  auto get = [&](const std::string &name, const std::vector<int64_t> &shape) {
    auto it = by_name.find(name);
    if (it == by_name.end()) bad(where, "missing tensor " + name);
    if (it->second->info.shape != shape) bad(where, "tensor " + name + " has the wrong shape");
    return it->second->load();
  };
  {
    torch::NoGradGuard no_grad;
    for (auto &p : f.model->named_parameters()) {
      std::vector<int64_t> shape(p.value().sizes().begin(), p.value().sizes().end());
      std::vector<float> v = get(p.key(), shape);
      for (float x : v)
        if (!std::isfinite(x)) bad(where, "tensor " + p.key() + " holds a non-finite value");
      p.value().copy_(torch::from_blob(v.data(), p.value().sizes(), torch::kFloat32));
    }
  }
  f.model->eval();
  const int64_t C = f.config.latent;
  if (!meta.contains("cdf_precision") || !meta["cdf_precision"].is_number_integer() ||
      meta["cdf_precision"].get<int64_t>() != kCdfPrecision)
    bad(where, "CDF precision must be " + std::to_string(kCdfPrecision));
  auto lengths = get("tables.lengths", {C});
  auto offsets = get("tables.offsets", {C});
  auto medians = get("tables.medians", {C});
  auto it = by_name.find("tables.cdf");
  if (it == by_name.end() || it->second->info.shape.size() != 2 ||
      it->second->info.shape[0] != C || it->second->info.shape[1] < 3 ||
      it->second->info.shape[1] > 8194)
    bad(where, "tables.cdf must be [" + std::to_string(C) + ", 3..8194]");
  CdfTables &t = f.tables;
  t.channels = C;
  t.max_length = it->second->info.shape[1];
  auto cdf = it->second->load();
  t.cdf.assign(cdf.size(), 0);
  for (size_t i = 0; i < cdf.size(); ++i) {
    if (!(cdf[i] >= 0 && cdf[i] <= 65536)) bad(where, "tables.cdf value out of range");
    t.cdf[i] = static_cast<uint32_t>(cdf[i]);
  }
  for (int64_t c = 0; c < C; ++c) {
    if (!(lengths[c] >= 3 && lengths[c] <= static_cast<float>(t.max_length)))
      bad(where, "tables.lengths[" + std::to_string(c) + "] out of range");
    if (!(std::fabs(offsets[c]) <= 1e6f) || !std::isfinite(medians[c]))
      bad(where, "tables.offsets/medians[" + std::to_string(c) + "] out of range");
    t.lengths.push_back(static_cast<uint32_t>(lengths[c]));
    t.offsets.push_back(static_cast<int32_t>(offsets[c]));
    t.medians.push_back(medians[c]);
    const uint32_t *row = t.cdf.data() + c * t.max_length;
    if (row[0] != 0 || row[t.lengths[c] - 1] != (1u << kCdfPrecision))
      bad(where, "tables.cdf row " + std::to_string(c) + " does not run from 0 to 2^16");
    for (uint32_t k = 0; k + 1 < t.lengths[c]; ++k)
      if (row[k + 1] <= row[k])
        bad(where, "tables.cdf row " + std::to_string(c) + " is not strictly increasing");
  }
  return f;
}

} // namespace nwc::neural
