// [allocate]: the rate-constrained choice (against an exhaustive search) and a run on stories260K
// whose container holds exactly the chosen codecs (the table's checks: tests/unit/host).
#include "nwc/cpp/error.hpp"
#include "nwc/formats/container.hpp"
#include "nwc/host/decode.hpp"
#include "nwc/host/pipeline.hpp"
#include "nwc/runtime/allocate.hpp"
#include "nwc/runtime/compress_job.hpp"
#include "test_registry.hpp"
#include "test_support.hpp"

#include <array>
#include <cmath>
#include <doctest/doctest.h>
#include <fstream>
#include <map>
#include <random>

namespace fs = std::filesystem;
using namespace nwc;
using namespace nwc::runtime;
using nwc::test::TempDir;

namespace {

const host::Registry &registry() {
  return nwc::test::bundled_registry();
}

fs::path codec(const std::string &name) {
  return nwc::test::source_dir() / "codecs" / (name + ".nwcc");
}

// The data-free λ 300 pipeline (no compensator: every tensor codes alone, so a tensor's bits and
// values do not depend on the others' codecs) with an [allocate] table.
std::string allocate_pipeline(const std::string &allocate_table) {
  return "[pipeline]\nname = \"alloc\"\nselect = [\"model.layers.*_proj.weight\"]\n"
         "[chunker]\nplugin = \"nwc.chunk.column\"\nchunk = 16\nnormalize = \"row\"\n"
         "scale_dtype = \"log8\"\n"
         "[transform]\nplugin = \"nwc.transform.neural\"\ncodec = \"" +
         codec("nwc-s-l300").string() +
         "\"\nlevel = 0\n"
         "[quantizer]\nplugin = \"nwc.quant.round\"\n[entropy]\nplugin = \"nwc.entropy.rans\"\n"
         "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n" +
         allocate_table;
}

double total(const std::vector<std::vector<AllocationOption>> &t, const std::vector<size_t> &pick,
             double AllocationOption::*field) {
  double s = 0;
  for (size_t i = 0; i < t.size(); ++i) s += t[i][pick[i]].*field;
  return s;
}

// The least summed cost over every assignment within the budget.
double exhaustive_best(const std::vector<std::vector<AllocationOption>> &t, double budget) {
  std::vector<size_t> pick(t.size(), 0);
  double best = INFINITY;
  for (;;) {
    if (total(t, pick, &AllocationOption::bits) <= budget)
      best = std::min(best, total(t, pick, &AllocationOption::cost));
    size_t i = 0;
    while (i < t.size() && ++pick[i] == t[i].size()) pick[i++] = 0;
    if (i == t.size()) return best;
  }
}

} // namespace

TEST_CASE("allocation: the choice is the exhaustive optimum at every Lagrangian budget") {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 40; ++trial) {
    // 4 tensors with 3-4 options each: more bits, less cost (convex or not, some dominated).
    std::vector<std::vector<AllocationOption>> t(4);
    for (auto &opts : t) {
      double bits = 100 + 100 * u(rng), cost = 1 + u(rng);
      const int n = 3 + static_cast<int>(u(rng) * 2);
      for (int k = 0; k < n; ++k) {
        opts.push_back({bits, cost});
        bits += 20 + 80 * u(rng);
        cost *= 0.2 + 0.9 * u(rng); // sometimes a costlier option with more bits: dominated
      }
    }
    // For a price mu per bit, each tensor's cheapest cost + mu * bits, tensor by tensor: a
    // Lagrangian solution, optimal for its own total bits. The choice must match it there, and
    // at any budget be no worse than the best Lagrangian solution that fits.
    std::vector<std::pair<double, double>> lagrangian; // (bits, cost)
    for (double mu = 1e-5; mu < 1; mu *= 1.15) {
      std::vector<size_t> pick(t.size());
      for (size_t i = 0; i < t.size(); ++i)
        for (size_t k = 0; k < t[i].size(); ++k)
          if (t[i][k].cost + mu * t[i][k].bits < t[i][pick[i]].cost + mu * t[i][pick[i]].bits)
            pick[i] = k;
      const double bits = total(t, pick, &AllocationOption::bits);
      const double cost = total(t, pick, &AllocationOption::cost);
      lagrangian.push_back({bits, cost});
      CHECK(cost == doctest::Approx(exhaustive_best(t, bits)).epsilon(1e-12));
      CHECK(total(t, choose_allocation(t, bits), &AllocationOption::cost) ==
            doctest::Approx(cost).epsilon(1e-12));
    }
    const double fewest = total(t, std::vector<size_t>(4, 0), &AllocationOption::bits);
    for (double extra : {0.0, 30.0, 90.0, 170.0, 260.0, 1000.0}) {
      const double budget = fewest + extra;
      const std::vector<size_t> pick = choose_allocation(t, budget);
      CHECK(total(t, pick, &AllocationOption::bits) <= budget);
      for (const auto &[bits, cost] : lagrangian)
        if (bits <= budget) CHECK(total(t, pick, &AllocationOption::cost) <= cost + 1e-12);
    }
  }
}

