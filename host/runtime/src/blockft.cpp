#include "nwc/runtime/blockft.hpp"

#include "llama_block.hpp"
#include "nwc/cpp/error.hpp"

#include <algorithm>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
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

  torch::Tensor weight() const { return unit * scale.unsqueeze(1); }

  // Its fine-tuned row scales go into its coding, which goes to s.precoded (to be written as it is)
  // and to `reconstructions`.
  void commit(const std::string &name, CompressSettings &s,
              std::map<std::string, std::vector<float>> &reconstructions) const {
    std::vector<float> v = values_of(scale);
    const bool unchanged =
        !chunker_scales && std::all_of(v.begin(), v.end(), [](float x) { return x == 1.0f; });
    if (!unchanged) set_row_scales(*coding, v); // no row gain when it would be all ones
    s.precoded[name] = coding;
    reconstructions[name] = coding->reconstruction;
  }
};

// Codes a tensor (values: [rows, cols]) with the pipeline's chain for it, as a Coded with trainable
// row scales starting at the chunker's stored ones (or at 1).
Coded code_tensor(const TensorInfo &info, std::vector<float> values, const Pipeline &pipeline,
                  const Registry &registry, const CompressSettings &s) {
  Coded c;
  c.coding =
      std::make_shared<TensorCoding>(encode_tensor(pipeline, registry, info, std::move(values), s));
  c.unit =
      torch::from_blob(c.coding->unit_reconstruction.data(), info.shape, torch::kFloat32).clone();
  c.chunker_scales = !c.coding->row_scales.empty();
  c.scale = c.chunker_scales ? torch::tensor(c.coding->row_scales)
                             : torch::ones({info.shape[0]}, torch::kFloat32);
  c.scale.requires_grad_(true);
  return c;
}

// The calibration windows' token embeddings [windows, seq, dim]: the first block's input.
torch::Tensor embed_windows(const Model &model, const std::vector<int32_t> &tokens, int64_t windows,
                            int64_t seq) {
  torch::NoGradGuard ng;
  auto ids = torch::from_blob(const_cast<int32_t *>(tokens.data()), {windows, seq}, torch::kInt32)
                 .to(torch::kInt64);
  auto x = load(model, "model.embed_tokens.weight").index_select(0, ids.reshape({-1}));
  return x.view({windows, seq, model.arch.dim});
}

// Adam on `params` for `epochs` passes over `windows` training windows in shuffled batches
// (`loss_of` gives a batch's loss from its window indices); after every epoch `held_out` is
// measured and the parameters of the best epoch, the start included, are kept. Fills the report's
// before/after/best_epoch fields.
void train_keep_best(const std::vector<torch::Tensor> &params, double lr, int64_t epochs,
                     int64_t windows, int64_t batch, std::mt19937_64 &rng,
                     const std::function<torch::Tensor(const torch::Tensor &)> &loss_of,
                     const std::function<double()> &held_out, BlockFtReport &rep) {
  auto snapshot = [&]() {
    std::vector<torch::Tensor> v;
    for (const auto &t : params) v.push_back(t.detach().clone());
    return v;
  };
  rep.mse_before = rep.mse_after = held_out();
  auto best_state = snapshot();
  torch::optim::Adam opt(params, torch::optim::AdamOptions(lr));
  std::vector<int64_t> order(static_cast<size_t>(windows));
  std::iota(order.begin(), order.end(), 0);
  for (int64_t epoch = 1; epoch <= epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    for (int64_t b0 = 0; b0 < windows; b0 += batch) {
      const int64_t nb = std::min(batch, windows - b0);
      auto loss =
          loss_of(torch::tensor(std::vector<int64_t>(order.begin() + b0, order.begin() + b0 + nb)));
      opt.zero_grad();
      loss.backward();
      opt.step();
    }
    const double v = held_out();
    if (v < rep.mse_after) {
      rep.mse_after = v;
      best_state = snapshot();
      rep.best_epoch = epoch;
    }
  }
  torch::NoGradGuard ng;
  for (size_t k = 0; k < params.size(); ++k) params[k].copy_(best_state[k]);
}

