// Calibration Hessians: symmetric positive semi-definite, equal to XᵀX/n of the captured inputs,
// their diagonals rank input channels consistently across disjoint calibration texts, and the
// saved file round-trips with its provenance.
#include "nwc/cpp/error.hpp"
#include "nwc/runtime/calibrate.hpp"
#include "nwc/runtime/eval.hpp"
#include "nwc/runtime/tokenizer.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <cmath>
#include <doctest/doctest.h>
#include <numeric>

using namespace nwc;
using namespace nwc::host;
using namespace nwc::runtime;

namespace {
std::vector<int32_t> calib_stream() {
  auto tok = load_tokenizer(test::data_dir() / "models" / "stories260K" / "tok512.bin", 512);
  return ppl_token_stream(read_text_file(test::data_dir() / "text" / "tinystories-calib.txt"),
                          *tok);
}

std::vector<double> ranks(const std::vector<double> &v) {
  std::vector<size_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return v[a] < v[b]; });
  std::vector<double> r(v.size());
  for (size_t i = 0; i < idx.size(); ++i) r[idx[i]] = static_cast<double>(i);
  return r;
}

double spearman(const std::vector<double> &a, const std::vector<double> &b) {
  auto ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(a.size());
  double d2 = 0;
  for (size_t i = 0; i < a.size(); ++i) d2 += (ra[i] - rb[i]) * (ra[i] - rb[i]);
  return 1 - 6 * d2 / (n * (n * n - 1));
}
} // namespace

TEST_CASE("each H is symmetric and positive semi-definite, one per shared input") {
  Model model = load_model(test::stories260k());
  CalibrationSettings s;
  s.tokens = 4096;
  Calibration c = calibrate(model, calib_stream(), s);
  CHECK(c.tokens == 4096);
  REQUIRE(c.hessians.size() == 20); // 5 layers x (attn_in, attn_out, mlp_in, mlp_out)
  CHECK(c.for_linear("model.layers.2.self_attn.k_proj.weight")->input == "layers.2.attn_in");
  CHECK(c.for_linear("model.layers.2.mlp.up_proj.weight") ==
        c.for_linear("model.layers.2.mlp.gate_proj.weight"));
  CHECK(c.for_linear("model.layers.2.mlp.down_proj.weight")->dim == 172);
  for (const auto &h : c.hessians) {
    INFO(h.input);
    CHECK(h.count == 4096);
    const int64_t n = h.dim;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j)
        REQUIRE(h.h[static_cast<size_t>(i * n + j)] == h.h[static_cast<size_t>(j * n + i)]);
    // PSD: a Cholesky factorisation of H + tiny ridge succeeds.
    std::vector<double> a = h.h;
    double ridge = 1e-9;
    for (int64_t i = 0; i < n; ++i)
      ridge = std::max(ridge, 1e-9 * a[static_cast<size_t>(i * n + i)]);
    for (int64_t i = 0; i < n; ++i) a[static_cast<size_t>(i * n + i)] += ridge;
    bool ok = true;
    for (int64_t j = 0; j < n && ok; ++j) {
      double d = a[static_cast<size_t>(j * n + j)];
      for (int64_t k = 0; k < j; ++k)
        d -= a[static_cast<size_t>(j * n + k)] * a[static_cast<size_t>(j * n + k)];
      if (d <= 0) ok = false;
      d = std::sqrt(std::max(d, 1e-300));
      a[static_cast<size_t>(j * n + j)] = d;
      for (int64_t i = j + 1; i < n; ++i) {
        double v = a[static_cast<size_t>(i * n + j)];
        for (int64_t k = 0; k < j; ++k)
          v -= a[static_cast<size_t>(i * n + k)] * a[static_cast<size_t>(j * n + k)];
        a[static_cast<size_t>(i * n + j)] = v / d;
      }
    }
    CHECK(ok);
  }
}