TEST_CASE("allocation: a sensitive tensor gets the bits; a budget below the fewest bits throws") {
  // Tensor 0 loses 0.9 for 100 more bits, tensor 1 only 0.1: a budget for one step buys tensor 0's.
  const std::vector<std::vector<AllocationOption>> t = {{{100, 1.0}, {200, 0.1}},
                                                        {{100, 0.2}, {200, 0.1}}};
  CHECK(choose_allocation(t, 300) == std::vector<size_t>{1, 0});
  CHECK(choose_allocation(t, 400) == std::vector<size_t>{1, 1});
  CHECK(choose_allocation(t, 299) == std::vector<size_t>{0, 0});
  // Options out of order, with a costlier-and-larger one that is never taken.
  const std::vector<std::vector<AllocationOption>> u = {{{300, 0.5}, {100, 1.0}, {200, 2.0}}};
  CHECK(choose_allocation(u, 1000) == std::vector<size_t>{0});
  CHECK(choose_allocation(u, 299) == std::vector<size_t>{1});
  CHECK_THROWS_WITH_AS(choose_allocation(t, 199),
                       doctest::Contains("the fewest bits of every tensor"), Error);
  CHECK_THROWS_AS(choose_allocation({{{100, NAN}}}, 1000), Error);
}

TEST_CASE("allocation: on stories260K the container holds the chosen codecs at the measured rate") {
  TempDir dir;
  const fs::path file = dir / "alloc.toml";
  {
    std::ofstream(file) << allocate_pipeline(
        "[allocate]\ncodecs = [\"" + codec("nwc-s-l1000").string() +
        "\"]\ntarget_bpw = 4.6\ntokens = 256\n"
        // Tensors whose codec the file names stay where they are, the base codec's included;
        // their bits count against the budget.
        "[[override]]\nmatch = \"model.layers.0.self_attn.q_proj.weight\"\ntransform = { codec = "
        "\"" +
        codec("nwc-s-l300").string() +
        "\" }\n[[override]]\nmatch = \"model.layers.0.self_attn.o_proj.weight\"\n"
        "transform = { codec = \"" +
        codec("nwc-s-l1000").string() + "\" }\n");
  }
  CompressRequest req;
  req.model = nwc::test::stories260k();
  req.pipeline = file;
  req.output = dir / "a.nwc";
  req.tokenizer = nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
  req.calib_text = (nwc::test::data_dir() / "text" / "tinystories-calib.txt").string();
  req.threads = 2;
  std::optional<Allocation> seen;
  CompressCallbacks cb;
  cb.allocated = [&](const Allocation &a) { seen = a; };
  const CompressOutcome o = run_compress(req, registry(), cb);
  REQUIRE(seen);
  REQUIRE(o.allocate_seconds);
  REQUIRE(seen->tensors.size() == 35);
  REQUIRE(seen->candidates == std::vector<std::string>{"nwc-s-l300.nwcc", "nwc-s-l1000.nwcc"});
  // The base codec alone codes at ~4.27 b/w and λ 1000 at ~5.2: some tensors, not all, move.
  size_t moved = 0;
  double kl_chosen = 0, kl_base = 0;
  for (const auto &t : seen->tensors) {
    REQUIRE(t.members == std::vector<std::string>{t.tensor});
    if (t.tensor == "model.layers.0.self_attn.q_proj.weight" ||
        t.tensor == "model.layers.0.self_attn.o_proj.weight") {
      CHECK(t.options == std::vector<size_t>{0}); // pinned by the file's [[override]]
      continue;
    }
    REQUIRE(t.options == std::vector<size_t>{0, 1});
    moved += t.chosen;
    kl_chosen += t.kl[t.chosen];
    kl_base += t.kl[0];
    CHECK(t.kl[1] < t.kl[0]); // the λ 1000 codec disturbs every tensor less
  }
  CHECK(moved > 0);
  CHECK(moved < 33);
  CHECK(kl_chosen < kl_base);
  // The container's rate, counted as the allocation counts it (streams + header share), is the one
  // it measured, within the budget; the mixed container's manifest holds one more stage chain.
  {
    ContainerReader reader(req.output);
    double bits = 0, weights = 0;
    for (const auto &t : reader.manifest().tensors)
      if (t.storage == "pipeline") {
        bits += 8 * container_tensor_bytes(reader.manifest(), reader.file_size(), t);
        weights += static_cast<double>(t.numel());
      }
    CHECK(bits / weights == doctest::Approx(seen->bits_per_weight).epsilon(1e-3));
    CHECK(bits / weights <= 4.6 + 0.005);
    CHECK(seen->bits_per_weight <= 4.6);
  }

  // Each tensor decodes to what the uniform pipeline of its chosen codec decodes it to.
  CompressRequest high = req;
  high.pipeline = dir / "high.toml";
  high.output = dir / "h.nwc";
  {
    std::string text = allocate_pipeline("");
    text.replace(text.find("nwc-s-l300"), 10, "nwc-s-l1000");
    std::ofstream(high.pipeline) << text;
  }
  run_compress(high, registry());
  CompressRequest base = high;
  base.pipeline = dir / "base.toml";
  base.output = dir / "b.nwc";
  { std::ofstream(base.pipeline) << allocate_pipeline(""); }
  run_compress(base, registry());
  const Model mixed = host::open_container_model(req.output, registry(), 2),
              hi = host::open_container_model(high.output, registry(), 2),
              lo = host::open_container_model(base.output, registry(), 2);
  for (const auto &t : seen->tensors)
    if (t.options.size() == 2)
      CHECK_MESSAGE(mixed.find(t.tensor)->load() == (t.chosen ? hi : lo).find(t.tensor)->load(),
                    t.tensor);
  CHECK(mixed.find("model.layers.0.self_attn.q_proj.weight")->load() ==
        lo.find("model.layers.0.self_attn.q_proj.weight")->load());
  CHECK(mixed.find("model.layers.0.self_attn.o_proj.weight")->load() ==
        hi.find("model.layers.0.self_attn.o_proj.weight")->load());

  // A budget below the cheapest codec is refused before any output.
  TempDir empty;
  CompressRequest low = req;
  low.output = empty / "low.nwc";
  {
    std::ofstream(file) << allocate_pipeline("[allocate]\ncodecs = [\"" +
                                             codec("nwc-s-l1000").string() +
                                             "\"]\ntarget_bpw = 2\ntokens = 256\n");
  }
  CHECK_THROWS_WITH_AS(run_compress(low, registry()),
                       doctest::Contains("[allocate] target_bpw = 2 is below the fewest bits"),
                       Error);
  CHECK(empty.entries().empty());
  CompressRequest both = req;
  both.target_bpw = 4.5;
  CHECK_THROWS_WITH_AS(run_compress(both, registry()), doctest::Contains("drop --target-bpw"),
                       RequestError);
  {
    std::ofstream(file) << allocate_pipeline(
        "[allocate]\ncodecs = [\"" + (dir / "none.nwcc").string() + "\"]\ntarget_bpw = 4.6\n");
  }
  CHECK_THROWS_WITH_AS(run_compress(low, registry()),
                       doctest::Contains("allocate.codecs: no such codec file"), Error);
  CHECK(empty.entries().empty());
}