// One decoder block being coded linear by linear: its original output on the calibration windows
// (the target), the trainable state (both norms and the linears not yet coded; biases and q/k
// norms of the variants stay as they are) and the linears coded so far, each fine-tuned after it
// is coded.
class BlockTuning {
public:
  // x: the original model's hidden states at the block's input (the target is the original
  // block's output on them); x_in: the states it is fine-tuned on (x, or the coded blocks').
  BlockTuning(const Model &model, int64_t layer, const llama::BlockShape &shape,
              const BlockFtConfig &cfg, const torch::Tensor &x, const torch::Tensor &x_in)
      : shape_(shape), cfg_(cfg), orig_(llama::load_block(model, layer, shape)) {
    {
      torch::NoGradGuard ng;
      target_ = llama::decoder_block(orig_, shape_, x, 0, nullptr, nullptr, nullptr);
    }
    x_train_ = x_in.narrow(0, 0, cfg.sequences);
    y_train_ = target_.narrow(0, 0, cfg.sequences);
    x_val_ = x_in.narrow(0, cfg.sequences, cfg.validation);
    y_val_ = target_.narrow(0, cfg.sequences, cfg.validation);
    cur_ = orig_;
    cur_.attn_norm = orig_.attn_norm.clone().requires_grad_(true);
    cur_.ffn_norm = orig_.ffn_norm.clone().requires_grad_(true);
    for (const auto &slot : kOrder)
      cur_.*slot.field = (orig_.*slot.field).clone().requires_grad_(true);
  }

  // The original block's output on the original states.
  const torch::Tensor &target() const { return target_; }

  // The block as coded and fine-tuned so far, applied to x.
  torch::Tensor coded_output(const torch::Tensor &x) const {
    torch::NoGradGuard ng;
    return llama::decoder_block(effective(), shape_, x, 0, nullptr, nullptr, nullptr);
  }

  // Codes the linear in `slot` (tensor `name`) from its current weights, then fine-tunes.
  BlockFtReport code_and_tune(const LinearSlot &slot, const ModelTensor &tensor,
                              const Pipeline &pipeline, const Registry &registry,
                              const CompressSettings &s, std::mt19937_64 &rng) {
    coded_[slot.name] =
        code_tensor(tensor.info, values_of(cur_.*slot.field), pipeline, registry, s);
    BlockFtReport rep;
    rep.linear = tensor.info.name;
    fine_tune(rep, rng);
    return rep;
  }

  // The block is done: fine-tuned scales go into the codings (s.precoded), the norms and the
  // uncoded linears replace the model's (s.replaced).
  void commit(const std::string &prefix, CompressSettings &s, BlockFtResult &result) const {
    for (const auto &[slot_name, c] : coded_)
      c.commit(prefix + slot_name + ".weight", s, result.reconstructions);
    s.replaced[prefix + "input_layernorm.weight"] =
        std::make_shared<std::vector<float>>(values_of(cur_.attn_norm));
    s.replaced[prefix + "post_attention_layernorm.weight"] =
        std::make_shared<std::vector<float>>(values_of(cur_.ffn_norm));
    for (const auto &slot : kOrder)
      if (!coded_.count(slot.name))
        s.replaced[prefix + slot.name + ".weight"] =
            std::make_shared<std::vector<float>>(values_of(cur_.*slot.field));
  }

  // What fine-tuning trains: both norms, the row scales of the coded linears and the weights of
  // the linears not coded.
  std::vector<torch::Tensor> trainable() const {
    std::vector<torch::Tensor> params{cur_.attn_norm, cur_.ffn_norm};
    for (const auto &sl : kOrder) {
      auto it = coded_.find(sl.name);
      params.push_back(it != coded_.end() ? it->second.scale : cur_.*sl.field);
    }
    return params;
  }

  // The original block, for the teacher's forward pass.
  const llama::BlockWeights &original() const { return orig_; }

