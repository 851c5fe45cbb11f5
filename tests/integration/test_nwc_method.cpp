// The NWC whole-model method through the library: LDLQ feedback with the neural codec as block
// quantizer, Hessian quality levels, block-wise output-guided fine-tuning, and containers that
// decode to exactly what the encoder reconstructed.
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/compress.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/blockft.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/llama.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "nwc/tools/synth.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <cmath>
#include <doctest/doctest.h>
#include <fstream>
#include <map>
#include <memory>
#include <random>

namespace fs = std::filesystem;
using namespace nwc;
using namespace nwc::host;
using namespace nwc::runtime;
using nwc::test::TempDir;

namespace {

const nwc::host::Registry &registry() {
  return nwc::test::bundled_registry();
}

std::string codec_path() {
  return (nwc::test::source_dir() / "codecs" / "nwc-s-l300.nwcc").string();
}

Pipeline nwc_pipeline(const TempDir &dir, const std::string &compensator,
                      const std::string &extra = "", const std::string &pipeline_keys = "",
                      const std::string &quantizer = "plugin = \"nwc.quant.round\"") {
  fs::path p = dir.path() / "p.toml";
  std::ofstream(p) << "[pipeline]\nname = \"t\"\nselect = [\"*_proj.weight\"]\n"
                   << pipeline_keys
                   << "\n[chunker]\nplugin = \"nwc.chunk.column\"\n"
                      "[transform]\nplugin = \"nwc.transform.neural\"\ncodec = \""
                   << codec_path() << "\"\n[quantizer]\n"
                   << quantizer
                   << "\n"
                      "[entropy]\nplugin = \"nwc.entropy.rans\"\n"
                      "[compensator]\n"
                   << compensator << "\n"
                   << extra;
  return load_pipeline(p, registry());
}

// The first 20,000 tokens of the TinyStories calibration half, as stories260K reads them.
std::vector<int32_t> calibration_tokens(const Model &model) {
  auto tok = load_tokenizer(nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin",
                            model.arch.vocab_size);
  auto tokens = ppl_token_stream(
      read_text_file(nwc::test::data_dir() / "text" / "tinystories-calib.txt"), *tok);
  tokens.resize(20000);
  return tokens;
}

// tr(dW H dW^T) / tr(W H W^T)
double hessian_error(const std::vector<float> &w, const std::vector<float> &w_hat,
                     const std::vector<float> &h, int64_t rows, int64_t cols) {
  double num = 0, den = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        const double hij = h[static_cast<size_t>(i * cols + j)];
        const double d_i = w[r * cols + i] - w_hat[r * cols + i];
        const double d_j = w[r * cols + j] - w_hat[r * cols + j];
        num += d_i * hij * d_j;
        den += w[r * cols + i] * hij * w[r * cols + j];
      }
  return num / den;
}

} // namespace

TEST_CASE("LDLQ with the neural codec lowers the Hessian-weighted error against no feedback") {
  // A random problem: W 64 x 96 with heavy-ish tails, H = X^T X of strongly correlated inputs.
  const int64_t rows = 64, cols = 96;
  std::mt19937 rng(7);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (auto &v : w) v = 0.02f * g(rng) * (1.0f + 0.5f * std::abs(g(rng)));
  const int64_t samples = 400;
  std::vector<float> x(static_cast<size_t>(samples * cols));
  for (int64_t s = 0; s < samples; ++s) {
    const float common = g(rng);
    for (int64_t c = 0; c < cols; ++c)
      x[static_cast<size_t>(s * cols + c)] = 0.8f * common + 0.6f * g(rng);
  }
  auto h = std::make_shared<std::vector<float>>(static_cast<size_t>(cols * cols), 0.0f);
  for (int64_t s = 0; s < samples; ++s)
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j)
        (*h)[static_cast<size_t>(i * cols + j)] +=
            x[static_cast<size_t>(s * cols + i)] * x[static_cast<size_t>(s * cols + j)] / samples;
  TensorInfo info{"model.layers.0.mlp.up_proj.weight", DType::F32, {rows, cols}};
  CompressSettings settings;
  settings.hessians[info.name] = h;
  TempDir dir;
  auto plain = encode_tensor(nwc_pipeline(dir, "plugin = \"nwc.comp.none\"\nblock = 16"),
                             registry(), info, w, settings);
  auto ldlq = encode_tensor(nwc_pipeline(dir, "plugin = \"nwc.comp.ldlq\"\nblock = 16"), registry(),
                            info, w, settings);
  const double e_plain = hessian_error(w, plain.reconstruction, *h, rows, cols);
  const double e_ldlq = hessian_error(w, ldlq.reconstruction, *h, rows, cols);
  INFO("no feedback " << e_plain << ", LDLQ " << e_ldlq);
  CHECK(e_ldlq < 0.9 * e_plain);
}

