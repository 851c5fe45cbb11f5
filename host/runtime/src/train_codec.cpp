#include "nwc/runtime/train_codec.hpp"

#include "codec_model.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/formats/file.hpp"
#include "nwc/formats/model.hpp"
#include "nwc/host/threads.hpp"
#include "nwc/nwc.h"
#include "nwc/runtime/calibrate.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

namespace nwc::runtime {
using namespace nwc::host;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Decoder-block linear weights (HF Llama names): what the codec will be asked to code.

struct Dataset {
  torch::Tensor train, validation; // [samples, sample_length / chunk, chunk]
  int64_t sample_length = 0;
  double mean = 0, std = 1;
  json sources = json::array();
};

Dataset build_dataset(const TrainCodecSettings &s, int64_t chunk) {
  Dataset d;
  std::vector<std::vector<float>> columns; // per tensor: W^T flattened (columns back to back)
  int64_t shortest = INT64_MAX;
  for (const auto &path : s.models) {
    Model m = load_model(path);
    int64_t used = 0;
    for (const auto &t : m.tensors) {
      if (!is_decoder_linear(t.info.name) || t.info.shape.size() != 2) continue;
      const int64_t rows = t.info.shape[0], cols = t.info.shape[1];
      std::vector<float> w = t.load();
      if (s.normalize == "row")
        for (int64_t r = 0; r < rows; ++r) {
          const double sd = neural::row_std(w.data() + r * cols, cols);
          for (int64_t c = 0; c < cols; ++c)
            w[r * cols + c] = static_cast<float>(w[r * cols + c] / sd);
        }
      std::vector<float> wt(w.size());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < cols; ++c) wt[c * rows + r] = w[r * cols + c];
      columns.push_back(std::move(wt));
      shortest = std::min(shortest, rows);
      ++used;
    }
    if (used == 0)
      fail(NWC_E_INVALID_ARG, path.string() +
                                  ": no decoder-block linear weights (model.layers.N.self_attn."
                                  "{q,k,v,o}_proj / mlp.{gate,up,down}_proj) to train on");
    d.sources.push_back({{"file", path.filename().string()},
                         {"model_hash", model_fingerprint(m)},
                         {"tensors", used}});
  }
  int64_t len = s.sample_length;
  if (len == 0) len = std::min<int64_t>(1024, shortest / chunk * chunk);
  if (len < chunk || len % chunk != 0)
    fail(NWC_E_INVALID_ARG, "train-codec: sample length " + std::to_string(len) +
                                " must be a positive multiple of " + std::to_string(chunk));
  d.sample_length = len;
  std::vector<float> all;
  for (const auto &c : columns) {
    const size_t whole = c.size() / static_cast<size_t>(len) * static_cast<size_t>(len);
    all.insert(all.end(), c.begin(), c.begin() + static_cast<std::ptrdiff_t>(whole));
  }
  const int64_t n = static_cast<int64_t>(all.size()) / len;
  if (n < 20)
    fail(NWC_E_INVALID_ARG, "train-codec: only " + std::to_string(n) + " samples of " +
                                std::to_string(len) + " weights; need at least 20");
  auto data = torch::from_blob(all.data(), {n, len / chunk, chunk}, torch::kFloat32).clone();
  // Shuffle, then hold out the last samples (at most 10% of the data) for validation.
  std::mt19937_64 rng(s.seed);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  data = data.index_select(0, torch::tensor(perm, torch::kInt64));
  const int64_t nval = std::max<int64_t>(1, std::min(s.validation_samples, n / 10));
  d.train = data.slice(0, 0, n - nval).contiguous();
  d.validation = data.slice(0, n - nval, n).contiguous();
  if (s.normalize == "scalar") {
    d.mean = d.train.mean().item<double>();
    d.std = d.train.std().item<double>();
    if (!(d.std > 0)) fail(NWC_E_INVALID_ARG, "train-codec: the training weights are constant");
    d.train = (d.train - d.mean) / d.std;
    d.validation = (d.validation - d.mean) / d.std;
  }
  return d;
}