TEST_CASE("H equals XᵀX / n of the captured activations") {
  Model model = load_model(test::stories260k());
  LlamaModel llama(model, 1);
  auto stream = calib_stream();
  std::vector<int32_t> window(stream.begin(), stream.begin() + 64);
  std::vector<float> captured;
  int64_t rows = 0, dim = 0;
  llama.forward_with_hook(window, 1, 64,
                          [&](const std::string &input, const float *x, int64_t r, int64_t d) {
                            if (input != "layers.3.mlp_out") return;
                            captured.assign(x, x + r * d);
                            rows = r;
                            dim = d;
                          });
  REQUIRE(rows == 64);
  REQUIRE(dim == 172);
  CalibrationSettings s;
  s.tokens = 64;
  s.seq_len = 64;
  Calibration c = calibrate(model, stream, s);
  const Hessian *h = c.for_linear("model.layers.3.mlp.down_proj.weight");
  REQUIRE(h != nullptr);
  for (int64_t i = 0; i < dim; ++i)
    for (int64_t j = 0; j < dim; ++j) {
      double ref = 0;
      for (int64_t r = 0; r < rows; ++r)
        ref += static_cast<double>(captured[static_cast<size_t>(r * dim + i)]) *
               static_cast<double>(captured[static_cast<size_t>(r * dim + j)]);
      ref /= static_cast<double>(rows);
      REQUIRE(h->h[static_cast<size_t>(i * dim + j)] ==
              doctest::Approx(ref).epsilon(1e-9).scale(1e-12));
    }
}

TEST_CASE("the Hessian diagonal ranks input channels stably across disjoint halves") {
  Model model = load_model(test::stories260k());
  auto stream = calib_stream();
  const size_t half = stream.size() / 2;
  std::vector<int32_t> first(stream.begin(), stream.begin() + static_cast<long>(half)),
      second(stream.begin() + static_cast<long>(half), stream.end());
  CalibrationSettings s;
  s.tokens = 32768;
  Calibration a = calibrate(model, first, s), b = calibrate(model, second, s);
  double worst = 1, sum = 0;
  for (size_t k = 0; k < a.hessians.size(); ++k) {
    const int64_t n = a.hessians[k].dim;
    std::vector<double> da, db;
    for (int64_t i = 0; i < n; ++i) {
      da.push_back(a.hessians[k].h[static_cast<size_t>(i * n + i)]);
      db.push_back(b.hessians[k].h[static_cast<size_t>(i * n + i)]);
    }
    double rho = spearman(da, db);
    MESSAGE(a.hessians[k].input << ": Spearman rank correlation of diag(H) = " << rho);
    worst = std::min(worst, rho);
    sum += rho;
  }
  // Measured: 0.87 (attn_out of layers 0 and 4) to 0.998 (attn_in), mean 0.96.
  CHECK(worst > 0.8);
  CHECK(sum / static_cast<double>(a.hessians.size()) > 0.9);
}

TEST_CASE("calibration files round-trip with provenance and junk is refused") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  CalibrationSettings s;
  s.tokens = 1024;
  Calibration c = calibrate(model, calib_stream(), s);
  c.model_hash = model_fingerprint(model);
  c.text_hash = "0123456789abcdef";
  save_calibration(c, dir / "h.safetensors");
  Calibration back = load_calibration(dir / "h.safetensors");
  CHECK(back.model_hash == c.model_hash);
  CHECK(back.text_hash == c.text_hash);
  CHECK(back.tokens == 1024);
  REQUIRE(back.hessians.size() == c.hessians.size());
  for (size_t k = 0; k < c.hessians.size(); ++k) {
    CHECK(back.hessians[k].linears == c.hessians[k].linears);
    CHECK(back.hessians[k].count == c.hessians[k].count);
    for (size_t i = 0; i < c.hessians[k].h.size(); ++i)
      REQUIRE(back.hessians[k].h[i] == static_cast<double>(static_cast<float>(c.hessians[k].h[i])));
  }
  // The fingerprint depends on values, not on the file format.
  Model copy = model;
  copy.tensors[1].load = [] { return std::vector<float>(64, 0.5f); };
  CHECK(model_fingerprint(copy) != c.model_hash);
  CHECK_THROWS_WITH_AS(load_calibration(test::stories260k()), doctest::Contains("stories260K.bin"),
                       nwc::Error);
}

TEST_CASE("calibration gives the same Hessian bits with any thread count") {
  Model model = load_model(test::stories260k());
  auto stream = calib_stream();
  CalibrationSettings one, two;
  one.tokens = two.tokens = 5120; // 10 windows: slices of 2 and 1 windows
  two.threads = 3;                // 8 slices over 3 workers: uneven rounds
  Calibration a = calibrate(model, stream, one), b = calibrate(model, stream, two);
  REQUIRE(a.hessians.size() == b.hessians.size());
  for (size_t k = 0; k < a.hessians.size(); ++k) {
    INFO(a.hessians[k].input);
    CHECK(a.hessians[k].count == b.hessians[k].count);
    // Slices are summed in slice order whoever ran them: equal, not merely close.
    REQUIRE(a.hessians[k].h == b.hessians[k].h);
  }
}