// Hessians for every coded linear: any positive definite matrices do for exactness checks; the
// levels then follow diag(H).
CompressSettings tridiagonal_hessians(const Model &model, const Pipeline &pl) {
  CompressSettings s;
  for (const auto &t : model.tensors)
    if (t.info.shape.size() == 2 && pl.chain_for(t.info.name)) {
      const int64_t c = t.info.shape[1];
      auto h = std::make_shared<std::vector<float>>(static_cast<size_t>(c * c), 0.0f);
      for (int64_t i = 0; i < c; ++i) {
        (*h)[static_cast<size_t>(i * c + i)] = 1.0f + static_cast<float>((i * 37) % 11);
        if (i + 1 < c)
          (*h)[static_cast<size_t>(i * c + i + 1)] = (*h)[static_cast<size_t>((i + 1) * c + i)] =
              0.3f;
      }
      s.hessians[t.info.name] = h;
    }
  return s;
}

TEST_CASE(
    "Hessian levels and LDLQ: the container decodes to exactly the encoder's reconstruction") {
  Model model = load_model(nwc::test::stories260k());
  TempDir dir;
  Pipeline pl = nwc_pipeline(dir, "plugin = \"nwc.comp.ldlq\"\nblock = 16",
                             "[levels]\nfractions = [0.001, 0.01, 0.1]\n");
  CompressSettings s = tridiagonal_hessians(model, pl);
  const fs::path out = dir.path() / "m.nwc";
  compress_model(model, pl, registry(), out, s);
  ContainerReader reader(out);
  ContainerDecoder decoder(reader, registry());
  int checked = 0;
  for (const auto &name :
       {"model.layers.0.self_attn.q_proj.weight", "model.layers.3.mlp.down_proj.weight"}) {
    const ModelTensor *mt = model.find(name);
    REQUIRE(mt);
    TensorCoding tc = encode_tensor(pl, registry(), mt->info, mt->load(), s);
    const TensorRecord *rec = reader.find(name);
    REQUIRE(rec);
    bool has_levels = false;
    for (const auto &st : rec->streams) has_levels |= st.role == "levels";
    CHECK(has_levels);
    CHECK(decoder.decode_tensor(*rec, 2) == tc.reconstruction);
    ++checked;
  }
  CHECK(checked == 2);
}

TEST_CASE("blockft lowers the held-out block MSE, never raises it, and decodes exactly") {
  Model model = load_model(nwc::test::stories260k());
  TempDir dir;
  Pipeline pl = nwc_pipeline(dir, "plugin = \"nwc.comp.none\"\nblock = 64",
                             "[blockft]\nepochs = 2\nlr = 1e-3\nsequences = 8\nvalidation = 4\n"
                             "seq_len = 64\n");
  const std::vector<int32_t> tokens = calibration_tokens(model);
  const fs::path out = dir.path() / "ft.nwc";
  CompressSettings s;
  s.threads = 2;
  BlockFtResult r = compress_model_blockft(model, pl, registry(), out, s, tokens);
  REQUIRE(r.steps.size() == 5 * 7);
  int improved = 0;
  for (const auto &st : r.steps) {
    INFO(st.linear << ": " << st.mse_before << " -> " << st.mse_after);
    CHECK(st.mse_after <= st.mse_before);
    improved += st.mse_after < st.mse_before;
  }
  CHECK(improved > 20);
  // The container holds the fine-tuned scales and norms and decodes to the encoder's values.
  ContainerReader reader(out);
  ContainerDecoder decoder(reader, registry());
  REQUIRE(r.reconstructions.size() == 35);
  for (const auto &[name, values] : r.reconstructions) {
    const TensorRecord *rec = reader.find(name);
    REQUIRE(rec);
    CHECK(decoder.decode_tensor(*rec, 1) == values);
  }
  const TensorRecord *norm = reader.find("model.layers.2.input_layernorm.weight");
  REQUIRE(norm);
  CHECK(decoder.decode_tensor(*norm, 1) != model.find(norm->name)->load());
}

