// LDLQ through the real pipeline: on stories260K with calibration Hessians (against round-to-
// nearest and GPTQ), and on a small synthetic tensor whose feedback rule is checked block by block.
#include "compensator_fixture.hpp"
#include "nwc/cpp/error.hpp"
#include "nwc/runtime/llama.hpp"

#include <doctest/doctest.h>

#include <cmath>

using namespace nwc;
using namespace nwc::host;
using namespace nwc::runtime;

namespace {
using test::decode_all;
using test::Hessians;

const nwc::host::Registry &registry() {
  return nwc::test::bundled_registry();
}

std::string pipeline(const std::string &compensator, int bits, int group) {
  return test::group_pipeline(compensator, bits, group);
}

test::CalibratedStories &fixture() {
  return test::calibrated_stories();
}

std::filesystem::path run(const Model &model, const test::TempDir &dir, const std::string &name,
                          const std::string &text, const Hessians &hessians) {
  return test::compress_with(model, dir, name, text, hessians);
}

double hessian_error(const std::vector<float> &w, const std::vector<float> &q,
                     const std::vector<float> &h, int64_t rows, int64_t cols) {
  return test::relative_hessian_error(w, q, h, rows, cols);
}

// A model holding one linear weight [rows, cols] with the given values.
Model one_tensor_model(const std::vector<float> &values, int64_t rows, int64_t cols) {
  Model m;
  m.format = "safetensors";
  ModelTensor t;
  t.info.name = "model.layers.0.mlp.down_proj.weight";
  t.info.dtype = DType::F32;
  t.info.shape = {rows, cols};
  t.load = [values] { return values; };
  m.tensors.push_back(std::move(t));
  return m;
}

using Dense = std::vector<double>; // row-major square

// A strongly coupled SPD matrix H = A Aᵀ + 0.5 I (cols × cols, A of rank 4).
Dense coupled_hessian(int64_t cols) {
  Dense h(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) {
      double v = i == j ? 0.5 : 0.0;
      for (int64_t k = 0; k < 4; ++k)
        v += std::cos(1.0 + 0.9 * static_cast<double>(i * 4 + k)) *
             std::cos(1.0 + 0.9 * static_cast<double>(j * 4 + k));
      h[static_cast<size_t>(i * cols + j)] = v;
    }
  return h;
}

// Inverse of a small SPD matrix by Gauss-Jordan elimination (no pivoting needed).
Dense invert(Dense a, int64_t n) {
  Dense inv(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i) inv[static_cast<size_t>(i * n + i)] = 1.0;
  for (int64_t p = 0; p < n; ++p) {
    const double piv = a[static_cast<size_t>(p * n + p)];
    for (int64_t j = 0; j < n; ++j) {
      a[static_cast<size_t>(p * n + j)] /= piv;
      inv[static_cast<size_t>(p * n + j)] /= piv;
    }
    for (int64_t i = 0; i < n; ++i) {
      if (i == p) continue;
      const double f = a[static_cast<size_t>(i * n + p)];
      for (int64_t j = 0; j < n; ++j) {
        a[static_cast<size_t>(i * n + j)] -= f * a[static_cast<size_t>(p * n + j)];
        inv[static_cast<size_t>(i * n + j)] -= f * inv[static_cast<size_t>(p * n + j)];
      }
    }
  }
  return inv;
}
} // namespace

TEST_CASE("LDLQ is registered with its options") {
  const auto *p = registry().find("nwc.comp.ldlq");
  REQUIRE(p != nullptr);
  CHECK(p->kind == NWC_KIND_COMPENSATOR);
  CHECK(p->option_keys() == std::vector<std::string>{"block", "percdamp", "act_order"});
  CHECK(p->description.find("LDLQ") != std::string::npos);
}

TEST_CASE("LDLQ with an identity Hessian is round-to-nearest, tensor for tensor") {
  test::TempDir dir;
  Hessians identity;
  for (const auto &t : fixture().model.tensors) {
    if (t.info.shape.size() != 2) continue;
    const int64_t n = t.info.shape[1];
    auto h = std::make_shared<std::vector<float>>(static_cast<size_t>(n * n), 0.0f);
    for (int64_t i = 0; i < n; ++i) (*h)[static_cast<size_t>(i * n + i)] = 1.0f;
    identity[t.info.name] = h;
  }
  const Model &m = fixture().model;
  auto a = decode_all(
      run(m, dir, "ldlq", pipeline("plugin = \"nwc.comp.ldlq\"\nblock = 32", 3, 32), identity));
  auto b = decode_all(
      run(m, dir, "rtn", pipeline("plugin = \"nwc.comp.none\"\nblock = 32", 3, 32), Hessians{}));
  CHECK(a.size() == b.size());
  CHECK(a == b);
}