namespace {

// RTN g32 at 4 bits (no compensator, raw codes: each tensor's bits and values depend on its own
// chain only) with [allocate] over quantizer bits, one choice per kind of projection.
std::string rtn_allocate_pipeline(const std::string &allocate_table) {
  return "[pipeline]\nname = \"rtn-alloc\"\nselect = [\"model.layers.*_proj.weight\"]\n"
         "[chunker]\nplugin = \"nwc.chunk.group\"\ngroup = 32\n"
         "[quantizer]\nplugin = \"nwc.quant.uniform\"\nbits = 4\nmode = \"asymmetric\"\n"
         "[entropy]\nplugin = \"nwc.entropy.raw\"\n"
         "[compensator]\nplugin = \"nwc.comp.none\"\nblock = 128\n" +
         allocate_table;
}

// Compresses stories260K with the pipeline text (calibration text and tokenizer of the shared
// data) and returns what [allocate] chose.
Allocation compress_allocating(const TempDir &dir, const std::string &pipeline_text) {
  CompressRequest req;
  req.model = nwc::test::stories260k();
  req.pipeline = dir / "alloc.toml";
  req.output = dir / "a.nwc";
  req.tokenizer = nwc::test::data_dir() / "models" / "stories260K" / "tok512.bin";
  req.calib_text = (nwc::test::data_dir() / "text" / "tinystories-calib.txt").string();
  req.threads = 2;
  std::ofstream(req.pipeline) << pipeline_text;
  std::optional<Allocation> seen;
  CompressCallbacks cb;
  cb.allocated = [&](const Allocation &a) { seen = a; };
  run_compress(req, registry(), cb);
  REQUIRE(seen);
  return *seen;
}

} // namespace