namespace {
// The mean per-token KL divergence from the original model's next-token distributions to a model's,
// on windows [first, first + count) of seq_len tokens, through the runtime's own forward pass.
double held_out_kl(const Model &original, const Model &coded, const std::vector<int32_t> &tokens,
                   int64_t first, int64_t count, int64_t seq_len) {
  const std::vector<int32_t> window(tokens.begin() + first * seq_len,
                                    tokens.begin() + (first + count) * seq_len);
  const auto p = LlamaModel(original, 1).logits(window, count, seq_len);
  const auto q = LlamaModel(coded, 1).logits(window, count, seq_len);
  const int64_t vocab = original.arch.vocab_size;
  double kl = 0;
  for (size_t at = 0; at < p.size(); at += static_cast<size_t>(vocab)) {
    auto log_softmax = [&](const std::vector<float> &z) {
      double mx = z[at];
      for (int64_t v = 1; v < vocab; ++v) mx = std::max<double>(mx, z[at + v]);
      double sum = 0;
      for (int64_t v = 0; v < vocab; ++v) sum += std::exp(z[at + v] - mx);
      std::vector<double> out(static_cast<size_t>(vocab));
      for (int64_t v = 0; v < vocab; ++v) out[v] = z[at + v] - mx - std::log(sum);
      return out;
    };
    const auto lp = log_softmax(p), lq = log_softmax(q);
    for (int64_t v = 0; v < vocab; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
  }
  return kl / static_cast<double>(count * seq_len);
}
} // namespace

// The container's decoded tensors as a model (the original's architecture).
Model decoded_model(const Model &model, const fs::path &container) {
  ContainerReader reader(container);
  ContainerDecoder decoder(reader, registry());
  auto store = std::make_shared<std::map<std::string, std::vector<float>>>();
  Model decoded;
  decoded.path = container;
  decoded.arch = model.arch;
  for (const auto &t : model.tensors) {
    const TensorRecord *rec = reader.find(t.info.name);
    REQUIRE(rec);
    (*store)[t.info.name] = decoder.decode_tensor(*rec, 1);
    ModelTensor mt;
    mt.info = t.info;
    mt.load = [store, name = t.info.name] { return store->at(name); };
    decoded.tensors.push_back(std::move(mt));
  }
  decoded.keepalive = store;
  return decoded;
}

TEST_CASE("blockft's end-to-end stage lowers the KL to the original model, as the container "
          "decodes; with e2e_embeddings it also trains the (tied) embedding, and lowers it more") {
  Model model = load_model(nwc::test::stories260k());
  REQUIRE_FALSE(model.find("lm_head.weight")); // llama2.c's shared classifier: one tensor
  const std::vector<float> embedding = model.find("model.embed_tokens.weight")->load();
  const std::vector<int32_t> tokens = calibration_tokens(model);
  TempDir dir;
  double kl_after[2] = {0, 0};
  for (const bool embeddings : {false, true}) {
    CAPTURE(embeddings);
    Pipeline pl = nwc_pipeline(dir, "plugin = \"nwc.comp.none\"\nblock = 64",
                               std::string("[blockft]\nepochs = 1\nlr = 1e-3\nsequences = 16\n"
                                           "validation = 4\nseq_len = 64\ne2e_epochs = 3\n"
                                           "e2e_lr = 3e-4\ne2e_sequences = 24\ne2e_embeddings = ") +
                                   (embeddings ? "true\n" : "false\n"));
    const fs::path out = dir.path() / "e2e.nwc";
    CompressSettings s;
    s.threads = 2;
    BlockFtResult r = compress_model_blockft(model, pl, registry(), out, s, tokens);
    REQUIRE(r.steps.size() == 5 * 7 + 1);
    const BlockFtReport &e2e = r.steps.back();
    CHECK(e2e.block == -1);
    INFO("held-out KL " << e2e.mse_before << " -> " << e2e.mse_after << " (epoch " << e2e.best_epoch
                        << ")");
    CHECK(e2e.best_epoch > 0);
    CHECK(e2e.mse_after < 0.97 * e2e.mse_before);
    kl_after[embeddings] = e2e.mse_after;

    // The runtime's forward pass over the decoded container measures what the stage reported
    // (the stored log8 row scales differ from the trained ones by at most 0.55 %).
    Model decoded = decoded_model(model, out);
    CHECK(decoded.find("model.norm.weight")->load() != model.find("model.norm.weight")->load());
    CHECK((decoded.find("model.embed_tokens.weight")->load() == embedding) == !embeddings);
    for (const auto &[name, values] : r.reconstructions)
      CHECK(decoded.find(name)->load() == values);
    const double kl = held_out_kl(model, decoded, tokens, 24, 4, 64); // after the 24 it trained on
    INFO("decoded container's held-out KL " << kl);
    CHECK(kl < 0.97 * e2e.mse_before);
    CHECK(kl == doctest::Approx(e2e.mse_after).epsilon(0.03));
  }
  // The same codes and fine-tuning, more to train: the embedding buys a lower KL.
  CHECK(kl_after[1] < 0.98 * kl_after[0]);
}

// A short block-wise and end-to-end run (3 epochs on 24 windows of 64 tokens) with the tensors
// `match` names (a TOML string or array) coded too.
Pipeline coded_outer_pipeline(const TempDir &dir, const std::string &match) {
  return nwc_pipeline(dir, "plugin = \"nwc.comp.none\"\nblock = 64",
                      "[blockft]\nepochs = 1\nlr = 1e-3\nsequences = 16\nvalidation = 4\n"
                      "seq_len = 64\ne2e_epochs = 3\ne2e_lr = 3e-4\ne2e_sequences = 24\n"
                      "[[override]]\nmatch = " +
                          match + "\n");
}

TEST_CASE("blockft's end-to-end stage with a coded (tied) embedding computes with its decoded "
          "values and trains its row scales: the container decodes to the KL it reports") {
  Model model = load_model(nwc::test::stories260k());
  const std::vector<int32_t> tokens = calibration_tokens(model);
  TempDir dir;
  Pipeline pl = coded_outer_pipeline(dir, "\"model.embed_tokens.weight\"");
  const std::string embed = "model.embed_tokens.weight";
  REQUIRE(pl.chain_for(embed));
  const fs::path out = dir.path() / "coded-embedding.nwc";
  CompressSettings s;
  s.threads = 2;
  BlockFtResult r = compress_model_blockft(model, pl, registry(), out, s, tokens);
  const BlockFtReport &e2e = r.steps.back();
  REQUIRE(e2e.block == -1);
  INFO("held-out KL " << e2e.mse_before << " -> " << e2e.mse_after);
  CHECK(e2e.mse_after < 0.97 * e2e.mse_before);
  REQUIRE(r.reconstructions.count(embed));
  Model decoded = decoded_model(model, out);
  for (const auto &[name, values] : r.reconstructions) CHECK(decoded.find(name)->load() == values);
  // Its row scales moved: the decoded embedding is not the embedding as first coded.
  const ModelTensor *mt = model.find(embed);
  CHECK(decoded.find(embed)->load() !=
        encode_tensor(pl, registry(), mt->info, mt->load(), CompressSettings{}).reconstruction);
  // What the stage measured is what the container holds (the coded embedding, not the original).
  const double kl = held_out_kl(model, decoded, tokens, 24, 4, 64);
  INFO("decoded container's held-out KL " << kl);
  CHECK(kl == doctest::Approx(e2e.mse_after).epsilon(0.03));
}

TEST_CASE("blockft's end-to-end stage with a coded embedding and a coded output head of their own "
          "(untied): both are computed with as decoded, and the container decodes to the KL "
          "reported") {
  TempDir dir;
  nwc::tools::SynthSpec spec = nwc::tools::synth_preset("tiny"); // stories260K's shapes, untied
  spec.dtype = DType::F32;
  nwc::tools::write_synthetic_model(spec, dir.path() / "tiny");
  Model model = load_model(dir.path() / "tiny");
  REQUIRE(model.find("lm_head.weight"));
  const std::vector<int32_t> tokens = calibration_tokens(load_model(nwc::test::stories260k()));
  Pipeline pl = coded_outer_pipeline(dir, "[\"model.embed_tokens.weight\", \"lm_head.weight\"]");
  const fs::path out = dir.path() / "coded-outer.nwc";
  CompressSettings s;
  s.threads = 2;
  BlockFtResult r = compress_model_blockft(model, pl, registry(), out, s, tokens);
  const BlockFtReport &e2e = r.steps.back();
  REQUIRE(e2e.block == -1);
  CHECK(r.reconstructions.count("model.embed_tokens.weight") == 1);
  CHECK(r.reconstructions.count("lm_head.weight") == 1);
  Model decoded = decoded_model(model, out);
  for (const auto &[name, values] : r.reconstructions) CHECK(decoded.find(name)->load() == values);
  const double kl = held_out_kl(model, decoded, tokens, 24, 4, 64);
  INFO("held-out KL " << e2e.mse_before << " -> " << e2e.mse_after << ", decoded " << kl);
  CHECK(e2e.mse_after < e2e.mse_before);
  CHECK(kl == doctest::Approx(e2e.mse_after).epsilon(0.03));
}

TEST_CASE("blockft's seed: the same seed gives the same container, another seed another "
          "fine-tuning") {
  Model model = load_model(nwc::test::stories260k());
  const std::vector<int32_t> tokens = calibration_tokens(model);
  auto run = [&](int seed) {
    TempDir dir;
    Pipeline pl = nwc_pipeline(dir, "plugin = \"nwc.comp.none\"\nblock = 64",
                               "[blockft]\nepochs = 1\nlr = 1e-3\nsequences = 8\nvalidation = 2\n"
                               "seq_len = 32\nseed = " +
                                   std::to_string(seed) + "\n");
    CompressSettings s;
    s.threads = 2;
    return compress_model_blockft(model, pl, registry(), dir.path() / "seed.nwc", s, tokens)
        .reconstructions;
  };
  const auto first = run(0), again = run(0), other = run(1);
  REQUIRE(first.size() == 5 * 7);
  CHECK(first == again);
  size_t differ = 0;
  for (const auto &[name, values] : first) differ += other.at(name) != values;
  CHECK(differ > 0);
}

TEST_CASE("LDLQ blocks coded as wider streams: the same reconstruction in fewer, smaller streams - "
          "rounded and trellis-coded latents") {
  Model model = load_model(nwc::test::stories260k());
  const std::string ldlq = "plugin = \"nwc.comp.ldlq\"\nblock = 16",
                    levels = "[levels]\nfractions = [0.001, 0.01, 0.1]\n";
  // nwc.quant.tcq restarts its trellis at every column (or every 16 columns, one feedback block,
  // as the trellis presets code), so feedback blocks coded together give the bits they give apart.
  for (const std::string quantizer :
       {"plugin = \"nwc.quant.round\"", "plugin = \"nwc.quant.tcq\"",
        "plugin = \"nwc.quant.tcq\"\nstates = 64\npath_columns = 16"}) {
    INFO(quantizer);
    TempDir dir;
    Pipeline narrow = nwc_pipeline(dir, ldlq, levels, "", quantizer);
    CompressSettings s = tridiagonal_hessians(model, narrow);
    Pipeline wide = nwc_pipeline(dir, ldlq, levels, "stream_columns = 64", quantizer);
    REQUIRE(wide.stream_columns == 64);
    const fs::path narrow_file = dir.path() / "narrow.nwc", wide_file = dir.path() / "wide.nwc";
    compress_model(model, narrow, registry(), narrow_file, s);
    compress_model(model, wide, registry(), wide_file, s);
    CHECK(fs::file_size(wide_file) < fs::file_size(narrow_file));
    ContainerReader a(narrow_file), b(wide_file);
    // 64 columns: 4 feedback blocks in one stream; 172 columns: 11 feedback blocks in streams of
    // 64 + 64 + 44 columns.
    for (auto [name, blocks] : {std::pair{"model.layers.1.self_attn.q_proj.weight", size_t{1}},
                                std::pair{"model.layers.2.mlp.down_proj.weight", size_t{3}}}) {
      INFO(name);
      const ModelTensor *mt = model.find(name);
      REQUIRE(mt);
      CHECK(encode_tensor(wide, registry(), mt->info, mt->load(), s).reconstruction ==
            encode_tensor(narrow, registry(), mt->info, mt->load(), s).reconstruction);
      CHECK(b.find(name)->blocks.size() == blocks);
      CHECK(a.find(name)->blocks.size() > blocks);
      for (const auto &blk : b.find(name)->blocks) CHECK(blk.col_end - blk.col_begin <= 64);
    }
    ContainerDecoder da(a, registry()), db(b, registry());
    for (const auto &t : a.manifest().tensors)
      if (t.storage == "pipeline") {
        const TensorRecord *tb = b.find(t.name);
        REQUIRE(tb);
        CHECK(db.decode_tensor(*tb, 2) == da.decode_tensor(t, 1));
      }
  }
}

TEST_CASE("pipeline.stream_columns must be a non-negative integer") {
  TempDir dir;
  CHECK_THROWS_WITH_AS(nwc_pipeline(dir, "plugin = \"nwc.comp.none\"", "", "stream_columns = -1"),
                       doctest::Contains("pipeline.stream_columns: expected an integer"),
                       nwc::Error);
  CHECK_THROWS_WITH_AS(
      nwc_pipeline(dir, "plugin = \"nwc.comp.none\"", "", "stream_columns = \"wide\""),
      doctest::Contains("pipeline.stream_columns"), nwc::Error);
}

TEST_CASE("an override with levels = false codes a tensor without a Hessian at its own level") {
  // The whole-model method: the linears get levels from their Hessians and LDLQ; the embedding,
  // which has no calibration Hessian, is coded at the transform's `level` without feedback.
  Model model = load_model(nwc::test::stories260k());
  TempDir dir;
  const std::string levels = "[levels]\nfractions = [0.001, 0.01, 0.1]\n",
                    embedding = "\n[[override]]\nmatch = \"model.embed_tokens.weight\"\n"
                                "transform = { level = 2 }\n"
                                "compensator = { plugin = \"nwc.comp.none\", block = 64 }\n";
  const std::string ldlq = "plugin = \"nwc.comp.ldlq\"\nblock = 16";
  Pipeline pl = nwc_pipeline(dir, ldlq, levels + embedding + "levels = false\n");
  const std::string embed = "model.embed_tokens.weight",
                    q = "model.layers.1.self_attn.q_proj.weight";
  CHECK_FALSE(pl.levels_for(embed));
  CHECK(pl.levels_for(q));
  CompressSettings s = tridiagonal_hessians(model, pl);
  s.hessians.erase(embed);
  REQUIRE(s.hessians.count(q));

  const fs::path out = dir.path() / "m.nwc";
  compress_model(model, pl, registry(), out, s);
  ContainerReader reader(out);
  ContainerDecoder decoder(reader, registry());
  auto has_levels = [&](const std::string &name) {
    bool found = false;
    for (const auto &st : reader.find(name)->streams) found |= st.role == "levels";
    return found;
  };
  REQUIRE(reader.find(embed));
  CHECK(reader.find(embed)->storage == "pipeline");
  CHECK_FALSE(has_levels(embed));
  CHECK(has_levels(q));
  // The embedding is what a pipeline without levels codes at level 2, and the container holds it.
  Pipeline level2 = nwc_pipeline(dir, "plugin = \"nwc.comp.none\"\nblock = 64", embedding);
  const ModelTensor *e = model.find(embed);
  const auto expected = encode_tensor(level2, registry(), e->info, e->load(), s).reconstruction;
  CHECK(decoder.decode_tensor(*reader.find(embed), 1) == expected);

  // Without the rule the embedding needs a Hessian that does not exist; the error says which.
  Pipeline without = nwc_pipeline(dir, ldlq, levels + embedding);
  CHECK(without.levels_for(embed));
  CHECK_THROWS_WITH_AS(
      compress_model(model, without, registry(), dir.path() / "x.nwc", s),
      doctest::Contains("[levels] needs the calibration Hessian of model.embed_tokens.weight"),
      nwc::Error);
  CHECK_FALSE(fs::exists(dir.path() / "x.nwc"));
  // levels = ... must be a bool, and needs a [levels] table to switch.
  CHECK_THROWS_WITH_AS(nwc_pipeline(dir, ldlq, levels + embedding + "levels = 0\n"),
                       doctest::Contains("override.levels: expected a bool"), nwc::Error);
  CHECK_THROWS_WITH_AS(
      nwc_pipeline(dir, "plugin = \"nwc.comp.none\"", embedding + "levels = false\n"),
      doctest::Contains("override.levels: the pipeline has no [levels] table"), nwc::Error);
}
