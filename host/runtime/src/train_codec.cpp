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

// Latents centered on the medians, [N, M] for `samples` samples of N / samples chunks each ->
// {symbols I32, dequantized values F32} from a quantizer plugin. The plugin is told of a block
// [sample_length, samples]: each sample one column, so a per-column trellis (nwc.quant.tcq)
// restarts at every sample.
std::pair<torch::Tensor, torch::Tensor> quantize_latents(const Instance &quantizer,
                                                         const torch::Tensor &centered,
                                                         int64_t samples, int64_t sample_length) {
  auto lat = centered.to(torch::kFloat32).contiguous();
  const int64_t n = lat.size(0), m = lat.size(1);
  auto sym = torch::empty({n, m}, torch::kInt32);
  auto deq = torch::empty({n, m}, torch::kFloat32);
  int64_t shape[2] = {n, m};
  nwc_tensor_view lv{lat.data_ptr<float>(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view sv{
      sym.data_ptr<int32_t>(), 0, NWC_DTYPE_I32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_tensor_view dv{deq.data_ptr<float>(), 0, NWC_DTYPE_F32, NWC_DEVICE_CPU, 0, 2, shape, nullptr};
  nwc_block_info info{};
  info.struct_size = sizeof(info);
  info.tensor_name = "train-codec samples";
  info.rows = sample_length;
  info.cols = samples;
  info.col_begin = 0;
  info.col_end = samples;
  std::vector<uint8_t> side;
  nwc_sink sink{&side, [](nwc_sink *s, const void *data, size_t len) -> nwc_status {
                  auto *out = static_cast<std::vector<uint8_t> *>(s->ctx);
                  const auto *p = static_cast<const uint8_t *>(data);
                  out->insert(out->end(), p, p + len);
                  return NWC_OK;
                }};
  const auto &q = quantizer.interface_as<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  quantizer.check(q.quantize(quantizer.raw(), &info, &lv, &sv, &dv, &sink), "quantize");
  if (!side.empty())
    fail(NWC_E_INVALID_ARG, "train-codec: --latent-quantizer " + quantizer.plugin().id +
                                " writes side information, which a codec's latents cannot carry");
  return {sym, deq};
}

// Real coding of held-out samples at one level: round around the medians (or the latent
// quantizer's symbols), entropy-code the symbols with the finalized tables
// (TrainCodecSettings::measure_entropy), decode the reconstruction.
LevelFigures validate_level(neural::NwcCodec &model, const neural::CdfTables &tables,
                            const torch::Tensor &val, int64_t level, const Instance &coder,
                            const Instance *quantizer) {
  torch::NoGradGuard no_grad;
  const int64_t chunk = model->config.chunk;
  auto x = val.reshape({-1, chunk});
  const int64_t n = x.size(0);
  auto levels = torch::full({n}, level, torch::kInt64);
  auto med = torch::from_blob(const_cast<float *>(tables.medians.data()), {tables.channels},
                              torch::kFloat32);
  torch::Tensor sym, y_hat;
  if (quantizer) {
    auto [s, deq] =
        quantize_latents(*quantizer, model->analyze(x, levels) - med, val.size(0), val.size(1));
    sym = s;
    y_hat = deq + med;
  } else {
    sym = torch::round(model->analyze(x, levels) - med).to(torch::kInt32).contiguous();
    y_hat = sym.to(torch::kFloat32) + med;
  }
  auto x_hat = model->synthesize(y_hat, levels);
  LevelFigures f;
  f.level = level;
  f.mse = torch::mean(torch::pow(x - x_hat, 2)).item<double>();
  // The density's bits for the symbols coded (for rounding, the reconstruction is the symbol).
  f.estimate_bpw = (-torch::log2(model->likelihoods(sym.to(torch::kFloat32) + med, levels)))
                       .sum()
                       .item<double>() /
                   static_cast<double>(x.numel());
  nwc_cdf_model cm = tables.view();
  cm.default_level = static_cast<uint32_t>(level); // every sample at this level
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
  const auto &entropy = coder.interface_as<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  coder.check(entropy.encode(coder.raw(), &sv, &cm, &sink), "encode");
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

void check_settings(const TrainCodecSettings &s) {
  if (s.models.empty()) fail(NWC_E_INVALID_ARG, "train-codec: no --model given");
  if (!(s.lambda > 0)) fail(NWC_E_INVALID_ARG, "train-codec: --lambda must be positive");
  if (s.steps < 1 || s.batch < 1 || s.eval_every < 1)
    fail(NWC_E_INVALID_ARG, "train-codec: --steps, --batch and --eval-every must be positive");
  if (s.prior_only && s.init.empty())
    fail(NWC_E_INVALID_ARG, "train-codec: --prior-only trains a codec's prior; give the codec with "
                            "--init");
  if (s.normalize != "scalar" && s.normalize != "row")
    fail(NWC_E_INVALID_ARG, "train-codec: --normalize must be \"scalar\" or \"row\"");
}

neural::CodecConfig codec_config(const TrainCodecSettings &s) {
  neural::CodecConfig cfg;
  cfg.width = s.width;
  cfg.blocks = s.blocks;
  cfg.latent = s.latent;
  cfg.levels = s.levels;
  cfg.layer_norm = s.layer_norm;
  cfg.level_priors = s.level_priors;
  cfg.validate("train-codec");
  return cfg;
}

// The rate coefficient of each quality level: the settings', else the reference table.
std::vector<double> level_coefficients(const TrainCodecSettings &s,
                                       const neural::CodecConfig &cfg) {
  std::vector<double> coef = s.level_coefficients.empty()
                                 ? neural::default_level_coefficients(cfg.levels)
                                 : s.level_coefficients;
  if (static_cast<int64_t>(coef.size()) != cfg.levels)
    fail(NWC_E_INVALID_ARG, "train-codec: " + std::to_string(coef.size()) +
                                " level coefficients for " + std::to_string(cfg.levels) +
                                " levels");
  return coef;
}

// The --latent-quantizer instance with its --latent-quantizer-option values, or null (rounding).
std::unique_ptr<Instance> latent_quantizer(const TrainCodecSettings &s, const Registry &registry) {
  if (s.latent_quantizer.empty()) {
    if (!s.latent_quantizer_options.empty())
      fail(NWC_E_INVALID_ARG, "train-codec: --latent-quantizer-option needs --latent-quantizer");
    return nullptr;
  }
  const Plugin *plugin = registry.find(s.latent_quantizer);
  if (plugin && plugin->kind != NWC_KIND_QUANTIZER)
    fail(NWC_E_INVALID_ARG,
         "train-codec: --latent-quantizer " + s.latent_quantizer + " is not a quantizer plugin");
  const OptionValues options =
      plugin ? options_from_assignments(s.latent_quantizer_options, plugin->options.data(),
                                        static_cast<uint32_t>(plugin->options.size()),
                                        "train-codec: --latent-quantizer-option for " +
                                            s.latent_quantizer)
             : OptionValues();
  return registry.create(s.latent_quantizer, options); // an unknown id fails here, by name
}

// One training run: the dataset, the model and its two optimizers, the step loop with periodic
// evaluation (the best codec so far written to the output) and checkpoints for resuming.
class CodecTraining {
public:
  CodecTraining(const TrainCodecSettings &s, const Registry &registry,
                const neural::CodecConfig &cfg)
      : s_(s), cfg_(cfg), coef_(level_coefficients(s, cfg)), data_(seeded_dataset(s, cfg)),
        ntrain_(data_.train.size(0)), vecs_(data_.sample_length / cfg.chunk), model_(cfg),
        opt_(trained_parameters(), torch::optim::AdamOptions(s.lr)),
        aux_opt_(model_->aux_parameters(), torch::optim::AdamOptions(s.aux_lr)),
        coder_(registry.create(s.measure_entropy, OptionValues())),
        quantizer_(latent_quantizer(s, registry)), fingerprint_(fingerprint()),
        ckpt_(s.output.string() + ".ckpt"), ckpt_state_(s.output.string() + ".ckpt.json") {
    if (!s.init.empty()) start_from(s.init);
    if (s.prior_only) grid_ = model_->grid_medians().detach().clone();
    log("train-codec: " + std::to_string(ntrain_) + " training and " +
        std::to_string(data_.validation.size(0)) + " held-out samples of " +
        std::to_string(data_.sample_length) + " weights; lambda " + fixed(s.lambda, 1) + ", D " +
        std::to_string(cfg.width) + ", " + std::to_string(cfg.blocks) + " blocks, M " +
        std::to_string(cfg.latent) + ", Q " + std::to_string(cfg.levels));
  }

  TrainCodecResult run() {
    if (s_.resume && fs::exists(ckpt_state_) && fs::exists(s_.output)) resume();
    std::mt19937_64 rng(s_.seed + static_cast<uint64_t>(step_));
    order_.resize(static_cast<size_t>(ntrain_));
    std::iota(order_.begin(), order_.end(), 0);
    cursor_ = order_.size(); // reshuffle on first use
    set_lr(s_.lr_drop > 0 && step_ >= s_.lr_drop ? 0.1 : 1.0);
    while (step_ < s_.steps) {
      if (s_.lr_drop > 0 && step_ == s_.lr_drop) set_lr(0.1);
      train_step(rng);
      if (step_ % s_.eval_every == 0 || step_ == s_.steps) {
        evaluate();
        save_checkpoint();
      }
    }
    return result();
  }

private:
  void log(const std::string &line) const {
    if (s_.log) s_.log(line);
  }

  // The dataset, built after LibTorch's generator is seeded (the model's initialization and the
  // training noise follow from the seed).
  static Dataset seeded_dataset(const TrainCodecSettings &s, const neural::CodecConfig &cfg) {
    torch::set_num_threads(static_cast<int>(resolve_threads(s.threads)));
    torch::manual_seed(s.seed);
    return build_dataset(s, cfg.chunk);
  }

  // The settings a checkpoint must match to be resumed (the measuring entropy coder only when it
  // is not the default, so that checkpoints written before it was a setting still resume).
  json fingerprint() const {
    json fp = {{"config", cfg_.to_json()},
               {"lambda", s_.lambda},
               {"coefficients", coef_},
               {"batch", s_.batch},
               {"sample_length", data_.sample_length},
               {"normalize", s_.normalize},
               {"seed", s_.seed},
               {"lr_drop", s_.lr_drop},
               {"sources", data_.sources}};
    if (s_.measure_entropy != kDefaultMeasureEntropy) fp["measure_entropy"] = s_.measure_entropy;
    if (!s_.latent_quantizer.empty()) fp["latent_quantizer"] = s_.latent_quantizer;
    if (!s_.latent_quantizer_options.empty())
      fp["latent_quantizer_options"] = s_.latent_quantizer_options;
    if (!s_.init.empty()) fp["init"] = s_.init.string();
    if (s_.prior_only) fp["prior_only"] = true;
    return fp;
  }

  // The parameters of a finished codec with the same configuration (fine-tuning it). A codec
  // with one shared prior may also start a run with a prior per level: every level's prior
  // starts as a copy of the shared one.
  void start_from(const fs::path &codec) {
    neural::NwcCodec src = neural::load_codec_module(codec);
    neural::CodecConfig shared = cfg_;
    shared.level_priors = false;
    const bool expand = cfg_.level_priors && !src->config.level_priors;
    if (src->config.to_json() != (expand ? shared : cfg_).to_json())
      fail(NWC_E_INVALID_ARG, "train-codec: --init " + codec.string() + " has configuration " +
                                  src->config.to_json().dump() + ", this run " +
                                  cfg_.to_json().dump());
    torch::NoGradGuard no_grad;
    auto from = src->named_parameters();
    for (auto &p : model_->named_parameters()) {
      torch::Tensor v = from[p.key()];
      if (expand && p.key().rfind("bottleneck.", 0) == 0) {
        std::vector<int64_t> reps(static_cast<size_t>(v.dim()), 1);
        reps[0] = cfg_.priors();
        v = v.repeat(reps);
      }
      p.value().copy_(v);
    }
    log("train-codec: starting from " + codec.string() +
        (expand ? " (its prior copied to every level)" : ""));
  }

  // Continues from OUTPUT.ckpt when its state file was written with the same settings.
  void resume() {
    std::ifstream in(ckpt_state_);
    json st = json::parse(in, nullptr, false);
    if (st.is_discarded() || st.value("fingerprint", json()) != fingerprint_) {
      log("train-codec: " + ckpt_state_.string() +
          " was written with other settings; starting afresh");
      return;
    }
    torch::load(model_, ckpt_.string());
    torch::load(opt_, ckpt_.string() + ".opt");
    torch::load(aux_opt_, ckpt_.string() + ".aux");
    step_ = st.at("step").get<int64_t>();
    best_ = st.at("best_loss").get<double>();
    result_.best_step = st.at("best_step").get<int64_t>();
    best_validation_ = st.at("best_validation");
    result_.resumed_from = step_;
    log("train-codec: resuming from step " + std::to_string(step_) + " (" + ckpt_.string() + ")");
  }

  void set_lr(double factor) {
    for (auto &g : opt_.param_groups())
      static_cast<torch::optim::AdamOptions &>(g.options()).lr(s_.lr * factor);
    for (auto &g : aux_opt_.param_groups())
      static_cast<torch::optim::AdamOptions &>(g.options()).lr(s_.aux_lr * factor);
  }

  // The next batch of training samples: a pass over a fresh shuffle of the training set.
  std::vector<int64_t> next_batch(std::mt19937_64 &rng) {
    std::vector<int64_t> idx;
    for (int64_t b = 0; b < std::min(s_.batch, ntrain_); ++b) {
      if (cursor_ >= order_.size()) {
        std::shuffle(order_.begin(), order_.end(), rng);
        cursor_ = 0;
      }
      idx.push_back(order_[cursor_++]);
    }
    return idx;
  }

  // What the main optimizer trains: the entropy model alone with --prior-only, else everything
  // but the quantiles.
  std::vector<torch::Tensor> trained_parameters() {
    return s_.prior_only ? model_->prior_parameters() : model_->main_parameters();
  }

  // With --prior-only the latents stay on the grid of `init`'s medians (the quantiles still
  // follow the densities, for the tables' ranges), so that the codec codes exactly as before.
  void pin_grid() {
    if (!grid_.defined()) return;
    torch::NoGradGuard no_grad;
    model_->bottleneck->quantiles.index({torch::indexing::Slice(0, cfg_.latent), 0, 1})
        .copy_(grid_);
  }

  // One step: lambda * MSE + rate with noisy latents at a random level per sample (Adam on the
  // transforms), then the entropy model's auxiliary loss (its own Adam).
  void train_step(std::mt19937_64 &rng) {
    model_->train();
    std::vector<int64_t> idx = next_batch(rng);
    const int64_t B = static_cast<int64_t>(idx.size());
    auto x =
        data_.train.index_select(0, torch::tensor(idx, torch::kInt64)).reshape({-1, cfg_.chunk});
    auto q = torch::randint(cfg_.levels, {B}, torch::kInt64);
    auto qv = q.repeat_interleave(vecs_);
    auto [x_hat, lik] =
        quantizer_ ? model_->forward_straight_through(
                         x, qv,
                         [&](const torch::Tensor &y) {
                           auto med = model_->grid_medians().detach().unsqueeze(0);
                           auto [sym, deq] =
                               quantize_latents(*quantizer_, y - med, B, data_.sample_length);
                           return std::make_pair(deq + med, sym.to(torch::kFloat32) + med);
                         })
                   : model_->forward_noisy(x, qv);
    auto mse = torch::mean(torch::pow(x - x_hat, 2));
    auto bits = (-torch::log2(lik)).sum(1).view({B, vecs_}).sum(1); // per sample
    auto rate = (bits * coef_t_.index_select(0, q)).sum() / static_cast<double>(x.numel());
    auto loss = s_.lambda * mse + rate;
    opt_.zero_grad();
    loss.backward();
    if (s_.clip > 0) torch::nn::utils::clip_grad_norm_(trained_parameters(), s_.clip);
    opt_.step();
    auto aux = model_->bottleneck->aux_loss();
    aux_opt_.zero_grad();
    aux.backward();
    aux_opt_.step();
    pin_grid();
    const double lv = loss.item<double>();
    if (!std::isfinite(lv))
      fail(NWC_E_INTERNAL, "train-codec: the loss became non-finite at step " +
                               std::to_string(step_ + 1) + "; lower --lr");
    loss_sum_ += lv;
    ++loss_count_;
    ++step_;
  }

  // Real coding of the held-out samples at every level; an improvement is written as the codec.
  void evaluate() {
    model_->eval();
    neural::fit_quantiles(model_);
    pin_grid();
    neural::CdfTables tables = neural::compute_tables(model_);
    double vloss = 0;
    json levels = json::array();
    std::string figures;
    for (int64_t l = 0; l < cfg_.levels; ++l) {
      LevelFigures f =
          validate_level(model_, tables, data_.validation, l, *coder_, quantizer_.get());
      vloss += s_.lambda * f.mse + coef_[static_cast<size_t>(l)] * f.bits_per_weight;
      levels.push_back({{"level", l},
                        {"bits_per_weight", f.bits_per_weight},
                        {"estimate_bpw", f.estimate_bpw},
                        {"mse", f.mse}});
      figures += " q" + std::to_string(l) + " " + fixed(f.bits_per_weight, 3) + " b/w mse " +
                 fixed(f.mse, 5) + ";";
    }
    vloss /= static_cast<double>(cfg_.levels);
    result_.train_loss.push_back(loss_sum_ / static_cast<double>(loss_count_));
    const bool improved = vloss < best_;
    log("step " + std::to_string(step_) + "/" + std::to_string(s_.steps) + "  train loss " +
        fixed(loss_sum_ / static_cast<double>(loss_count_), 4) + "  held-out loss " +
        fixed(vloss, 4) + " " + figures + (improved ? " [best]" : ""));
    loss_sum_ = 0;
    loss_count_ = 0;
    if (!improved) return;
    best_ = vloss;
    result_.best_step = step_;
    best_validation_ = levels;
    neural::save_codec(s_.output, model_, tables, codec_metadata(vloss, levels));
  }

  // What the written codec records about its training.
  json codec_metadata(double vloss, const json &levels) const {
    return {{"lambda", s_.lambda},
            {"level_coefficients", coef_},
            {"training",
             {{"sources", data_.sources},
              {"normalize", s_.normalize},
              {"dataset_mean", data_.mean},
              {"dataset_std", data_.std},
              {"sample_length", data_.sample_length},
              {"train_samples", ntrain_},
              {"validation_samples", data_.validation.size(0)},
              {"batch", s_.batch},
              {"lr", s_.lr},
              {"aux_lr", s_.aux_lr},
              {"lr_drop", s_.lr_drop},
              {"clip", s_.clip},
              {"seed", s_.seed},
              {"step", step_},
              {"steps", s_.steps}}},
            {"validation", {{"loss", vloss}, {"levels", levels}}}};
  }

  // Checkpoint for resuming: model and both optimizers, then the state file last. The old state
  // file goes first, so that a run interrupted while saving (Ctrl-C, SIGTERM) leaves no state that
  // names half-written or mismatched checkpoint files: it restarts afresh.
  void save_checkpoint() {
    {
      std::error_code ec;
      fs::remove(ckpt_state_, ec);
    }
    torch::save(model_, ckpt_.string());
    torch::save(opt_, ckpt_.string() + ".opt");
    torch::save(aux_opt_, ckpt_.string() + ".aux");
    json st = {{"fingerprint", fingerprint_},
               {"step", step_},
               {"best_loss", best_},
               {"best_step", result_.best_step},
               {"best_validation", best_validation_}};
    AtomicFile f(ckpt_state_);
    const std::string text = st.dump(1);
    f.write(text.data(), text.size());
    f.commit();
  }

  TrainCodecResult result() {
    result_.steps = step_;
    result_.best_loss = best_;
    result_.train_samples = ntrain_;
    result_.validation_samples = data_.validation.size(0);
    result_.sample_length = data_.sample_length;
    result_.dataset_std = data_.std;
    for (const auto &l : best_validation_)
      result_.validation.push_back({l.at("level").get<int64_t>(),
                                    l.at("bits_per_weight").get<double>(),
                                    l.at("estimate_bpw").get<double>(), l.at("mse").get<double>()});
    return result_;
  }

  const TrainCodecSettings &s_;
  const neural::CodecConfig cfg_;
  const std::vector<double> coef_;
  Dataset data_;
  const int64_t ntrain_, vecs_;
  neural::NwcCodec model_;
  torch::optim::Adam opt_, aux_opt_;
  std::unique_ptr<Instance> coder_;     // measures the held-out samples' real bytes
  std::unique_ptr<Instance> quantizer_; // --latent-quantizer, or null for rounding
  const json fingerprint_;
  const fs::path ckpt_, ckpt_state_;
  torch::Tensor coef_t_ = torch::tensor(coef_, torch::kFloat32);
  torch::Tensor grid_; // --prior-only: init's medians, the grid the latents stay on

  TrainCodecResult result_;
  int64_t step_ = 0;
  double best_ = INFINITY;
  json best_validation_ = json::array();
  std::vector<int64_t> order_; // training samples, shuffled per pass
  size_t cursor_ = 0;
  double loss_sum_ = 0; // since the last evaluation
  int64_t loss_count_ = 0;
};

} // namespace

TrainCodecResult train_codec(const TrainCodecSettings &s, const Registry &registry) {
  const auto t0 = std::chrono::steady_clock::now();
  check_settings(s);
  const neural::CodecConfig cfg = codec_config(s);
  TrainCodecResult result = CodecTraining(s, registry, cfg).run();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

} // namespace nwc::runtime