  // Drops the calibration states once the block is coded (the end-to-end stage keeps every block).
  void release_states() { target_ = x_train_ = y_train_ = x_val_ = y_val_ = torch::Tensor(); }

  // The block as the decoder will see it: coded linears at their trainable row scales.
  llama::BlockWeights effective() const {
    llama::BlockWeights w = cur_;
    for (const auto &slot : kOrder) {
      auto it = coded_.find(slot.name);
      if (it != coded_.end()) w.*slot.field = it->second.weight();
    }
    return w;
  }

private:
  double held_out_mse() const {
    torch::NoGradGuard ng;
    auto y = llama::decoder_block(effective(), shape_, x_val_, 0, nullptr, nullptr, nullptr);
    return torch::mse_loss(y, y_val_).item<double>();
  }

  // Adam on the row scales of coded linears, the weights of uncoded ones and both norms, for
  // cfg.epochs epochs; the parameters of the epoch with the lowest held-out MSE are kept.
  void fine_tune(BlockFtReport &rep, std::mt19937_64 &rng) {
    train_keep_best(
        trainable(), cfg_.lr, cfg_.epochs, cfg_.sequences, cfg_.batch, rng,
        [&](const torch::Tensor &idx) {
          auto y = llama::decoder_block(effective(), shape_, x_train_.index_select(0, idx), 0,
                                        nullptr, nullptr, nullptr);
          return torch::mse_loss(y, y_train_.index_select(0, idx));
        },
        [&] { return held_out_mse(); }, rep);
  }

  const llama::BlockShape &shape_;
  const BlockFtConfig &cfg_;
  const llama::BlockWeights orig_;
  llama::BlockWeights cur_;
  torch::Tensor target_, x_train_, y_train_, x_val_, y_val_;
  std::map<std::string, Coded> coded_;
};

// Tokens per fine-tuning window: seq_len, capped at the model's context.
int64_t window_length(const BlockFtConfig &cfg, const Architecture &a) {
  return std::min<int64_t>(cfg.seq_len, std::max<int64_t>(a.max_seq_len, 1));
}

int64_t e2e_sequences(const BlockFtConfig &cfg) {
  return cfg.e2e_sequences > 0 ? cfg.e2e_sequences : cfg.sequences;
}

// Calibration windows the fine-tuning reads: the training windows of whichever stage takes more,
// then the held-out ones.
int64_t calibration_windows(const BlockFtConfig &cfg) {
  return std::max(cfg.sequences, cfg.e2e_epochs > 0 ? e2e_sequences(cfg) : 0) + cfg.validation;
}

// The tensors outside the decoder blocks that the end-to-end stage trains: the final norm always;
// the token embedding and the output head (its own tensor, or the embedding itself when tied)
// where the pipeline codes them, as coded tensors whose row scales train (their decoded values
// are what the coded model computes with); with cfg.e2e_embeddings, their values where the
// pipeline stores them uncoded. Undefined / empty: not trained.
struct OuterTensors {
  torch::Tensor final_norm, embedding, head;
  std::optional<Coded> coded_embedding, coded_head;
};