// Real coding of held-out samples at one level: round around the medians, rANS-encode the
// symbols with the finalized tables, decode the reconstruction.
LevelFigures validate_level(neural::NwcCodec &model, const neural::CdfTables &tables,
                            const torch::Tensor &val, int64_t level, const Instance &rans) {
  torch::NoGradGuard no_grad;
  const int64_t chunk = model->config.chunk;
  auto x = val.reshape({-1, chunk});
  const int64_t n = x.size(0);
  auto levels = torch::full({n}, level, torch::kInt64);
  auto med = torch::from_blob(const_cast<float *>(tables.medians.data()), {tables.channels},
                              torch::kFloat32);
  auto sym = torch::round(model->analyze(x, levels) - med).to(torch::kInt32).contiguous();
  auto y_hat = sym.to(torch::kFloat32) + med;
  auto x_hat = model->synthesize(y_hat, levels);
  LevelFigures f;
  f.level = level;
  f.mse = torch::mean(torch::pow(x - x_hat, 2)).item<double>();
  f.estimate_bpw = (-torch::log2(model->likelihoods(y_hat))).sum().item<double>() /
                   static_cast<double>(x.numel());
  const nwc_cdf_model cm = tables.view();
  int64_t shape[2] = {sym.size(0), sym.size(1)};
  nwc_tensor_view sv{
      sym.data_ptr<int32_t>(), 0, NWC_DTYPE_I32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  struct Counter {
    size_t bytes = 0;
    static nwc_status write(nwc_sink *s, const void *, size_t len) {
      static_cast<Counter *>(s->ctx)->bytes += len;
      return NWC_OK;
    }
  } counter;
  nwc_sink sink{&counter, &Counter::write};
  const auto &coder = rans.interface_as<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  rans.check(coder.encode(rans.raw(), &sv, &cm, &sink), "encode");
  f.bits_per_weight = 8.0 * static_cast<double>(counter.bytes) / static_cast<double>(x.numel());
  return f;
}

std::string fixed(double v, int digits) {
  std::ostringstream o;
  o.setf(std::ios::fixed);
  o.precision(digits);
  o << v;
  return o.str();
}

} // namespace

