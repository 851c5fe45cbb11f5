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

// ---- modules -----------------------------------------------------------------------------------

CoderImpl::CoderImpl(int64_t in, int64_t out, const CodecConfig &cfg) {
  input = register_module("input", torch::nn::Linear(in, cfg.width));
  for (int64_t b = 0; b < cfg.blocks; ++b) {
    linears.push_back(
        register_module("linear" + std::to_string(b), torch::nn::Linear(cfg.width, cfg.width)));
    if (cfg.layer_norm)
      norms.push_back(
          register_module("norm" + std::to_string(b),
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
    : channels(cfg.priors() * cfg.latent), tail_mass(cfg.tail_mass) {
  std::vector<int64_t> f{1};
  f.insert(f.end(), cfg.density_filters.begin(), cfg.density_filters.end());
  f.push_back(1);
  const double scale =
      std::pow(cfg.init_scale, 1.0 / static_cast<double>(cfg.density_filters.size() + 1));
  for (size_t i = 0; i + 1 < f.size(); ++i) {
    const double init = std::log(std::expm1(1.0 / scale / static_cast<double>(f[i + 1])));
    matrices.push_back(register_parameter("matrix" + std::to_string(i),
                                          torch::full({channels, f[i + 1], f[i]}, init)));
    biases.push_back(
        register_parameter("bias" + std::to_string(i), torch::rand({channels, f[i + 1], 1}) - 0.5));
    if (i + 2 < f.size())
      factors.push_back(
          register_parameter("factor" + std::to_string(i), torch::zeros({channels, f[i + 1], 1})));
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
  // nn.Embedding's own initialization, N(0, 1), as the reference: the levels start apart.
  level_embedding = register_module("level_embedding", torch::nn::Embedding(cfg.levels, cfg.width));
  bottleneck = register_module("bottleneck", EntropyBottleneck(cfg));
}

torch::Tensor NwcCodecImpl::analyze(const torch::Tensor &x, const torch::Tensor &levels) {
  return g_a(x, level_embedding(levels));
}

torch::Tensor NwcCodecImpl::synthesize(const torch::Tensor &y_hat, const torch::Tensor &levels) {
  return g_s(y_hat, level_embedding(levels));
}

torch::Tensor NwcCodecImpl::likelihoods(const torch::Tensor &y_hat, const torch::Tensor &levels) {
  // [N, C] -> [C, 1, N]: each latent dimension is one channel of the factorized prior.
  const int64_t P = config.priors();
  if (P == 1) return bottleneck->likelihood(y_hat.t().unsqueeze(1)).squeeze(1).t();
  // A prior per level: every level's densities on every latent, then each latent's own level
  // (P times the density evaluations, still small next to the transforms).
  const int64_t n = y_hat.size(0), m = y_hat.size(1);
  torch::Tensor all = bottleneck->likelihood(y_hat.t().repeat({P, 1}).unsqueeze(1)).view({P, m, n});
  torch::Tensor index = levels.to(torch::kInt64).view({1, 1, n}).expand({1, m, n});
  return all.gather(0, index).squeeze(0).t();
}

torch::Tensor NwcCodecImpl::grid_medians() const {
  return bottleneck->medians().slice(0, 0, config.latent);
}

std::pair<torch::Tensor, torch::Tensor> NwcCodecImpl::forward_noisy(const torch::Tensor &x,
                                                                    const torch::Tensor &levels) {
  torch::Tensor e = level_embedding(levels);
  torch::Tensor y = g_a(x, e);
  torch::Tensor y_tilde = y + (torch::rand_like(y) - 0.5);
  return {g_s(y_tilde, e), likelihoods(y_tilde, levels)};
}

std::pair<torch::Tensor, torch::Tensor> NwcCodecImpl::forward_straight_through(
    const torch::Tensor &x, const torch::Tensor &levels,
    const std::function<std::pair<torch::Tensor, torch::Tensor>(const torch::Tensor &)> &quantize) {
  torch::Tensor e = level_embedding(levels);
  torch::Tensor y = g_a(x, e);
  auto [values, symbols] = quantize(y.detach());
  torch::Tensor y_hat = y + (values - y).detach();
  torch::Tensor y_sym = y + (symbols - y).detach();
  return {g_s(y_hat, e), likelihoods(y_sym, levels)};
}

std::vector<torch::Tensor> NwcCodecImpl::main_parameters() {
  std::vector<torch::Tensor> out;
  for (auto &p : named_parameters())
    if (p.key() != "bottleneck.quantiles") out.push_back(p.value());
  return out;
}

std::vector<torch::Tensor> NwcCodecImpl::prior_parameters() {
  std::vector<torch::Tensor> out;
  for (auto &p : bottleneck->named_parameters())
    if (p.key() != "quantiles") out.push_back(p.value());
  return out;
}

std::vector<torch::Tensor> NwcCodecImpl::aux_parameters() {
  return {bottleneck->quantiles};
}

// ---- CDF tables
// ----------------------------------------------------------------------------------

void fit_quantiles(NwcCodec &codec) {
  torch::NoGradGuard no_grad;
  EntropyBottleneckImpl &eb = *codec->bottleneck;
  const double t = std::log(2.0 / eb.tail_mass - 1.0);
  const double targets[3] = {-t, 0.0, t};
  auto q = eb.quantiles.detach().to(torch::kFloat64).clone();
  auto qa = q.accessor<double, 3>();
  for (int64_t c = 0; c < eb.channels; ++c) {
    auto logits = [&](double x) {
      auto v = torch::full({1, 1, 1}, x, torch::kFloat64);
      for (size_t i = 0; i < eb.matrices.size(); ++i) {
        auto ch = [&](const torch::Tensor &p) {
          return p.detach().index({torch::indexing::Slice(c, c + 1)}).to(torch::kFloat64);
        };
        v = torch::matmul(torch::softplus(ch(eb.matrices[i])), v) + ch(eb.biases[i]);
        if (i < eb.factors.size()) v = v + torch::tanh(ch(eb.factors[i])) * torch::tanh(v);
      }
      return v.item<double>();
    };
    for (int k = 0; k < 3; ++k) {
      // The cumulative logits are monotone in x (positive matrices, factors above -1).
      double lo = -1e4, hi = 1e4;
      if (logits(lo) > targets[k] || logits(hi) < targets[k]) continue; // keep the trained value
      for (int it = 0; it < 80; ++it) {
        const double mid = 0.5 * (lo + hi);
        (logits(mid) < targets[k] ? lo : hi) = mid;
      }
      qa[c][0][k] = 0.5 * (lo + hi);
    }
  }
  eb.quantiles.copy_(q.to(torch::kFloat32));
}

CdfTables compute_tables(const NwcCodec &codec) {
  torch::NoGradGuard no_grad;
  const EntropyBottleneckImpl &eb = *codec->bottleneck;
  auto q = eb.quantiles.detach().to(torch::kFloat64).contiguous();
  auto qa = q.accessor<double, 3>();
  const int64_t C = eb.channels, M = codec->config.latent;
  CdfTables t;
  t.channels = M;
  t.levels = codec->config.priors();
  std::vector<int64_t> minima(C), maxima(C);
  std::vector<double> median(C);
  for (int64_t c = 0; c < C; ++c) {
    // Every level's table sits on the same grid, its channel's level-0 median, which the
    // transform centers the latents on; its range covers its own level's quantiles.
    median[c] = qa[c % M][0][1];
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
  t.medians.resize(M);
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
    auto pmf_t =
        torch::abs(torch::sigmoid(sign * upper) - torch::sigmoid(sign * lower)).view({len});
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
    if (c < M) t.medians[c] = static_cast<float>(median[c]);
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
    infos.push_back(
        {p.key(), DType::F32, std::vector<int64_t>(v.sizes().begin(), v.sizes().end())});
    data.emplace_back(v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
  }
  auto add_table = [&](const std::string &name, DType dt, std::vector<int64_t> shape,
                       std::vector<float> values) {
    infos.push_back({name, dt, std::move(shape)});
    data.push_back(std::move(values));
  };
  const int64_t C = tables.levels * tables.channels;
  add_table("tables.cdf", DType::I32, {C, tables.max_length},
            std::vector<float>(tables.cdf.begin(), tables.cdf.end()));
  add_table("tables.lengths", DType::I32, {C},
            std::vector<float>(tables.lengths.begin(), tables.lengths.end()));
  add_table("tables.offsets", DType::I32, {C},
            std::vector<float>(tables.offsets.begin(), tables.offsets.end()));
  add_table("tables.medians", DType::F32, {tables.channels}, tables.medians);

  json meta = metadata;
  meta["format"] = "nwcc";
  meta["version"] = model->config.format_version();
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

NwcCodec load_codec_module(const std::filesystem::path &path) {
  CodecFile f = load_codec(path); // validates everything
  NwcCodec m(f.config);
  Model file = read_safetensors(path);
  torch::NoGradGuard no_grad;
  for (auto &p : m->named_parameters()) {
    const ModelTensor *t = file.find(p.key());
    if (!t) bad(path.string(), "missing tensor " + p.key());
    std::vector<float> v = t->load();
    if (static_cast<int64_t>(v.size()) != p.value().numel())
      bad(path.string(), "tensor " + p.key() + " has the wrong size");
    p.value().copy_(torch::from_blob(v.data(), p.value().sizes(), torch::kFloat32));
  }
  m->eval();
  return m;
}

} // namespace nwc::neural