TEST_CASE("LDLQ lowers the Hessian-weighted error and the perplexity on stories260K") {
  test::TempDir dir;
  const Model &m = fixture().model;
  const Hessians &hs = fixture().hessians;
  auto rtn = decode_all(
      run(m, dir, "rtn", pipeline("plugin = \"nwc.comp.none\"\nblock = 32", 3, 32), Hessians{}));
  auto ldlq = decode_all(
      run(m, dir, "ldlq", pipeline("plugin = \"nwc.comp.ldlq\"\nblock = 32", 3, 32), hs));
  auto gptq = decode_all(run(
      m, dir, "gptq", pipeline("plugin = \"nwc.comp.gptq\"\ngroup = 32\nblock = 32", 3, 32), hs));
  double sum_rtn = 0, sum_ldlq = 0, sum_gptq = 0;
  int layers = 0, improved = 0;
  for (const auto &t : m.tensors) {
    auto h = hs.find(t.info.name);
    if (h == hs.end()) continue;
    const auto w = t.load();
    const int64_t rows = t.info.shape[0], cols = t.info.shape[1];
    const double e_rtn = hessian_error(w, rtn[t.info.name], *h->second, rows, cols);
    const double e_ldlq = hessian_error(w, ldlq[t.info.name], *h->second, rows, cols);
    const double e_gptq = hessian_error(w, gptq[t.info.name], *h->second, rows, cols);
    INFO(t.info.name << ": RTN " << e_rtn << ", LDLQ " << e_ldlq << ", GPTQ " << e_gptq);
    CHECK(e_ldlq < e_rtn);
    improved += e_ldlq < e_rtn;
    sum_rtn += e_rtn;
    sum_ldlq += e_ldlq;
    sum_gptq += e_gptq;
    ++layers;
  }
  REQUIRE(layers == 35);
  MESSAGE("mean relative Hessian-weighted error, 3-bit g32, block 32: RTN "
          << sum_rtn / layers << ", LDLQ " << sum_ldlq / layers << ", GPTQ " << sum_gptq / layers
          << " (LDLQ better than RTN on " << improved << "/" << layers << " layers)");
  CHECK(sum_ldlq < 0.9 * sum_rtn);

  const auto nll = test::stories_nll;
  const double n_rtn = nll(dir / "rtn.nwc"), n_ldlq = nll(dir / "ldlq.nwc"),
               n_gptq = nll(dir / "gptq.nwc");
  MESSAGE("ppl-v1 NLL (20480 tokens), 3-bit g32, block 32: RTN " << n_rtn << ", LDLQ " << n_ldlq
                                                                 << ", GPTQ " << n_gptq);
  CHECK(n_ldlq < n_rtn);
}