TrainCodecResult train_codec(const TrainCodecSettings &s, const Registry &registry) {
  const auto t0 = std::chrono::steady_clock::now();
  auto log = [&](const std::string &line) {
    if (s.log) s.log(line);
  };
  if (s.models.empty()) fail(NWC_E_INVALID_ARG, "train-codec: no --model given");
  if (!(s.lambda > 0)) fail(NWC_E_INVALID_ARG, "train-codec: --lambda must be positive");
  if (s.steps < 1 || s.batch < 1 || s.eval_every < 1)
    fail(NWC_E_INVALID_ARG, "train-codec: --steps, --batch and --eval-every must be positive");
  if (s.normalize != "scalar" && s.normalize != "row")
    fail(NWC_E_INVALID_ARG, "train-codec: --normalize must be \"scalar\" or \"row\"");

  neural::CodecConfig cfg;
  cfg.width = s.width;
  cfg.blocks = s.blocks;
  cfg.latent = s.latent;
  cfg.levels = s.levels;
  cfg.layer_norm = s.layer_norm;
  cfg.validate("train-codec");
  std::vector<double> coef = s.level_coefficients.empty()
                                 ? neural::default_level_coefficients(cfg.levels)
                                 : s.level_coefficients;
  if (static_cast<int64_t>(coef.size()) != cfg.levels)
    fail(NWC_E_INVALID_ARG, "train-codec: " + std::to_string(coef.size()) +
                                " level coefficients for " + std::to_string(cfg.levels) +
                                " levels");

  torch::set_num_threads(static_cast<int>(resolve_threads(s.threads)));
  torch::manual_seed(s.seed);
  Dataset data = build_dataset(s, cfg.chunk);
  const int64_t ntrain = data.train.size(0), vecs = data.sample_length / cfg.chunk;
  log("train-codec: " + std::to_string(ntrain) + " training and " +
      std::to_string(data.validation.size(0)) + " held-out samples of " +
      std::to_string(data.sample_length) + " weights; lambda " + fixed(s.lambda, 1) + ", D " +
      std::to_string(cfg.width) + ", " + std::to_string(cfg.blocks) + " blocks, M " +
      std::to_string(cfg.latent) + ", Q " + std::to_string(cfg.levels));

  neural::NwcCodec model(cfg);
  torch::optim::Adam opt(model->main_parameters(), torch::optim::AdamOptions(s.lr));
  torch::optim::Adam aux_opt(model->aux_parameters(), torch::optim::AdamOptions(s.aux_lr));
  auto rans = registry.create("nwc.entropy.rans", OptionValues());

  // The settings a checkpoint must match to be resumed.
  json fingerprint = {{"config", cfg.to_json()},
                      {"lambda", s.lambda},
                      {"coefficients", coef},
                      {"batch", s.batch},
                      {"sample_length", data.sample_length},
                      {"normalize", s.normalize},
                      {"seed", s.seed},
                      {"lr_drop", s.lr_drop},
                      {"sources", data.sources}};
  const fs::path ckpt = s.output.string() + ".ckpt";
  const fs::path ckpt_state = s.output.string() + ".ckpt.json";
  TrainCodecResult result;
  int64_t step = 0;
  double best = INFINITY;
  json best_validation = json::array();
  if (s.resume && fs::exists(ckpt_state) && fs::exists(s.output)) {
    std::ifstream in(ckpt_state);
    json st = json::parse(in, nullptr, false);
    if (!st.is_discarded() && st.value("fingerprint", json()) == fingerprint) {
      torch::load(model, ckpt.string());
      torch::load(opt, ckpt.string() + ".opt");
      torch::load(aux_opt, ckpt.string() + ".aux");
      step = st.at("step").get<int64_t>();
      best = st.at("best_loss").get<double>();
      result.best_step = st.at("best_step").get<int64_t>();
      best_validation = st.at("best_validation");
      result.resumed_from = step;
      log("train-codec: resuming from step " + std::to_string(step) + " (" + ckpt.string() + ")");
    } else {
      log("train-codec: " + ckpt_state.string() +
          " was written with other settings; starting afresh");
    }
  }

  std::mt19937_64 rng(s.seed + static_cast<uint64_t>(step));
  std::vector<int64_t> order(static_cast<size_t>(ntrain));
  std::iota(order.begin(), order.end(), 0);
  size_t cursor = order.size(); // reshuffle on first use
  auto coef_t = torch::tensor(coef, torch::kFloat32);
  double loss_sum = 0;
  int64_t loss_count = 0;
  auto set_lr = [&](double factor) {
    for (auto &g : opt.param_groups())
      static_cast<torch::optim::AdamOptions &>(g.options()).lr(s.lr * factor);
    for (auto &g : aux_opt.param_groups())
      static_cast<torch::optim::AdamOptions &>(g.options()).lr(s.aux_lr * factor);
  };
  set_lr(s.lr_drop > 0 && step >= s.lr_drop ? 0.1 : 1.0);
  while (step < s.steps) {
    if (s.lr_drop > 0 && step == s.lr_drop) set_lr(0.1);
    model->train();
    std::vector<int64_t> idx;
    for (int64_t b = 0; b < std::min(s.batch, ntrain); ++b) {
      if (cursor >= order.size()) {
        std::shuffle(order.begin(), order.end(), rng);
        cursor = 0;
      }
      idx.push_back(order[cursor++]);
    }
    const int64_t B = static_cast<int64_t>(idx.size());
    auto x = data.train.index_select(0, torch::tensor(idx, torch::kInt64)).reshape({-1, cfg.chunk});
    auto q = torch::randint(cfg.levels, {B}, torch::kInt64);
    auto qv = q.repeat_interleave(vecs);
    auto [x_hat, lik] = model->forward_noisy(x, qv);
    auto mse = torch::mean(torch::pow(x - x_hat, 2));
    auto bits = (-torch::log2(lik)).sum(1).view({B, vecs}).sum(1); // per sample
    auto rate = (bits * coef_t.index_select(0, q)).sum() / static_cast<double>(x.numel());
    auto loss = s.lambda * mse + rate;
    opt.zero_grad();
    loss.backward();
    if (s.clip > 0) torch::nn::utils::clip_grad_norm_(model->main_parameters(), s.clip);
    opt.step();
    auto aux = model->bottleneck->aux_loss();
    aux_opt.zero_grad();
    aux.backward();
    aux_opt.step();
    const double lv = loss.item<double>();
    if (!std::isfinite(lv))
      fail(NWC_E_INTERNAL, "train-codec: the loss became non-finite at step " +
                               std::to_string(step + 1) + "; lower --lr");
    loss_sum += lv;
    ++loss_count;
    ++step;

    if (step % s.eval_every == 0 || step == s.steps) {
      model->eval();
      neural::fit_quantiles(model);
      neural::CdfTables tables = neural::compute_tables(model);
      double vloss = 0;
      json levels = json::array();
      std::string figures;
      for (int64_t l = 0; l < cfg.levels; ++l) {
        LevelFigures f = validate_level(model, tables, data.validation, l, *rans);
        vloss += s.lambda * f.mse + coef[static_cast<size_t>(l)] * f.bits_per_weight;
        levels.push_back({{"level", l},
                          {"bits_per_weight", f.bits_per_weight},
                          {"estimate_bpw", f.estimate_bpw},
                          {"mse", f.mse}});
        figures += " q" + std::to_string(l) + " " + fixed(f.bits_per_weight, 3) + " b/w mse " +
                   fixed(f.mse, 5) + ";";
      }
      vloss /= static_cast<double>(cfg.levels);
      result.train_loss.push_back(loss_sum / static_cast<double>(loss_count));
      const bool improved = vloss < best;
      log("step " + std::to_string(step) + "/" + std::to_string(s.steps) + "  train loss " +
          fixed(loss_sum / static_cast<double>(loss_count), 4) + "  held-out loss " +
          fixed(vloss, 4) + " " + figures + (improved ? " [best]" : ""));
      loss_sum = 0;
      loss_count = 0;
      if (improved) {
        best = vloss;
        result.best_step = step;
        best_validation = levels;
        json meta = {{"lambda", s.lambda},
                     {"level_coefficients", coef},
                     {"training",
                      {{"sources", data.sources},
                       {"normalize", s.normalize},
                       {"dataset_mean", data.mean},
                       {"dataset_std", data.std},
                       {"sample_length", data.sample_length},
                       {"train_samples", ntrain},
                       {"validation_samples", data.validation.size(0)},
                       {"batch", s.batch},
                       {"lr", s.lr},
                       {"aux_lr", s.aux_lr},
                       {"lr_drop", s.lr_drop},
                       {"clip", s.clip},
                       {"seed", s.seed},
                       {"step", step},
                       {"steps", s.steps}}},
                     {"validation", {{"loss", vloss}, {"levels", levels}}}};
        neural::save_codec(s.output, model, tables, meta);
      }
      // Checkpoint for resuming: model and both optimizers, then the state file last. The old
      // state file goes first, so that a run interrupted while saving (Ctrl-C, SIGTERM) leaves
      // no state that names half-written or mismatched checkpoint files: it restarts afresh.
      {
        std::error_code ec;
        fs::remove(ckpt_state, ec);
      }
      torch::save(model, ckpt.string());
      torch::save(opt, ckpt.string() + ".opt");
      torch::save(aux_opt, ckpt.string() + ".aux");
      json st = {{"fingerprint", fingerprint},
                 {"step", step},
                 {"best_loss", best},
                 {"best_step", result.best_step},
                 {"best_validation", best_validation}};
      AtomicFile f(ckpt_state);
      const std::string text = st.dump(1);
      f.write(text.data(), text.size());
      f.commit();
    }
  }
  result.steps = step;
  result.best_loss = best;
  result.train_samples = ntrain;
  result.validation_samples = data.validation.size(0);
  result.sample_length = data.sample_length;
  result.dataset_std = data.std;
  for (const auto &l : best_validation)
    result.validation.push_back({l.at("level").get<int64_t>(),
                                 l.at("bits_per_weight").get<double>(),
                                 l.at("estimate_bpw").get<double>(), l.at("mse").get<double>()});
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

} // namespace nwc::runtime
