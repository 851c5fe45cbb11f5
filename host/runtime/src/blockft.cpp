#include "nwc/runtime/blockft.hpp"

#include "llama_block.hpp"
#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <map>
#include <random>

namespace nwc::runtime {
using namespace nwc::host;

namespace {

// The linears of a block in coding order (v, q, k, o, up, gate, down) with their fields.
struct LinearSlot {
  const char *name; // "self_attn.v_proj"
  torch::Tensor llama::BlockWeights::*field;
};
const LinearSlot kOrder[] = {
    {"self_attn.v_proj", &llama::BlockWeights::wv}, {"self_attn.q_proj", &llama::BlockWeights::wq},
    {"self_attn.k_proj", &llama::BlockWeights::wk}, {"self_attn.o_proj", &llama::BlockWeights::wo},
    {"mlp.up_proj", &llama::BlockWeights::w_up},    {"mlp.gate_proj", &llama::BlockWeights::w_gate},
    {"mlp.down_proj", &llama::BlockWeights::w_down}};

torch::Tensor load(const Model &m, const std::string &name) {
  const ModelTensor *t = m.find(name);
  if (!t) fail(NWC_E_INVALID_ARG, m.path.string() + ": missing tensor " + name);
  std::vector<float> v = t->load();
  return torch::from_blob(v.data(), t->info.shape, torch::kFloat32).clone();
}

std::vector<float> values_of(const torch::Tensor &t) {
  auto c = t.detach().contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// A linear already coded: decoded values at unit row scales (frozen) times trainable row scales.
struct Coded {
  std::shared_ptr<TensorCoding> coding;
  torch::Tensor unit;  // [rows, cols]
  torch::Tensor scale; // [rows], trainable
  bool chunker_scales = false;
};

} // namespace

BlockFtResult compress_model_blockft(const Model &model, const Pipeline &pipeline,
                                     const Registry &registry, const std::filesystem::path &out,
                                     const CompressSettings &settings,
                                     const std::vector<int32_t> &tokens,
                                     const std::function<void(const BlockFtReport &)> &progress) {
  const BlockFtConfig &cfg = pipeline.blockft;
  const Architecture &a = model.arch;
  const std::string src = model.path.string();
  llama::BlockShape shape = llama::block_shape(a, src);
  const int64_t seq = std::min<int64_t>(cfg.seq_len, std::max<int64_t>(a.max_seq_len, 1));
  const int64_t windows = cfg.sequences + cfg.validation;
  if (static_cast<int64_t>(tokens.size()) < windows * seq)
    fail(NWC_E_INVALID_ARG, pipeline.file.string() + ": [blockft] needs " +
                                std::to_string(windows) + " windows of " + std::to_string(seq) +
                                " calibration tokens, the calibration text has " +
                                std::to_string(tokens.size()));
  for (int32_t t : tokens)
    if (t < 0 || t >= a.vocab_size)
      fail(NWC_E_INVALID_ARG, "blockft: calibration token outside the vocabulary");
  torch::manual_seed(0);
  std::mt19937_64 rng(0);

  auto ids = torch::from_blob(const_cast<int32_t *>(tokens.data()), {windows, seq}, torch::kInt32)
                 .to(torch::kInt64);
  torch::Tensor x;
  {
    torch::NoGradGuard ng;
    x = load(model, "model.embed_tokens.weight").index_select(0, ids.reshape({-1}));
    x = x.view({windows, seq, a.dim});
  }
  CompressSettings s = settings;
  BlockFtResult result;
  for (int64_t l = 0; l < a.n_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const llama::BlockWeights orig = llama::load_block(model, l, shape);
    torch::Tensor target;
    {
      torch::NoGradGuard ng;
      target = llama::decoder_block(orig, shape, x, 0, nullptr, nullptr, nullptr);
    }
    auto x_train = x.narrow(0, 0, cfg.sequences), y_train = target.narrow(0, 0, cfg.sequences);
    auto x_val = x.narrow(0, cfg.sequences, cfg.validation);
    auto y_val = target.narrow(0, cfg.sequences, cfg.validation);

    // Trainable state: the norms and every linear not yet coded. Biases and q/k norms (in the
    // variants that have them) stay as they are.
    llama::BlockWeights cur = orig;
    cur.attn_norm = orig.attn_norm.clone().requires_grad_(true);
    cur.ffn_norm = orig.ffn_norm.clone().requires_grad_(true);
    for (const auto &slot : kOrder)
      cur.*slot.field = (orig.*slot.field).clone().requires_grad_(true);
    std::map<std::string, Coded> coded;

    auto effective = [&]() {
      llama::BlockWeights w = cur;
      for (const auto &slot : kOrder) {
        auto it = coded.find(slot.name);
        if (it != coded.end()) w.*slot.field = it->second.unit * it->second.scale.unsqueeze(1);
      }
      return w;
    };
    auto held_out_mse = [&]() {
      torch::NoGradGuard ng;
      auto y = llama::decoder_block(effective(), shape, x_val, 0, nullptr, nullptr, nullptr);
      return torch::mse_loss(y, y_val).item<double>();
    };

    for (const auto &slot : kOrder) {
      const std::string name = p + slot.name + ".weight";
      if (!pipeline.chain_for(name)) continue; // stored raw: stays trainable, written at the end
      const ModelTensor *mt = model.find(name);
      TensorCoding tc = encode_tensor(pipeline, registry, mt->info, values_of(cur.*slot.field), s);
      Coded c;
      c.coding = std::make_shared<TensorCoding>(std::move(tc));
      const auto &info = mt->info;
      c.unit = torch::from_blob(c.coding->unit_reconstruction.data(), info.shape, torch::kFloat32)
                   .clone();
      c.chunker_scales = !c.coding->row_scales.empty();
      c.scale = c.chunker_scales ? torch::tensor(c.coding->row_scales)
                                 : torch::ones({info.shape[0]}, torch::kFloat32);
      c.scale.requires_grad_(true);
      coded[slot.name] = c;

      // Fine-tune: row scales of coded linears, weights of uncoded ones, both norms.
      std::vector<torch::Tensor> params{cur.attn_norm, cur.ffn_norm};
      for (const auto &sl : kOrder) {
        auto it = coded.find(sl.name);
        params.push_back(it != coded.end() ? it->second.scale : cur.*sl.field);
      }
      auto snapshot = [&]() {
        std::vector<torch::Tensor> v;
        for (auto &t : params) v.push_back(t.detach().clone());
        return v;
      };
      BlockFtReport rep;
      rep.linear = name;
      rep.block = l;
      rep.mse_before = held_out_mse();
      double best = rep.mse_before;
      auto best_state = snapshot();
      torch::optim::Adam opt(params, torch::optim::AdamOptions(cfg.lr));
      std::vector<int64_t> order(static_cast<size_t>(cfg.sequences));
      std::iota(order.begin(), order.end(), 0);
      for (int64_t epoch = 1; epoch <= cfg.epochs; ++epoch) {
        std::shuffle(order.begin(), order.end(), rng);
        for (int64_t b0 = 0; b0 < cfg.sequences; b0 += cfg.batch) {
          const int64_t nb = std::min(cfg.batch, cfg.sequences - b0);
          auto idx =
              torch::tensor(std::vector<int64_t>(order.begin() + b0, order.begin() + b0 + nb));
          auto y = llama::decoder_block(effective(), shape, x_train.index_select(0, idx), 0,
                                        nullptr, nullptr, nullptr);
          auto loss = torch::mse_loss(y, y_train.index_select(0, idx));
          opt.zero_grad();
          loss.backward();
          opt.step();
        }
        const double v = held_out_mse();
        if (v < best) {
          best = v;
          best_state = snapshot();
          rep.best_epoch = epoch;
        }
      }
      {
        torch::NoGradGuard ng;
        for (size_t k = 0; k < params.size(); ++k) params[k].copy_(best_state[k]);
      }
      rep.mse_after = best;
      result.steps.push_back(rep);
      if (progress) progress(rep);
    }

    // The block is done: fine-tuned scales go into the codings, norms and raw linears are replaced.
    for (auto &[slot_name, c] : coded) {
      std::vector<float> scale = values_of(c.scale);
      const bool unchanged = !c.chunker_scales && std::all_of(scale.begin(), scale.end(),
                                                              [](float v) { return v == 1.0f; });
      if (!unchanged) set_row_scales(*c.coding, scale); // no row gain when it would be all ones
      s.precoded[p + slot_name + ".weight"] = c.coding;
      result.reconstructions[p + slot_name + ".weight"] = c.coding->reconstruction;
    }
    s.replaced[p + "input_layernorm.weight"] =
        std::make_shared<std::vector<float>>(values_of(cur.attn_norm));
    s.replaced[p + "post_attention_layernorm.weight"] =
        std::make_shared<std::vector<float>>(values_of(cur.ffn_norm));
    for (const auto &slot : kOrder)
      if (!coded.count(slot.name))
        s.replaced[p + slot.name + ".weight"] =
            std::make_shared<std::vector<float>>(values_of(cur.*slot.field));
    x = target; // teacher forcing: the next block sees the original model's hidden states
  }
  result.compress = compress_model(model, pipeline, registry, out, s);
  return result;
}

} // namespace nwc::runtime