TEST_CASE("calibration written layer by layer reads back lazily, linear by linear") {
  test::TempDir dir;
  Model model = load_model(test::stories260k());
  auto stream = calib_stream();
  CalibrationSettings s;
  s.tokens = 2048;
  s.threads = 2;
  std::vector<std::string> seen;
  Calibration plan = calibrate_to_file(model, stream, s, "00000000000000aa", "00000000000000bb",
                                       dir / "h.safetensors", nullptr,
                                       [&](const Hessian &h) { seen.push_back(h.input); });
  Calibration mem = calibrate(model, stream, s);
  REQUIRE(seen.size() == mem.hessians.size());
  CHECK(seen.front() == "layers.0.attn_in");
  CHECK(seen.back() == "layers.4.mlp_out");
  CHECK(plan.hessians.size() == mem.hessians.size());
  CHECK(plan.hessians[0].h.empty()); // the plan carries no values

  CalibrationFile file = open_calibration(dir / "h.safetensors");
  CHECK(file.info.model_hash == "00000000000000aa");
  CHECK(file.info.tokens == 2048);
  for (const auto &h : file.info.hessians) CHECK(h.h.empty()); // nothing read yet
  auto refs = hessians_by_linear(file);
  CHECK(refs.size() == 35); // 5 layers x 7 linears
  for (const auto &h : mem.hessians)
    for (const auto &linear : h.linears) {
      INFO(linear);
      const HessianRef &ref = refs.at(linear);
      REQUIRE(ref.size() == static_cast<uint64_t>(h.dim * h.dim));
      auto values = ref.load();
      for (size_t i = 0; i < h.h.size(); ++i) REQUIRE((*values)[i] == static_cast<float>(h.h[i]));
    }
  // The loaders keep the file mapped after the CalibrationFile is gone.
  const HessianRef ref = refs.at("model.layers.1.mlp.down_proj.weight");
  file = CalibrationFile{};
  CHECK(ref.load()->size() == 172u * 172u);
}

TEST_CASE("sequential calibration: the Hessians of calibrate when nothing is replaced and later "
          "Hessians see replaced linears") {
  Model model = load_model(test::stories260k());
  const auto stream = calib_stream();
  CalibrationSettings s;
  s.tokens = 4096;
  s.threads = 2;
  const Calibration plain = calibrate(model, stream, s);
  std::vector<Hessian> seen;
  const Calibration plan = calibrate_sequential(model, stream, s, [&](const Hessian &h) {
    seen.push_back(h);
    return std::map<std::string, std::vector<float>>{};
  });
  CHECK(plan.tokens == plain.tokens);
  REQUIRE(seen.size() == plain.hessians.size());
  for (size_t i = 0; i < seen.size(); ++i) {
    INFO(seen[i].input);
    CHECK(seen[i].input == plain.hessians[i].input);
    CHECK(seen[i].linears == plain.hessians[i].linears);
    CHECK(seen[i].h == plain.hessians[i].h); // bit for bit: the same sums in the same order
  }

  // Zeroing v_proj of block 0 leaves block 0's attn_in unchanged and changes its attn_out (the
  // input of o_proj is the attention of v) and everything after it.
  const std::string v0 = "model.layers.0.self_attn.v_proj.weight";
  std::vector<Hessian> after;
  calibrate_sequential(model, stream, s, [&](const Hessian &h) {
    after.push_back(h);
    std::map<std::string, std::vector<float>> r;
    if (h.input == "layers.0.attn_in") r[v0] = std::vector<float>(64 * 32, 0.0f);
    return r;
  });
  REQUIRE(after.size() == seen.size());
  CHECK(after[0].h == seen[0].h);
  for (double v : after[1].h) REQUIRE(v == 0.0); // o_proj's input is all zeros now
  CHECK(after[4].h != seen[4].h);                // block 1 sees block 0's changed output
  // A replacement of the wrong size is an internal error naming the linear.
  CHECK_THROWS_WITH_AS(calibrate_sequential(model, stream, s,
                                            [&](const Hessian &h) {
                                              std::map<std::string, std::vector<float>> r;
                                              if (h.input == "layers.0.attn_in")
                                                r[v0] = std::vector<float>(3, 0.0f);
                                              return r;
                                            }),
                       doctest::Contains(v0.c_str()), nwc::Error);
}