TEST_CASE("allocation: candidates as stage options, one choice per kind of tensor") {
  TempDir dir;
  // 4 bits with the group's scale and zero point: ~5.2 b/w; 3 bits ~4.2, 8 bits ~9.2.
  const Allocation a = compress_allocating(
      dir, rtn_allocate_pipeline("[allocate]\ngroup = \"kind\"\ntarget_bpw = 5\ntokens = 256\n"
                                 "[[allocate.candidate]]\nquantizer = { bits = 3 }\n"
                                 "[[allocate.candidate]]\nquantizer = { bits = 8 }\n"
                                 // The file's rule pins the quantizer of block 0's down_proj to 4
                                 // bits: it stays there while the rest of its group moves.
                                 "[[override]]\nmatch = \"model.layers.0.mlp.down_proj.weight\"\n"
                                 "quantizer = { bits = 4 }\n"));
  CHECK(a.candidates == std::vector<std::string>{"the pipeline's chain", "quantizer.bits = 3",
                                                 "quantizer.bits = 8"});
  // Seven kinds of projection, five blocks each: seven measurements per candidate, not 35.
  REQUIRE(a.tensors.size() == 7);
  std::map<std::string, int64_t> bits_of; // tensor -> the quantizer bits its kind chose
  size_t moved = 0;
  for (const auto &u : a.tensors) {
    CHECK(u.tensor.find("model.layers.*.") == 0);
    CHECK(u.members.size() == 5);
    REQUIRE(u.options == std::vector<size_t>{0, 1, 2});
    CHECK(u.kl[2] < u.kl[0]);
    CHECK(u.kl[0] < u.kl[1]);
    CHECK(u.bits[1] < u.bits[0]);
    CHECK(u.bits[0] < u.bits[2]);
    moved += u.chosen != 0;
    for (const auto &m : u.members) bits_of[m] = std::array<int64_t, 3>{4, 3, 8}[u.chosen];
  }
  CHECK(moved > 0);
  CHECK(a.bits_per_weight <= 5);
  CHECK(a.bits_per_weight > 4.6); // spent, not saved: the smallest step is k_proj's, ~0.05 b/w
  bits_of["model.layers.0.mlp.down_proj.weight"] = 4;

  // Each tensor decodes exactly as the plain pipeline at its bits decodes it.
  std::map<int64_t, Model> plain;
  for (int64_t b : {3, 4, 8}) {
    CompressRequest one;
    one.model = nwc::test::stories260k();
    one.threads = 2;
    one.pipeline = dir / ("rtn" + std::to_string(b) + ".toml");
    one.output = dir / ("rtn" + std::to_string(b) + ".nwc");
    std::string text = rtn_allocate_pipeline("");
    text.replace(text.find("bits = 4"), 8, "bits = " + std::to_string(b));
    std::ofstream(one.pipeline) << text;
    run_compress(one, registry());
    plain.emplace(b, host::open_container_model(one.output, registry(), 2));
  }
  const Model mixed = host::open_container_model(dir / "a.nwc", registry(), 2);
  for (const auto &[name, b] : bits_of)
    CHECK_MESSAGE(mixed.find(name)->load() == plain.at(b).find(name)->load(), name);
}

