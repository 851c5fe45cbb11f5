#include "nwc/runtime/awq.hpp"

#include "llama_block.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/host/threads.hpp"
#include "parallel_for.hpp"

#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <thread>
#include <torch/torch.h>

namespace nwc::runtime {

namespace {

constexpr int64_t kWindowsPerPass = 2; // calibration windows per attention pass

// AWQ's min/max grid on the rows of g [n, width], float32 as AutoAWQ computes it.
torch::Tensor pseudo_quantize_rows(const torch::Tensor &g, int64_t bits) {
  const double max_int = static_cast<double>((int64_t{1} << bits) - 1);
  auto max_val = g.amax(1, true), min_val = g.amin(1, true);
  auto scales = (max_val - min_val).clamp_min(1e-5) / max_int;
  auto zeros = (-torch::round(min_val / scales)).clamp(0.0, max_int);
  return (torch::clamp(torch::round(g / scales) + zeros, 0.0, max_int) - zeros) * scales;
}

// w [rows, cols] in groups of `group` columns (the last one shorter when group does not divide
// cols).
torch::Tensor pseudo_quantize(const torch::Tensor &w, int64_t bits, int64_t group) {
  const int64_t rows = w.size(0), cols = w.size(1), full = cols / group * group;
  std::vector<torch::Tensor> parts;
  if (full > 0)
    parts.push_back(
        pseudo_quantize_rows(w.narrow(1, 0, full).reshape({-1, group}), bits).view({rows, full}));
  if (full < cols) parts.push_back(pseudo_quantize_rows(w.narrow(1, full, cols - full), bits));
  return parts.size() == 1 ? parts[0] : torch::cat(parts, 1);
}

// AutoAWQ's w_mean: every group of the (concatenated) weights normalized by its absolute maximum,
// then the mean over rows per input column.
torch::Tensor weight_mean(const std::vector<torch::Tensor> &ws, int64_t group) {
  auto w = torch::cat(ws, 0).abs();
  const int64_t rows = w.size(0), cols = w.size(1), full = cols / group * group;
  std::vector<torch::Tensor> parts;
  auto norm = [](const torch::Tensor &g) { return g / (g.amax(1, true) + 1e-6); };
  if (full > 0) parts.push_back(norm(w.narrow(1, 0, full).reshape({-1, group})).view({rows, full}));
  if (full < cols) parts.push_back(norm(w.narrow(1, full, cols - full)));
  return (parts.size() == 1 ? parts[0] : torch::cat(parts, 1)).mean(0);
}

// One scaling group: its linears (pointers into the block's weights), the input they share
// ([N, in], flattened tokens) and the output of the module inspected with given weights.
struct ScaleGroup {
  const char *name;
  std::vector<torch::Tensor *> linears;
  torch::Tensor input;
  std::function<torch::Tensor(const std::vector<torch::Tensor> &)> module;
};

struct ScaleChoice {
  torch::Tensor scales;
  double ratio = 0, loss_rtn = 0, loss_best = 0;
};

ScaleChoice search_scales(const ScaleGroup &g, const AwqSettings &cfg, unsigned threads) {
  std::vector<torch::Tensor> orig;
  for (auto *w : g.linears) orig.push_back(*w);
  const int64_t in = orig[0].size(1);
  auto x_mean = g.input.reshape({-1, in}).abs().mean(0);
  auto w_mean = weight_mean(orig, cfg.group);
  torch::Tensor reference;
  {
    torch::NoGradGuard ng;
    reference = g.module(orig);
  }
  std::vector<double> loss(static_cast<size_t>(cfg.grid));
  std::vector<torch::Tensor> scales(static_cast<size_t>(cfg.grid));
  parallel_for(cfg.grid, threads, [&](int64_t k) {
    const double r = static_cast<double>(k) / static_cast<double>(cfg.grid);
    auto s = cfg.duo_scaling ? (x_mean.pow(r) / (w_mean.pow(1.0 - r) + 1e-4)).clamp_min(1e-4)
                             : x_mean.pow(r).clamp_min(1e-4);
    s = s / (s.max() * s.min()).sqrt();
    auto view = s.view({1, -1});
    std::vector<torch::Tensor> q;
    for (const auto &w : orig) q.push_back(pseudo_quantize(w * view, cfg.bits, cfg.group) / view);
    loss[static_cast<size_t>(k)] = (reference - g.module(q)).pow(2).mean().item<double>();
    scales[static_cast<size_t>(k)] = s;
  });
  ScaleChoice best;
  {
    std::vector<torch::Tensor> q; // the group without scaling, for the report
    for (const auto &w : orig) q.push_back(pseudo_quantize(w, cfg.bits, cfg.group));
    best.loss_rtn = (reference - g.module(q)).pow(2).mean().item<double>();
  }
  best.loss_best = std::numeric_limits<double>::infinity();
  for (int64_t k = 0; k < cfg.grid; ++k) // the first strictly best ratio, as AutoAWQ
    if (loss[static_cast<size_t>(k)] < best.loss_best) {
      best.loss_best = loss[static_cast<size_t>(k)];
      best.ratio = static_cast<double>(k) / static_cast<double>(cfg.grid);
      best.scales = scales[static_cast<size_t>(k)];
    }
  if (!best.scales.defined())
    fail(NWC_E_INVALID_ARG, std::string("awq: no finite loss in the scale search of group ") +
                                g.name +
                                " (the calibration activations or weights hold NaN or infinity)");
  return best;
}

// The clipping search on w [out, in] (already scaled) with inputs x [n, in] (already divided by
// the scales): per output row and group, the shrunk range with the least partial-output error.
// Returns w clamped to the chosen ranges.
torch::Tensor clip_weights(const torch::Tensor &w, const torch::Tensor &x, const AwqSettings &cfg,
                           unsigned threads) {
  const int64_t out = w.size(0), in = w.size(1), n = x.size(0);
  const int64_t step = std::max<int64_t>(1, n / cfg.clip_tokens);
  auto xs = x.index({torch::indexing::Slice(0, torch::indexing::None, step)}); // AutoAWQ's 0::step
  const int64_t full = in / cfg.group * cfg.group;
  // Spans of columns quantized as groups of one width: the full groups, then the shorter tail.
  std::vector<std::pair<int64_t, int64_t>> spans; // (first column, group width)
  if (full > 0) spans.push_back({0, cfg.group});
  if (full < in) spans.push_back({full, in - full});
  auto result = w.clone();
  const int64_t steps = static_cast<int64_t>(cfg.max_shrink * static_cast<double>(cfg.clip_grid));
  constexpr int64_t kRowBatch = 256; // AutoAWQ's oc_batch_size
  const int64_t batches = (out + kRowBatch - 1) / kRowBatch;
  for (const auto &[c0, width] : spans) {
    const int64_t span = c0 == 0 && full > 0 ? full : in - c0, groups = span / width;
    // [groups, tokens, width] and per batch [groups, width, rows]: partial outputs by group.
    auto xg = xs.narrow(1, c0, span).reshape({-1, groups, width}).permute({1, 0, 2}).contiguous();
    parallel_for(batches, threads, [&](int64_t b) {
      const int64_t r0 = b * kRowBatch, rows = std::min(kRowBatch, out - r0);
      auto wb = w.narrow(0, r0, rows).narrow(1, c0, span).reshape({rows, groups, width});
      auto partial = [&](const torch::Tensor &v) { // [groups, tokens, rows]
        return torch::bmm(xg, v.permute({1, 2, 0}));
      };
      auto reference = partial(wb);
      auto org_max = wb.abs().amax(-1, true); // [rows, groups, 1]
      auto best_max = org_max.clone();
      auto best_err = torch::full({rows, groups, 1}, std::numeric_limits<float>::infinity());
      for (int64_t i = 0; i < steps; ++i) {
        auto max_val =
            org_max * (1.0 - static_cast<double>(i) / static_cast<double>(cfg.clip_grid));
        auto cur = torch::clamp(wb, -max_val, max_val);
        auto q = pseudo_quantize_rows(cur.reshape({-1, width}), cfg.bits).view(wb.sizes());
        // Mean over tokens of the squared partial-output error: [groups, rows] -> [rows, groups,
        // 1].
        auto err = (partial(q) - reference).pow(2).mean(1).t().unsqueeze(-1);
        auto better = err < best_err;
        best_err = torch::where(better, err, best_err);
        best_max = torch::where(better, max_val, best_max);
      }
      auto clipped = torch::clamp(wb, -best_max, best_max).reshape({rows, span});
      result.narrow(0, r0, rows).narrow(1, c0, span).copy_(clipped);
    });
  }
  return result;
}

std::vector<float> values_of(const torch::Tensor &t) {
  auto c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

} // namespace

std::vector<float> awq_pseudo_quantize(const std::vector<float> &w, int64_t rows, int64_t cols,
                                       int64_t bits, int64_t group) {
  torch::NoGradGuard ng;
  if (rows * cols != static_cast<int64_t>(w.size()) || bits < 1 || bits > 16 || group < 1)
    fail(NWC_E_INVALID_ARG, "awq_pseudo_quantize: bad shape, bits or group");
  auto t = torch::from_blob(const_cast<float *>(w.data()), {rows, cols}, torch::kFloat32);
  return values_of(pseudo_quantize(t, bits, group));
}

AwqResult awq_search(const Model &model, const std::vector<int32_t> &tokens,
                     const CalibrationSettings &calibration, const AwqSettings &cfg,
                     const std::function<void(const AwqGroupReport &)> &progress) {
  torch::NoGradGuard ng;
  if (cfg.bits < 1 || cfg.bits > 8 || cfg.group < 1 || cfg.grid < 1 || cfg.clip_grid < 1 ||
      cfg.clip_tokens < 1 || !(cfg.max_shrink >= 0.0 && cfg.max_shrink < 1.0))
    fail(NWC_E_INVALID_ARG, "awq: bits must be 1..8, group, grid, clip_grid and clip_tokens "
                            "positive, max_shrink in [0, 1)");
  llama::configure_threads(1); // parallel work below runs one LibTorch thread per task
  const unsigned threads = host::resolve_threads(calibration.threads);
  const Architecture &a = model.arch;
  const llama::BlockShape shape = llama::block_shape(a, model.path.string());
  const Calibration plan = calibration_plan(a, static_cast<int64_t>(tokens.size()), calibration);
  const int64_t windows = plan.tokens / plan.seq_len;
  for (int64_t i = 0; i < plan.tokens; ++i)
    if (tokens[static_cast<size_t>(i)] < 0 || tokens[static_cast<size_t>(i)] >= a.vocab_size)
      fail(NWC_E_INVALID_ARG, "awq: calibration token outside the vocabulary");
  auto ids =
      torch::from_blob(const_cast<int32_t *>(tokens.data()), {windows, plan.seq_len}, torch::kInt32)
          .to(torch::kInt64);
  torch::Tensor x = llama::load_weight(model, "model.embed_tokens.weight", {a.vocab_size, a.dim})
                        .index_select(0, ids.reshape({-1}))
                        .view({windows, plan.seq_len, a.dim});

  AwqResult result;
  result.tokens = plan.tokens;
  for (int64_t l = 0; l < a.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    llama::BlockWeights w = llama::load_block(model, l, shape);
    // The inputs of every linear with the original weights, and the block's output (the next
    // block's input: teacher forcing, as AutoAWQ).
    std::map<std::string, torch::Tensor> in;
    std::vector<torch::Tensor> outputs;
    std::map<std::string, std::vector<torch::Tensor>> captured;
    llama::Report capture = [&](const char *suffix, const torch::Tensor &v) {
      captured[suffix].push_back(v.clone());
    };
    for (const auto &xc : x.split(kWindowsPerPass))
      outputs.push_back(llama::decoder_block(w, shape, xc, 0, nullptr, nullptr, &capture));
    for (auto &[suffix, c] : captured) in[suffix] = torch::cat(c);
    torch::Tensor next = torch::cat(outputs);
    const bool fold_o = w.wv.size(0) == w.wo.size(1); // no grouped-query attention

    std::vector<ScaleGroup> groups;
    groups.push_back({"qkv", {&w.wq, &w.wk, &w.wv}, in["attn_in"], [&](const auto &q) {
                        llama::BlockWeights m = w;
                        m.wq = q[0];
                        m.wk = q[1];
                        m.wv = q[2];
                        // A few windows at a time: attention scores of every window at once
                        // would be a large temporary (page faults cost more than the work).
                        std::vector<torch::Tensor> parts;
                        for (const auto &h : in["attn_in"].split(kWindowsPerPass))
                          parts.push_back(
                              llama::attention(m, shape, h, 0, nullptr, nullptr, nullptr));
                        return torch::cat(parts);
                      }});
    if (fold_o)
      groups.push_back({"o", {&w.wo}, in["attn_out"], [&](const auto &q) {
                          return torch::matmul(in["attn_out"], q[0].t());
                        }});
    groups.push_back({"gate_up", {&w.w_gate, &w.w_up}, in["mlp_in"], [&](const auto &q) {
                        llama::BlockWeights m = w;
                        m.w_gate = q[0];
                        m.w_up = q[1];
                        return llama::mlp(m, in["mlp_in"], nullptr);
                      }});
    groups.push_back({"down", {&w.w_down}, in["mlp_out"], [&](const auto &q) {
                        return torch::matmul(in["mlp_out"], q[0].t());
                      }});
    // Every search on the original weights, then all scales applied (AutoAWQ's order).
    std::vector<ScaleChoice> choices;
    for (const auto &g : groups) {
      choices.push_back(search_scales(g, cfg, threads));
      AwqGroupReport rep{l, g.name, choices.back().ratio, choices.back().loss_rtn,
                         choices.back().loss_best};
      result.groups.push_back(rep);
      if (progress) progress(rep);
    }
    std::map<std::string, torch::Tensor> scaled_input; // each linear's input / its scales
    for (size_t i = 0; i < groups.size(); ++i) {
      const auto &s = choices[i].scales;
      const std::string name = groups[i].name;
      for (auto *lin : groups[i].linears) *lin = *lin * s.view({1, -1});
      if (name == "qkv") w.attn_norm = w.attn_norm / s;
      if (name == "gate_up") w.ffn_norm = w.ffn_norm / s;
      // The scales of o's and down's inputs fold into the rows (and biases) of v and up.
      if (name == "o") w.wv = w.wv / s.view({-1, 1});
      if (name == "o" && w.bv.defined()) w.bv = w.bv / s;
      if (name == "down") w.w_up = w.w_up / s.view({-1, 1});
      if (name == "down" && w.b_up.defined()) w.b_up = w.b_up / s;
    }
    auto divided = [&](const char *suffix, const char *group) {
      for (size_t i = 0; i < groups.size(); ++i)
        if (std::string(groups[i].name) == group)
          return (in[suffix] / choices[i].scales).reshape({-1, in[suffix].size(-1)});
      return in[suffix].reshape({-1, in[suffix].size(-1)});
    };
    if (cfg.clip) { // q_proj and k_proj are left alone, as AutoAWQ's avoid_clipping
      w.wv = clip_weights(w.wv, divided("attn_in", "qkv"), cfg, threads);
      w.wo = clip_weights(w.wo, divided("attn_out", "o"), cfg, threads);
      w.w_gate = clip_weights(w.w_gate, divided("mlp_in", "gate_up"), cfg, threads);
      w.w_up = clip_weights(w.w_up, divided("mlp_in", "gate_up"), cfg, threads);
      w.w_down = clip_weights(w.w_down, divided("mlp_out", "down"), cfg, threads);
    }
    const std::pair<const char *, torch::Tensor *> out[] = {
        {"input_layernorm.weight", &w.attn_norm}, {"post_attention_layernorm.weight", &w.ffn_norm},
        {"self_attn.q_proj.weight", &w.wq},       {"self_attn.k_proj.weight", &w.wk},
        {"self_attn.v_proj.weight", &w.wv},       {"self_attn.o_proj.weight", &w.wo},
        {"mlp.gate_proj.weight", &w.w_gate},      {"mlp.up_proj.weight", &w.w_up},
        {"mlp.down_proj.weight", &w.w_down}};
    for (const auto &[suffix, t] : out) result.replaced[p + suffix] = values_of(*t);
    if (w.bv.defined()) result.replaced[p + "self_attn.v_proj.bias"] = values_of(w.bv);
    if (w.b_up.defined()) result.replaced[p + "mlp.up_proj.bias"] = values_of(w.b_up);
    x = next;
  }
  return result;
}

Model with_replaced_tensors(const Model &model,
                            std::map<std::string, std::vector<float>> replaced) {
  Model m = model;
  for (auto &t : m.tensors) {
    auto it = replaced.find(t.info.name);
    if (it == replaced.end()) continue;
    if (it->second.size() != t.info.numel())
      fail(NWC_E_INTERNAL, "replaced tensor " + t.info.name + " has the wrong element count");
    auto values = std::make_shared<const std::vector<float>>(std::move(it->second));
    t.load = [values] { return *values; };
    replaced.erase(it);
  }
  if (!replaced.empty())
    fail(NWC_E_INTERNAL, "replaced tensor " + replaced.begin()->first + " is not in the model");
  return m;
}

AwqScaled awq_scale_model(const Model &model, const std::vector<int32_t> &tokens,
                          const CalibrationSettings &calibration, const host::AwqConfig &config,
                          const std::function<void(const std::vector<AwqGroupReport> &)> &block) {
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<AwqGroupReport> pending; // the groups of the block being searched
  auto flush = [&] {
    if (block && !pending.empty()) block(pending);
    pending.clear();
  };
  AwqResult r = awq_search(model, tokens, calibration, config, [&](const AwqGroupReport &g) {
    if (!pending.empty() && pending.back().block != g.block) flush();
    pending.push_back(g);
  });
  flush();
  Model scaled = with_replaced_tensors(model, std::move(r.replaced));
  r.replaced.clear();
  AwqScaled out{std::move(scaled), std::move(r), 0.0};
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

} // namespace nwc::runtime