TEST_CASE("LDLQ codes every block from W + (W - Ŵ)[:, e:] · L[e:, s:e], last block first") {
  // 8 x 10 with block 4: blocks [0, 4), [4, 8) and the short [8, 10), coded 2-bit in groups of 4
  // (the short block's group is padded by the chunker, the same way for every pipeline below).
  const int64_t rows = 8, cols = 10, b = 4;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[static_cast<size_t>(r * cols + c)] =
          static_cast<float>(std::sin(0.7 * static_cast<double>(r * cols + c) + 0.3) +
                             0.1 * static_cast<double>(c % 3));
  const Dense coupled = coupled_hessian(cols);
  auto hf = std::make_shared<std::vector<float>>(coupled.begin(), coupled.end());
  for (int64_t i = 0; i < cols; ++i) // make it symmetric to the last bit
    for (int64_t j = 0; j < i; ++j)
      (*hf)[static_cast<size_t>(j * cols + i)] = (*hf)[static_cast<size_t>(i * cols + j)];
  const std::string name = "model.layers.0.mlp.down_proj.weight";

  test::TempDir dir;
  const Model model = one_tensor_model(w, rows, cols);
  auto q = decode_all(run(model, dir, "ldlq",
                          pipeline("plugin = \"nwc.comp.ldlq\"\nblock = 4\npercdamp = 0.0", 2, 4),
                          {{name, hf}}))
               .at(name);
  REQUIRE(q.size() == w.size());

  // Block LDLᵀ of H computed directly: H = L M Lᵀ with L unit block-lower-triangular and M
  // block-diagonal, M_k = H_kk − Σ_{j<k} L_kj M_j L_kjᵀ, L_ik = (H_ik − Σ_{j<k} L_ij M_j L_kjᵀ)
  // M_k⁻¹.
  std::vector<int64_t> starts;
  for (int64_t s = 0; s < cols; s += b) starts.push_back(s);
  const auto nb = static_cast<int64_t>(starts.size());
  auto lo = [&](int64_t k) { return starts[static_cast<size_t>(k)]; };
  auto hi = [&](int64_t k) { return std::min(cols, lo(k) + b); };
  Dense H(static_cast<size_t>(cols * cols)), L(H.size(), 0.0), M(H.size(), 0.0);
  for (size_t i = 0; i < H.size(); ++i) H[i] = (*hf)[i];
  auto at = [&](Dense &a, int64_t i, int64_t j) -> double & {
    return a[static_cast<size_t>(i * cols + j)];
  };
  // Σ_{j<k} L[rows of block x] M_j L[rows of block y]ᵀ, entry (i, t)
  auto past = [&](int64_t k, int64_t i, int64_t t) {
    double v = 0.0;
    for (int64_t j = 0; j < k; ++j)
      for (int64_t p = lo(j); p < hi(j); ++p)
        for (int64_t p2 = lo(j); p2 < hi(j); ++p2) v += at(L, i, p) * at(M, p, p2) * at(L, t, p2);
    return v;
  };
  for (int64_t k = 0; k < nb; ++k) {
    const int64_t s = lo(k), e = hi(k), wdt = e - s;
    Dense mk(static_cast<size_t>(wdt * wdt));
    for (int64_t i = s; i < e; ++i) {
      at(L, i, i) = 1.0;
      for (int64_t t = s; t < e; ++t)
        at(M, i, t) = mk[static_cast<size_t>((i - s) * wdt + (t - s))] =
            at(H, i, t) - past(k, i, t);
    }
    const Dense mk_inv = invert(mk, wdt);
    for (int64_t i = e; i < cols; ++i)
      for (int64_t t = s; t < e; ++t) {
        double v = 0.0;
        for (int64_t t2 = s; t2 < e; ++t2)
          v +=
              (at(H, i, t2) - past(k, i, t2)) * mk_inv[static_cast<size_t>((t2 - s) * wdt + t - s)];
        at(L, i, t) = v;
      }
  }

  // For every block, w_k from W and the decoded Ŵ of the later blocks; Ŵ_k must be exactly what
  // round-to-nearest (nwc.comp.none, one block) makes of w_k.
  double feedback = 0.0;
  for (int64_t k = nb - 1; k >= 0; --k) {
    const int64_t s = lo(k), e = hi(k), wdt = e - s;
    std::vector<float> wk(static_cast<size_t>(rows * wdt));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = s; j < e; ++j) {
        double v = w[static_cast<size_t>(r * cols + j)], fb = 0.0;
        for (int64_t t = e; t < cols; ++t)
          fb += (static_cast<double>(w[static_cast<size_t>(r * cols + t)]) -
                 q[static_cast<size_t>(r * cols + t)]) *
                at(L, t, j);
        feedback = std::max(feedback, std::abs(fb));
        wk[static_cast<size_t>(r * wdt + j - s)] = static_cast<float>(v + fb);
      }
    const Model mk = one_tensor_model(wk, rows, wdt);
    auto rk = decode_all(run(mk, dir, "rtn" + std::to_string(k),
                             pipeline("plugin = \"nwc.comp.none\"", 2, 4), Hessians{}))
                  .at(name);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = s; j < e; ++j) {
        INFO("block " << k << ", row " << r << ", column " << j);
        CHECK(q[static_cast<size_t>(r * cols + j)] ==
              doctest::Approx(rk[static_cast<size_t>(r * wdt + j - s)]).epsilon(1e-5));
      }
  }
  CHECK(feedback > 0.05); // the coupling is strong enough for the check to mean something

  // A block wider than the tensor is one block: no feedback, round-to-nearest.
  auto one = decode_all(run(
      model, dir, "wide", pipeline("plugin = \"nwc.comp.ldlq\"\nblock = 64", 2, 4), {{name, hf}}));
  auto rtn = decode_all(
      run(model, dir, "rtn", pipeline("plugin = \"nwc.comp.none\"\nblock = 0", 2, 4), Hessians{}));
  CHECK(one == rtn);
}