TEST_CASE("allocation: one choice per decoder block") {
  TempDir dir;
  const Allocation a = compress_allocating(
      dir, rtn_allocate_pipeline("[allocate]\ngroup = \"block\"\ntarget_bpw = 4.6\ntokens = 256\n"
                                 "[[allocate.candidate]]\nquantizer = { bits = 3 }\n"));
  REQUIRE(a.tensors.size() == 5);
  size_t down = 0;
  for (size_t b = 0; b < 5; ++b) {
    CHECK(a.tensors[b].tensor == "model.layers." + std::to_string(b) + ".*");
    CHECK(a.tensors[b].members.size() == 7);
    down += a.tensors[b].chosen;
  }
  // ~5.2 b/w at 4 bits, ~4.2 at 3, each block a fifth of the weights: 4.6 keeps two at 4 bits.
  CHECK(down == 3);
  CHECK(a.bits_per_weight <= 4.6);
}

TEST_CASE("allocation: with [blockft] the budget holds for the container fine-tuning writes") {
  // Fine-tuning gives every RTN tensor a row gain (16 bits per row: ~0.25 b/w on stories260K's
  // 64-column linears), which the candidates' bits must include.
  TempDir dir;
  const Allocation a = compress_allocating(
      dir, rtn_allocate_pipeline("[blockft]\nepochs = 1\nlr = 1e-3\nbatch = 2\nsequences = "
                                 "4\nvalidation = 2\nseq_len = 32\n"
                                 "[allocate]\ngroup = \"kind\"\ntarget_bpw = 5\ntokens = 256\n"
                                 "[[allocate.candidate]]\nquantizer = { bits = 3 }\n"
                                 "[[allocate.candidate]]\nquantizer = { bits = 8 }\n"));
  ContainerReader reader(dir / "a.nwc");
  double bits = 0, weights = 0;
  size_t gains = 0;
  for (const auto &t : reader.manifest().tensors)
    if (t.storage == "pipeline") {
      bits += 8 * container_tensor_bytes(reader.manifest(), reader.file_size(), t);
      weights += static_cast<double>(t.numel());
      for (const auto &s : t.streams) gains += s.role == "row_gain";
    }
  CHECK(gains == 35);
  // Within 0.01 b/w of what was measured (without the gains it would be ~0.25 over): the mixed
  // container's manifest names up to three chains where each candidate's named one.
  CHECK(std::fabs(bits / weights - a.bits_per_weight) < 0.01);
  CHECK(bits / weights <= 5 + 0.01);
}