// Fine-tunes the coded model end to end (cfg.e2e_epochs): the row scales of every coded tensor
// (linears; the embedding and the output head where the pipeline codes them), every norm (the
// final one included), the weights of the linears stored uncoded and, with cfg.e2e_embeddings,
// the uncoded embedding and output head, together, to reproduce the original
// model's next-token distributions (KL divergence, mean per token) on the calibration windows; the
// epoch with the lowest held-out KL is kept, the start included. Reported as a BlockFtReport with
// block -1 whose "MSE" fields hold the held-out KL.
BlockFtReport tune_end_to_end(const Model &model, const llama::BlockShape &shape,
                              const BlockFtConfig &cfg,
                              const std::vector<std::unique_ptr<BlockTuning>> &blocks,
                              OuterTensors &outer, const torch::Tensor &ids, std::mt19937_64 &rng) {
  const Architecture &a = model.arch;
  const bool tied = !model.find("lm_head.weight");
  const torch::Tensor embed = load(model, "model.embed_tokens.weight");
  const torch::Tensor classifier = tied ? embed : load(model, "lm_head.weight");
  const torch::Tensor &final_norm = outer.final_norm;
  // The coded model's, per forward pass (row scales train): coded, else trained where defined,
  // else the original's (a tied head is the embedding).
  auto coded_embed = [&]() -> torch::Tensor {
    if (outer.coded_embedding) return outer.coded_embedding->weight();
    return outer.embedding.defined() ? outer.embedding : embed;
  };
  auto coded_classifier = [&](const torch::Tensor &coded_embedding) -> torch::Tensor {
    if (outer.coded_head) return outer.coded_head->weight();
    if (outer.head.defined()) return outer.head;
    return tied ? coded_embedding : classifier;
  };
  const int64_t seq = ids.size(1);
  auto log_probs = [&](const torch::Tensor &window_ids, bool original, const torch::Tensor &norm) {
    const torch::Tensor e = original ? embed : coded_embed();
    const torch::Tensor c = original ? classifier : coded_classifier(e);
    auto x = e.index_select(0, window_ids.reshape({-1})).view({window_ids.size(0), seq, a.dim});
    for (const auto &b : blocks)
      x = llama::decoder_block(original ? b->original() : b->effective(), shape, x, 0, nullptr,
                               nullptr, nullptr);
    return torch::log_softmax(torch::matmul(llama::rmsnorm(x, norm, a.norm_eps), c.t()), -1);
  };
  torch::Tensor teacher;
  {
    torch::NoGradGuard ng;
    teacher = log_probs(ids, true, final_norm);
  }
  auto kl = [&](const torch::Tensor &student, const torch::Tensor &target) {
    return (target.exp() * (target - student)).sum(-1).mean();
  };
  const int64_t sequences = e2e_sequences(cfg);
  const auto train_ids = ids.narrow(0, 0, sequences);
  const auto val_ids = ids.narrow(0, sequences, cfg.validation);
  const auto val_teacher = teacher.narrow(0, sequences, cfg.validation);
  std::vector<torch::Tensor> params{final_norm};
  for (const auto &b : blocks)
    for (auto &t : b->trainable()) params.push_back(t);
  if (outer.embedding.defined()) params.push_back(outer.embedding);
  if (outer.head.defined()) params.push_back(outer.head);
  if (outer.coded_embedding) params.push_back(outer.coded_embedding->scale);
  if (outer.coded_head) params.push_back(outer.coded_head->scale);
  BlockFtReport rep;
  rep.linear = "end to end";
  rep.block = -1;
  train_keep_best(
      params, cfg.e2e_lr, cfg.e2e_epochs, sequences, cfg.batch, rng,
      [&](const torch::Tensor &idx) {
        return kl(log_probs(train_ids.index_select(0, idx), false, final_norm),
                  teacher.index_select(0, idx));
      },
      [&] {
        torch::NoGradGuard ng;
        return kl(log_probs(val_ids, false, final_norm), val_teacher).item<double>();
      },
      rep);
  return rep;
}

} // namespace

void require_blockft_calibration(const Pipeline &pipeline, const Architecture &arch, size_t tokens,
                                 const std::string &source) {
  const int64_t needed =
      calibration_windows(pipeline.blockft) * window_length(pipeline.blockft, arch);
  if (static_cast<int64_t>(tokens) < needed)
    fail(NWC_E_INVALID_ARG, pipeline.file.string() + ": [blockft] needs " + std::to_string(needed) +
                                " calibration tokens, " + source + " has " +
                                std::to_string(tokens));
}