TEST_CASE("LDLQ act_order is LDLQ on the column blocks permuted by their Hessian diagonal") {
  // 8 x 12, block 4: blocks of Hessian diagonal weight 1, 9 and 0.25 (H = S A Aᵀ S + 0.5 S², S
  // scaling each block's columns). act_order codes block 1 first and block 2 last: exactly what
  // LDLQ in its own order (last block first) makes of the columns laid out as blocks 2, 0, 1, with
  // the decoded columns put back.
  const int64_t rows = 8, cols = 12;
  const double scale[3] = {1.0, 3.0, 0.5};
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      w[static_cast<size_t>(r * cols + c)] =
          static_cast<float>(std::sin(0.7 * static_cast<double>(r * cols + c) + 0.3));
  Dense h = coupled_hessian(cols);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j)
      h[static_cast<size_t>(i * cols + j)] *= scale[i / 4] * scale[j / 4];
  const int64_t order[3] = {2, 0, 1}; // blocks by increasing diagonal: the last is coded first
  auto to_original = [&](int64_t p) { return order[p / 4] * 4 + p % 4; };
  auto hf = std::make_shared<std::vector<float>>(h.size());
  auto hp = std::make_shared<std::vector<float>>(h.size());
  std::vector<float> wp(w.size());
  for (int64_t i = 0; i < cols; ++i) {
    for (int64_t j = 0; j < cols; ++j) {
      (*hf)[static_cast<size_t>(i * cols + j)] =
          static_cast<float>(h[static_cast<size_t>(i * cols + j)]);
      (*hp)[static_cast<size_t>(i * cols + j)] =
          static_cast<float>(h[static_cast<size_t>(to_original(i) * cols + to_original(j))]);
    }
    for (int64_t r = 0; r < rows; ++r)
      wp[static_cast<size_t>(r * cols + i)] = w[static_cast<size_t>(r * cols + to_original(i))];
  }
  const std::string name = "model.layers.0.mlp.down_proj.weight";
  const std::string ldlq = "plugin = \"nwc.comp.ldlq\"\nblock = 4\npercdamp = 0.0";

  test::TempDir dir;
  auto act = decode_all(run(one_tensor_model(w, rows, cols), dir, "act",
                            pipeline(ldlq + "\nact_order = true", 2, 4), {{name, hf}}))
                 .at(name);
  auto permuted = decode_all(run(one_tensor_model(wp, rows, cols), dir, "permuted",
                                 pipeline(ldlq, 2, 4), {{name, hp}}))
                      .at(name);
  auto plain = decode_all(run(one_tensor_model(w, rows, cols), dir, "plain", pipeline(ldlq, 2, 4),
                              {{name, hf}}))
                   .at(name);
  REQUIRE(act.size() == w.size());
  REQUIRE(permuted.size() == w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < cols; ++i) {
      INFO("row " << r << ", column " << to_original(i));
      CHECK(act[static_cast<size_t>(r * cols + to_original(i))] ==
            doctest::Approx(permuted[static_cast<size_t>(r * cols + i)]).epsilon(1e-5));
    }
  CHECK(act != plain); // the order matters for this H
}

TEST_CASE("LDLQ without Hessians is refused, naming the tensor") {
  test::TempDir dir;
  Pipeline pl = parse_pipeline(pipeline("plugin = \"nwc.comp.ldlq\"\nblock = 32", 3, 32),
                               dir / "p.toml", registry());
  std::string first;
  for (const auto &t : fixture().model.tensors)
    if (first.empty() && pl.chain_for(t.info.name)) first = t.info.name;
  REQUIRE(!first.empty());
  const std::string expected = "plugin nwc.comp.ldlq needs the calibration Hessian of " + first;
  CHECK_THROWS_WITH_AS(compress_model(fixture().model, pl, registry(), dir / "o.nwc", {}),
                       doctest::Contains(expected.c_str()), nwc::Error);
  CHECK(dir.entries().empty());
}