BlockFtResult compress_model_blockft(const Model &model, const Pipeline &pipeline,
                                     const Registry &registry, const std::filesystem::path &out,
                                     const CompressSettings &settings,
                                     const std::vector<int32_t> &tokens,
                                     const std::function<void(const BlockFtReport &)> &progress) {
  const BlockFtConfig &cfg = pipeline.blockft;
  const Architecture &a = model.arch;
  const llama::BlockShape shape = llama::block_shape(a, model.path.string());
  const int64_t seq = window_length(cfg, a);
  require_blockft_calibration(pipeline, a, tokens.size(), "the calibration text");
  for (int32_t t : tokens)
    if (t < 0 || t >= a.vocab_size)
      fail(NWC_E_INVALID_ARG, "blockft: calibration token outside the vocabulary");
  torch::manual_seed(cfg.seed);
  std::mt19937_64 rng(static_cast<uint64_t>(cfg.seed));

  torch::Tensor x = embed_windows(model, tokens, cfg.sequences + cfg.validation, seq);
  torch::Tensor x_coded = x; // the coded blocks' states (cfg.coded_inputs)
  CompressSettings s = settings;
  BlockFtResult result;
  // Every block stays until the end when the end-to-end stage trains them all together.
  std::vector<std::unique_ptr<BlockTuning>> blocks;
  for (int64_t l = 0; l < a.n_layers; ++l) {
    const std::string prefix = "model.layers." + std::to_string(l) + ".";
    auto block =
        std::make_unique<BlockTuning>(model, l, shape, cfg, x, cfg.coded_inputs ? x_coded : x);
    for (const auto &slot : kOrder) {
      const std::string name = prefix + slot.name + ".weight";
      if (!pipeline.chain_for(name)) continue; // stored raw: stays trainable, written at the end
      BlockFtReport rep = block->code_and_tune(slot, *model.find(name), pipeline, registry, s, rng);
      rep.block = l;
      result.steps.push_back(rep);
      if (progress) progress(rep);
    }
    if (cfg.coded_inputs) x_coded = block->coded_output(x_coded);
    x = block->target(); // the original model's states: the next block's target is computed on them
    if (cfg.e2e_epochs > 0) {
      block->release_states();
      blocks.push_back(std::move(block));
    } else {
      block->commit(prefix, s, result);
    }
  }
  if (cfg.e2e_epochs > 0) {
    OuterTensors outer;
    outer.final_norm = load(model, "model.norm.weight").requires_grad_(true);
    for (const char *name : {"model.embed_tokens.weight", "lm_head.weight"}) {
      const ModelTensor *t = model.find(name);
      if (!t) continue; // a tied head: the embedding
      const bool embedding = std::string(name) == "model.embed_tokens.weight";
      if (pipeline.chain_for(name))
        (embedding ? outer.coded_embedding : outer.coded_head) =
            code_tensor(t->info, t->load(), pipeline, registry, s);
      else if (cfg.e2e_embeddings)
        (embedding ? outer.embedding : outer.head) = load(model, name).requires_grad_(true);
    }
    const auto ids = torch::from_blob(const_cast<int32_t *>(tokens.data()),
                                      {calibration_windows(cfg), seq}, torch::kInt32)
                         .to(torch::kInt64);
    BlockFtReport rep = tune_end_to_end(model, shape, cfg, blocks, outer, ids, rng);
    result.steps.push_back(rep);
    if (progress) progress(rep);
    for (size_t l = 0; l < blocks.size(); ++l)
      blocks[l]->commit("model.layers." + std::to_string(l) + ".", s, result);
    for (const auto &[name, t] :
         {std::pair<const char *, const torch::Tensor &>{"model.norm.weight", outer.final_norm},
          {"model.embed_tokens.weight", outer.embedding},
          {"lm_head.weight", outer.head}})
      if (t.defined()) s.replaced[name] = std::make_shared<std::vector<float>>(values_of(t));
    if (outer.coded_embedding)
      outer.coded_embedding->commit("model.embed_tokens.weight", s, result.reconstructions);
    if (outer.coded_head) outer.coded_head->commit("lm_head.weight", s, result.reconstructions);
  }
  result.compress = compress_model(model, pipeline, registry, out, s);
  return result;
}

} // namespace nwc::runtime
