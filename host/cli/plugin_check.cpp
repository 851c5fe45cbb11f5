// `nwc plugins check`: a parent that spawns this executable once per plugin and reads its report,
// and the child that exercises one plugin through its kind's interface.
//
// A plugin runs in the host's address space; a crash inside it (SIGSEGV, abort) cannot be caught
// there. The child is disposable: the parent reports "crashed with SIGSEGV while STEP" from the
// child's wait status and the last step it announced, and goes on with the next plugin.
#include "plugin_check.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/host/options.hpp"
#include "nwc/host/registry.hpp"

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <iostream>
#include <nlohmann/json.hpp>
#include <poll.h>
#include <spawn.h>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

extern char **environ;

namespace nwc::cli {

namespace po = boost::program_options;
using nlohmann::json;
using namespace nwc::host;

namespace {

// ---- child: the steps -------------------------------------------------------------------------

// One report line; flushed at once so that the parent knows the step a crash happened in.
void report(const std::string &event, const std::string &step, const std::string &msg = "") {
  std::string line = event + " " + step;
  if (!msg.empty()) {
    std::string m = msg;
    std::replace(m.begin(), m.end(), '\n', ' ');
    line += "\t" + m;
  }
  line += "\n";
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fflush(stdout);
}

struct StepFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Runs one step: announces it, reports pass or fail. Returns false on failure.
template <class F> bool step(const std::string &name, F &&f) {
  report("step", name);
  try {
    std::string note = f();
    report("pass", name, note);
    return true;
  } catch (const std::exception &e) {
    report("fail", name, e.what());
    return false;
  }
}

void require(bool cond, const std::string &why) {
  if (!cond) throw StepFailed(why);
}

// Deterministic synthetic data: a fixed LCG, roughly Gaussian (sum of uniforms), scaled.
std::vector<float> synthetic(size_t n, double scale, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 11) / 9007199254740992.0;
  };
  for (auto &x : v) x = static_cast<float>(scale * (next() + next() + next() + next() - 2.0));
  return v;
}

struct Sink {
  nwc_sink sink{};
  std::vector<uint8_t> bytes;
  Sink() {
    sink.ctx = this;
    sink.write = [](nwc_sink *s, const void *data, size_t len) -> nwc_status {
      auto *self = static_cast<Sink *>(s->ctx);
      const auto *p = static_cast<const uint8_t *>(data);
      self->bytes.insert(self->bytes.end(), p, p + len);
      return NWC_OK;
    };
  }
  Sink(const Sink &) = delete;
  Sink &operator=(const Sink &) = delete;
  nwc_bytes view() const { return nwc_bytes{bytes.data(), bytes.size()}; }
};

// A contiguous CPU view over borrowed memory; keeps its shape.
struct View {
  int64_t shape[2] = {0, 0};
  nwc_tensor_view v{};
  View(const void *data, uint32_t dtype, int64_t rows, int64_t cols, int ndim = 2) {
    shape[0] = ndim == 2 ? rows : cols;
    shape[1] = cols;
    v.data = const_cast<void *>(data);
    v.dtype = dtype;
    v.device_type = NWC_DEVICE_CPU;
    v.ndim = static_cast<uint32_t>(ndim);
    v.shape = shape;
  }
  View(const View &) = delete;
  View &operator=(const View &) = delete;
  nwc_tensor_view *get() { return &v; }
};

bool all_finite(const std::vector<float> &v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

double max_abs_diff(const std::vector<float> &a, const std::vector<float> &b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

std::string rel_error(const std::vector<float> &x, const std::vector<float> &y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
    num += d * d;
    den += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "relative error %.3g", den > 0 ? std::sqrt(num / den) : 0.0);
  return buf;
}

// The synthetic tensor: 32 x 256 weights of std about 0.02 with one larger row.
constexpr int64_t kRows = 32, kCols = 256;

struct TensorBlock {
  std::string name = "check.weight";
  nwc_block_info info{};
  TensorBlock(int64_t c0, int64_t c1) {
    info.struct_size = sizeof(nwc_block_info);
    info.tensor_name = name.c_str();
    info.rows = kRows;
    info.cols = kCols;
    info.col_begin = c0;
    info.col_end = c1;
  }
};

std::vector<float> check_weight() {
  std::vector<float> w = synthetic(static_cast<size_t>(kRows * kCols), 0.02, 1);
  for (int64_t c = 0; c < kCols; ++c) w[static_cast<size_t>(3 * kCols + c)] *= 8.0f;
  return w;
}

bool check_chunker(const Instance &inst) {
  const auto &ci = inst.interface_as<nwc_chunker_interface>(NWC_CHUNKER_INTERFACE);
  const bool v12 = ci.struct_size >= sizeof(nwc_chunker_interface);
  std::vector<float> w = check_weight(), scales;
  TensorBlock whole(0, kCols);
  bool ok = true;
  if (v12 && ci.row_scales) {
    ok &= step("row_scales", [&] {
      scales.assign(kRows, 0.0f);
      View wv(w.data(), NWC_DTYPE_F32, kRows, kCols);
      View sv(scales.data(), NWC_DTYPE_F32, 1, kRows, 1);
      uint32_t storage = 0;
      inst.check(ci.row_scales(inst.raw(), &whole.info, wv.get(), sv.get(), &storage),
                 "row_scales");
      if (storage == 0) {
        scales.clear();
        return std::string("no row scales");
      }
      require(all_finite(scales) &&
                  std::all_of(scales.begin(), scales.end(), [](float s) { return s > 0; }),
              "row scales are not all finite and positive");
      return std::string();
    });
    if (!ok) return false;
  }
  // Two column blocks: the first 128 columns and the rest.
  for (auto [c0, c1] : {std::pair<int64_t, int64_t>{0, 128}, {128, kCols}}) {
    TensorBlock b(c0, c1);
    if (!scales.empty()) b.info.row_scales = scales.data();
    const int64_t width = c1 - c0;
    std::vector<float> values(static_cast<size_t>(kRows * width));
    for (int64_t r = 0; r < kRows; ++r)
      for (int64_t c = 0; c < width; ++c)
        values[static_cast<size_t>(r * width + c)] = w[static_cast<size_t>(r * kCols + c0 + c)];
    const std::string where = " [" + std::to_string(c0) + "," + std::to_string(c1) + ")";
    nwc_chunk_geometry g{};
    std::vector<float> chunks, merged;
    Sink side;
    ok = step("plan" + where,
              [&] {
                inst.check(ci.plan(inst.raw(), &b.info, &g), "plan");
                require(g.count > 0 && g.length > 0 && g.count * g.length >= kRows * width &&
                            g.count * g.length <= 64 * kRows * width,
                        "implausible geometry " + std::to_string(g.count) + " x " +
                            std::to_string(g.length));
                return std::to_string(g.count) + " chunks of " + std::to_string(g.length);
              }) &&
         step("split" + where,
              [&] {
                chunks.assign(static_cast<size_t>(g.count * g.length), NAN);
                View in(values.data(), NWC_DTYPE_F32, kRows, width);
                View out(chunks.data(), NWC_DTYPE_F32, g.count, g.length);
                inst.check(ci.split(inst.raw(), &b.info, in.get(), out.get(), &side.sink), "split");
                require(all_finite(chunks), "split left non-finite chunk values");
                return std::to_string(side.bytes.size()) + " side bytes";
              }) &&
         (!v12 || !ci.chunk_columns ||
          step("chunk_columns" + where,
               [&] {
                 std::vector<int64_t> cols(static_cast<size_t>(g.count), -2);
                 View cv(cols.data(), NWC_DTYPE_I64, 1, g.count, 1);
                 inst.check(ci.chunk_columns(inst.raw(), &b.info, cv.get()), "chunk_columns");
                 for (int64_t c : cols)
                   require(c == -1 || (c >= c0 && c < c1),
                           "chunk column " + std::to_string(c) + " outside the block");
                 return std::string();
               })) &&
         step("merge" + where, [&] {
           merged.assign(values.size(), NAN);
           View in(chunks.data(), NWC_DTYPE_F32, g.count, g.length);
           View out(merged.data(), NWC_DTYPE_F32, kRows, width);
           inst.check(ci.merge(inst.raw(), &b.info, in.get(), side.view(), out.get()), "merge");
           const double err = max_abs_diff(values, merged);
           require(all_finite(merged) && err <= 1e-5 * 0.2,
                   "split/merge round trip differs by up to " + std::to_string(err));
           return std::string("round trip within 2e-6");
         });
    if (!ok) return false;
  }
  return true;
}

bool check_transform(const Instance &inst) {
  const auto &ti = inst.interface_as<nwc_transform_interface>(NWC_TRANSFORM_INTERFACE);
  int64_t chunk = 0, latent = 0;
  bool ok = step("latent_length", [&] {
    std::string tried;
    for (int64_t len : {16, 32, 64, 8, 128, 4, 256, 1}) {
      int64_t out = 0;
      if (ti.latent_length(inst.raw(), len, &out) == NWC_OK) {
        require(out > 0 && out <= 1 << 20,
                "latent length " + std::to_string(out) + " for chunks of " + std::to_string(len));
        chunk = len;
        latent = out;
        return "chunks of " + std::to_string(len) + " -> latents of " + std::to_string(out);
      }
      tried += (tried.empty() ? "" : ", ") + std::to_string(len);
    }
    throw StepFailed("accepts none of the chunk lengths " + tried);
  });
  if (!ok) return false;
  const int64_t n = 64;
  // Chunks as a row-normalizing chunker hands them over: unit scale.
  std::vector<float> chunks = synthetic(static_cast<size_t>(n * chunk), 1.0, 2), latents, back;
  TensorBlock b(0, kCols);
  return step("forward",
              [&] {
                latents.assign(static_cast<size_t>(n * latent), NAN);
                View in(chunks.data(), NWC_DTYPE_F32, n, chunk);
                View out(latents.data(), NWC_DTYPE_F32, n, latent);
                inst.check(ti.forward(inst.raw(), &b.info, in.get(), out.get()), "forward");
                require(all_finite(latents), "forward produced non-finite latents");
                return std::string();
              }) &&
         step("inverse",
              [&] {
                // The decoder sees rounded latents.
                for (auto &x : latents) x = std::nearbyint(x);
                back.assign(chunks.size(), NAN);
                View in(latents.data(), NWC_DTYPE_F32, n, latent);
                View out(back.data(), NWC_DTYPE_F32, n, chunk);
                inst.check(ti.inverse(inst.raw(), &b.info, in.get(), out.get()), "inverse");
                require(all_finite(back), "inverse produced non-finite values");
                return rel_error(chunks, back) + " after rounding the latents";
              }) &&
         step("probability_model", [&] {
           const nwc_cdf_model *m =
               ti.probability_model ? ti.probability_model(inst.raw()) : nullptr;
           if (!m) return std::string("none");
           require(m->precision >= 1 && m->precision <= 16 && m->channel_count > 0 && m->cdfs &&
                       m->lengths && m->offsets,
                   "malformed model header");
           for (uint32_t c = 0; c < m->channel_count; ++c) {
             const uint32_t len = m->lengths[c];
             require(len >= 3 && len <= m->max_length,
                     "channel " + std::to_string(c) + ": length " + std::to_string(len));
             const uint32_t *cdf = m->cdfs + static_cast<size_t>(c) * m->max_length;
             require(cdf[0] == 0 && cdf[len - 1] == (1u << m->precision),
                     "channel " + std::to_string(c) + ": CDF does not span [0, 2^precision]");
             for (uint32_t i = 1; i < len; ++i)
               require(cdf[i] > cdf[i - 1],
                       "channel " + std::to_string(c) + ": CDF not strictly increasing");
           }
           return std::to_string(m->channel_count) + " channels";
         });
}

bool check_quantizer(const Instance &inst) {
  const auto &qi = inst.interface_as<nwc_quantizer_interface>(NWC_QUANTIZER_INTERFACE);
  const int64_t n = kRows, m = 128;
  std::vector<float> x = synthetic(static_cast<size_t>(n * m), 1.0, 3), deq, back;
  std::vector<int32_t> sym;
  TensorBlock b(0, m);
  Sink side;
  return step("quantize",
              [&] {
                sym.assign(x.size(), 0);
                deq.assign(x.size(), NAN);
                View in(x.data(), NWC_DTYPE_F32, n, m);
                View s(sym.data(), NWC_DTYPE_I32, n, m);
                View d(deq.data(), NWC_DTYPE_F32, n, m);
                inst.check(qi.quantize(inst.raw(), &b.info, in.get(), s.get(), d.get(), &side.sink),
                           "quantize");
                require(all_finite(deq), "quantize returned non-finite dequantized values");
                return rel_error(x, deq);
              }) &&
         step("dequantize", [&] {
           back.assign(x.size(), NAN);
           View s(sym.data(), NWC_DTYPE_I32, n, m);
           View out(back.data(), NWC_DTYPE_F32, n, m);
           inst.check(qi.dequantize(inst.raw(), &b.info, s.get(), side.view(), out.get()),
                      "dequantize");
           require(std::memcmp(back.data(), deq.data(), back.size() * sizeof(float)) == 0,
                   "dequantize differs from the values quantize returned (max difference " +
                       std::to_string(max_abs_diff(back, deq)) + ")");
           return std::string("identical to quantize's reconstruction");
         });
}

bool check_entropy(const Instance &inst) {
  const auto &ei = inst.interface_as<nwc_entropy_interface>(NWC_ENTROPY_INTERFACE);
  // Symbols of a rounded Laplacian-like source with a few outliers.
  std::vector<float> u = synthetic(4096, 2.5, 4);
  std::vector<int32_t> sym(u.size());
  for (size_t i = 0; i < u.size(); ++i) sym[i] = static_cast<int32_t>(std::lround(u[i]));
  sym[17] = 1000;
  sym[2049] = -777;
  // A 2-channel model over [-8, 8] plus the escape interval (uniform-ish, precision 16).
  const uint32_t len = 17 + 2;
  std::vector<uint32_t> cdfs(2 * len), lengths(2, len);
  std::vector<int32_t> offsets(2, -8);
  for (uint32_t c = 0; c < 2; ++c)
    for (uint32_t i = 0; i < len; ++i)
      cdfs[c * len + i] = i == len - 1 ? 65536u : i * (65536u / (len - 1));
  nwc_cdf_model model{sizeof(nwc_cdf_model), 16, 2, len, cdfs.data(), lengths.data(),
                      offsets.data()};
  bool ok = true;
  for (const nwc_cdf_model *mp :
       {static_cast<const nwc_cdf_model *>(nullptr), static_cast<const nwc_cdf_model *>(&model)}) {
    const std::string mode = mp ? " (with a model)" : " (no model)";
    Sink out;
    bool needs_model = false;
    ok &= step("encode" + mode, [&] {
      View in(sym.data(), NWC_DTYPE_I32, 1, static_cast<int64_t>(sym.size()));
      nwc_status st = ei.encode(inst.raw(), in.get(), mp, &out.sink);
      if (!mp && st == NWC_E_INVALID_ARG) {
        needs_model = true;
        return std::string("needs a probability model");
      }
      inst.check(st, "encode");
      return std::to_string(out.bytes.size()) + " bytes for " + std::to_string(sym.size()) +
             " symbols";
    });
    if (!ok) return false;
    if (needs_model) continue;
    ok &= step("decode" + mode, [&] {
      std::vector<int32_t> back(sym.size(), 0x7fffffff);
      View v(back.data(), NWC_DTYPE_I32, 1, static_cast<int64_t>(back.size()));
      inst.check(ei.decode(inst.raw(), out.view(), mp, v.get()), "decode");
      require(back == sym, "decode does not return the encoded symbols");
      return std::string("exact round trip");
    });
    ok &= step("decode of a truncated stream" + mode, [&] {
      // Untrusted input: any status will do, reading out of bounds or crashing will not.
      std::vector<uint8_t> cut(out.bytes.begin(), out.bytes.begin() + out.bytes.size() / 2);
      std::vector<int32_t> back(sym.size(), 0);
      View v(back.data(), NWC_DTYPE_I32, 1, static_cast<int64_t>(back.size()));
      nwc_status st = ei.decode(inst.raw(), nwc_bytes{cut.data(), cut.size()}, mp, v.get());
      return std::string(st == NWC_OK ? "accepted" : "rejected (") +
             (st == NWC_OK ? "" : std::string(nwc_status_name(st)) + ")");
    });
    if (!ok) return false;
  }
  return ok;
}

// A block codec for compensators: rounds values to a grid of step 1/64 and checks that blocks
// cover every column exactly once.
struct GridCodec {
  nwc_block_codec codec{};
  std::vector<int> covered = std::vector<int>(kCols, 0);
  std::string error;
  GridCodec() {
    codec.struct_size = sizeof(nwc_block_codec);
    codec.ctx = this;
    codec.rows = kRows;
    codec.cols = kCols;
    codec.encode = [](nwc_block_codec *c, int64_t c0, int64_t c1, const nwc_tensor_view *values,
                      nwc_tensor_view *recon) -> nwc_status {
      return c->encode_ex(c, c0, c1, values, nullptr, 0, recon);
    };
    codec.encode_ex = [](nwc_block_codec *c, int64_t c0, int64_t c1, const nwc_tensor_view *values,
                         const nwc_tensor_view *, uint32_t flags,
                         nwc_tensor_view *recon) -> nwc_status {
      auto *self = static_cast<GridCodec *>(c->ctx);
      if (c0 < 0 || c1 > kCols || c0 >= c1 || !values || !recon || values->dtype != NWC_DTYPE_F32 ||
          recon->dtype != NWC_DTYPE_F32 || values->shape[0] != kRows ||
          values->shape[1] != c1 - c0) {
        self->error = "block [" + std::to_string(c0) + ", " + std::to_string(c1) +
                      ") with malformed arguments";
        return NWC_E_INVALID_ARG;
      }
      const auto *in = static_cast<const float *>(values->data);
      auto *out = static_cast<float *>(recon->data);
      for (int64_t i = 0; i < kRows * (c1 - c0); ++i)
        out[i] = std::nearbyint(in[i] * 64.0f) / 64.0f;
      if (!(flags & NWC_BLOCK_DRY_RUN))
        for (int64_t k = c0; k < c1; ++k) self->covered[static_cast<size_t>(k)]++;
      return NWC_OK;
    };
  }
};

bool check_compensator(const Instance &inst) {
  const auto &ci = inst.interface_as<nwc_compensator_interface>(NWC_COMPENSATOR_INTERFACE);
  std::vector<float> w = check_weight();
  for (auto &x : w) x *= 50.0f; // values of about 1, so the 1/64 grid matters
  // H = X^T X / n + 0.01 I from 512 synthetic inputs: symmetric positive definite.
  const int64_t n = 512;
  std::vector<float> xs = synthetic(static_cast<size_t>(n * kCols), 1.0, 5);
  std::vector<float> h(static_cast<size_t>(kCols * kCols));
  for (int64_t i = 0; i < kCols; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k)
        s += static_cast<double>(xs[static_cast<size_t>(k * kCols + i)]) *
             xs[static_cast<size_t>(k * kCols + j)];
      const float v = static_cast<float>(s / n) + (i == j ? 0.01f : 0.0f);
      h[static_cast<size_t>(i * kCols + j)] = h[static_cast<size_t>(j * kCols + i)] = v;
    }
  uint32_t req = 0;
  return step("requirements",
              [&] {
                req = ci.requirements(inst.raw());
                return std::string(req & NWC_COMPENSATOR_NEEDS_HESSIAN ? "needs a Hessian"
                                                                       : "no Hessian needed");
              }) &&
         step("compensate", [&] {
           GridCodec codec;
           View wv(w.data(), NWC_DTYPE_F32, kRows, kCols);
           View hv(h.data(), NWC_DTYPE_F32, kCols, kCols);
           nwc_status st =
               ci.compensate(inst.raw(), "check.weight", wv.get(), hv.get(), &codec.codec);
           if (st != NWC_OK && !codec.error.empty()) throw StepFailed(codec.error);
           inst.check(st, "compensate");
           for (int64_t k = 0; k < kCols; ++k)
             require(codec.covered[static_cast<size_t>(k)] == 1,
                     "column " + std::to_string(k) + " coded " +
                         std::to_string(codec.covered[static_cast<size_t>(k)]) +
                         " times (expected once)");
           return std::string("every column coded once");
         });
}

// Parses --set KEY=VALUE for a plugin's schema: JSON when it parses (numbers, true/false, lists),
// otherwise the text as a string.
OptionValues options_for(const Plugin &p, const std::vector<std::string> &sets) {
  json j = json::object();
  for (const auto &kv : sets) {
    const auto eq = kv.find('=');
    const std::string key = kv.substr(0, eq),
                      text = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (!p.option(key)) continue; // --set applies to the plugins that have the key
    json v = json::parse(text, nullptr, false);
    const uint32_t type = p.option(key)->type;
    if (v.is_discarded() || type == NWC_OPT_STRING || type == NWC_OPT_ENUM || type == NWC_OPT_PATH)
      v = text;
    j[key] = v;
  }
  return OptionValues::from_json(j, p.options.data(), static_cast<uint32_t>(p.options.size()),
                                 "--set for " + p.id);
}

} // namespace

int plugin_check_child(const std::vector<std::string> &args) {
  std::vector<std::string> plugin_paths, sets;
  std::string id;
  bool no_default = false, list = false;
  po::options_description d;
  d.add_options()("id", po::value(&id))("plugin-path", po::value(&plugin_paths)->composing())(
      "no-default-plugin-path", po::bool_switch(&no_default))("set", po::value(&sets)->composing())(
      "list", po::bool_switch(&list))("quiet,q", "");
  po::positional_options_description pos;
  pos.add("id", 1);
  po::variables_map vm;
  po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
  po::notify(vm);
  set_log_level(vm.count("quiet") ? NWC_LOG_ERROR : NWC_LOG_WARNING);
  std::vector<std::filesystem::path> cli(plugin_paths.begin(), plugin_paths.end());
  Registry reg;
  const Plugin *p = nullptr;
  bool ok = step("load", [&] {
    reg.scan(Registry::search_path(cli, !no_default));
    if (list) return std::string();
    p = reg.find(id);
    if (!p) {
      std::vector<std::string> ids;
      for (const auto &q : reg.plugins()) ids.push_back(q->id);
      const std::string hint = did_you_mean(id, ids);
      throw StepFailed("plugin " + id + " is not installed" +
                       (hint.empty() ? "" : " (did you mean " + hint + "?)"));
    }
    report("info", "kind", kind_name(p->kind));
    report("info", "version", p->version);
    report("info", "library", p->library_path.string());
    return std::string(p->library_path.filename());
  });
  if (list) {
    for (const auto &q : reg.plugins()) report("info", "id", q->id);
    return ok ? 0 : 1;
  }
  if (!ok) return 1;
  std::unique_ptr<Instance> inst;
  ok = step("create", [&] {
    OptionValues opts = options_for(*p, sets);
    for (const auto &s : p->options)
      if ((s.flags & NWC_OPTF_REQUIRED) && !opts.find(s.key))
        throw StepFailed(std::string("needs option ") + s.key + " (pass --set " + s.key +
                         "=VALUE)");
    inst = reg.create(p->id, opts);
    return std::string("default options") + (opts.empty() ? "" : " and --set");
  });
  if (!ok) return 1;
  switch (p->kind) {
  case NWC_KIND_CHUNKER:
    ok = check_chunker(*inst);
    break;
  case NWC_KIND_TRANSFORM:
    ok = check_transform(*inst);
    break;
  case NWC_KIND_QUANTIZER:
    ok = check_quantizer(*inst);
    break;
  case NWC_KIND_ENTROPY_CODER:
    ok = check_entropy(*inst);
    break;
  case NWC_KIND_COMPENSATOR:
    ok = check_compensator(*inst);
    break;
  default:
    report("fail", "kind", "unknown kind " + std::to_string(p->kind));
    ok = false;
  }
  ok &= step("destroy", [&] {
    inst.reset();
    return std::string();
  });
  return ok ? 0 : 1;
}

// ---- parent
// --------------------------------------------------------------------------------------

namespace {

std::string signal_name(int sig) {
  if (const char *abbrev = sigabbrev_np(sig)) return std::string("SIG") + abbrev;
  return "signal " + std::to_string(sig);
}

struct StepResult {
  std::string name, result, message; // result: pass | fail
};

struct CheckResult {
  std::string id, kind, version, library;
  std::vector<StepResult> steps;
  bool passed = false;
  std::string failure;          // one line when not passed
  std::vector<std::string> ids; // --list
};

// Runs the child for one plugin (or --list) and collects its report.
CheckResult run_child(const std::string &id, const std::vector<std::string> &child_args,
                      double timeout_s) {
  CheckResult r;
  r.id = id;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail(NWC_E_IO, std::string("pipe: ") + std::strerror(errno));
  std::vector<std::string> argv_s = {"nwc", kPluginCheckChild};
  if (!id.empty()) argv_s.push_back(id);
  argv_s.insert(argv_s.end(), child_args.begin(), child_args.end());
  std::vector<char *> argv;
  for (auto &s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, "/proc/self/exe", &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (err != 0) {
    ::close(fds[0]);
    fail(NWC_E_IO, std::string("cannot start the check process: ") + std::strerror(err));
  }
  std::string buf;
  const auto start = std::chrono::steady_clock::now();
  bool timed_out = false;
  for (;;) {
    pollfd pfd{fds[0], POLLIN, 0};
    const int pr = ::poll(&pfd, 1, 200);
    if (pr < 0 && errno != EINTR) break;
    if (pr > 0) {
      char chunk[4096];
      const ssize_t n = ::read(fds[0], chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break; // EOF: the child exited (or closed stdout)
      buf.append(chunk, static_cast<size_t>(n));
    }
    if (timeout_s > 0 &&
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() >
            timeout_s) {
      timed_out = true;
      ::kill(pid, SIGKILL);
      break;
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  // Parse the report lines.
  std::istringstream in(buf);
  std::string line, current;
  while (std::getline(in, line)) {
    const auto sp = line.find(' ');
    if (sp == std::string::npos) continue;
    const std::string event = line.substr(0, sp);
    std::string rest = line.substr(sp + 1), msg;
    if (const auto tab = rest.find('\t'); tab != std::string::npos) {
      msg = rest.substr(tab + 1);
      rest = rest.substr(0, tab);
    }
    if (event == "step") {
      current = rest;
    } else if (event == "pass" || event == "fail") {
      r.steps.push_back({rest, event, msg});
      if (event == "fail" && r.failure.empty())
        r.failure = msg.rfind("plugin ", 0) == 0 ? msg : "plugin " + id + ": " + rest + ": " + msg;
      current.clear();
    } else if (event == "info") {
      if (rest == "kind") r.kind = msg;
      if (rest == "version") r.version = msg;
      if (rest == "library") r.library = msg;
      if (rest == "id") r.ids.push_back(msg);
    }
  }
  const std::string where = current.empty() ? "" : " while " + current;
  std::string died;
  if (timed_out)
    died = "plugin " + id + " did not finish within " +
           std::to_string(static_cast<int>(timeout_s)) + " s" + where + " (killed)";
  else if (WIFSIGNALED(status))
    died = "plugin " + id + " crashed with " + signal_name(WTERMSIG(status)) + where;
  else if (WIFEXITED(status) && WEXITSTATUS(status) != 0 && r.failure.empty())
    died = "plugin " + id + ": the check process exited with status " +
           std::to_string(WEXITSTATUS(status)) + where;
  if (!died.empty()) {
    if (!current.empty()) r.steps.push_back({current, "fail", died});
    r.failure = died;
  }
  r.passed = r.failure.empty() && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!r.passed && r.failure.empty()) r.failure = "plugin " + id + ": check failed";
  return r;
}

} // namespace

int plugins_check(const std::vector<std::string> &args) {
  std::vector<std::string> ids, plugin_paths, sets;
  bool all = false, json_out = false, quiet = false, no_default = false;
  double timeout = 300;
  po::options_description d("nwc plugins check");
  d.add_options()("id", po::value(&ids)->composing(), "plugin ids to check")(
      "all", po::bool_switch(&all), "check every installed plugin")(
      "set", po::value(&sets)->composing(),
      "KEY=VALUE option for the plugins that have KEY (repeatable), e.g. codec=FILE.nwcc")(
      "timeout", po::value(&timeout)->default_value(300),
      "seconds one plugin's check may take (0 = no limit)")(
      "plugin-path", po::value(&plugin_paths)->composing(),
      "directory to search for plugins first (repeatable)")(
      "no-default-plugin-path", po::bool_switch(&no_default),
      "search only --plugin-path and NWC_PLUGIN_PATH")("json", po::bool_switch(&json_out),
                                                       "machine-readable JSON on stdout")(
      "quiet,q", po::bool_switch(&quiet),
      "no warnings")("threads", po::value<unsigned>(),
                     "ignored (checks are single-threaded)")("help,h", "show this help");
  const char *usage = "nwc plugins check ID... | --all [--set KEY=VALUE]... [--json]";
  po::positional_options_description pos;
  pos.add("id", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(d).positional(pos).run(), vm);
    if (vm.count("help")) {
      std::cout << "usage: " << usage << "\n\n" << d << "\n";
      return 0;
    }
    po::notify(vm);
    if (ids.empty() == !all)
      throw po::error(all ? "give plugin ids or --all, not both" : "missing plugin id");
    for (const auto &s : sets)
      if (s.find('=') == std::string::npos || s.front() == '=')
        throw po::error("--set " + s + ": expected KEY=VALUE");
  } catch (const po::error &e) {
    std::cerr << "nwc: usage error: plugins check: " << e.what() << " (usage: " << usage << ")\n";
    return 2;
  }
  std::vector<std::string> child_args;
  for (const auto &p : plugin_paths) child_args.insert(child_args.end(), {"--plugin-path", p});
  if (no_default) child_args.push_back("--no-default-plugin-path");
  if (quiet || json_out) child_args.push_back("--quiet");
  for (const auto &s : sets) child_args.insert(child_args.end(), {"--set", s});
  if (all) {
    std::vector<std::string> list_args = child_args;
    list_args.push_back("--list");
    CheckResult l = run_child("", list_args, timeout);
    if (!l.passed) {
      std::cerr << "nwc: error: plugins check --all: cannot list the installed plugins ("
                << l.failure << ")\n";
      return 1;
    }
    ids = l.ids;
  }
  std::vector<CheckResult> results;
  size_t passed = 0;
  for (const auto &id : ids) {
    results.push_back(run_child(id, child_args, timeout));
    const CheckResult &r = results.back();
    passed += r.passed;
    if (json_out) continue;
    std::cout << r.id;
    if (!r.kind.empty()) std::cout << " (" << r.kind << " " << r.version << ")";
    std::cout << ": " << (r.passed ? "ok" : "FAILED") << "\n";
    for (const auto &s : r.steps)
      std::cout << "  " << (s.result == "pass" ? "pass" : "FAIL") << "  " << s.name
                << (s.message.empty() ? "" : ": " + s.message) << "\n";
    std::cout.flush();
  }
  if (json_out) {
    json j = {{"passed", passed == results.size()}, {"plugins", json::array()}};
    for (const auto &r : results) {
      json steps = json::array();
      for (const auto &s : r.steps)
        steps.push_back({{"step", s.name}, {"result", s.result}, {"message", s.message}});
      j["plugins"].push_back({{"id", r.id},
                              {"kind", r.kind},
                              {"version", r.version},
                              {"library", r.library},
                              {"passed", r.passed},
                              {"error", r.passed ? json(nullptr) : json(r.failure)},
                              {"steps", steps}});
    }
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << passed << " of " << results.size() << " plugin" << (results.size() == 1 ? "" : "s")
              << " passed\n";
  }
  for (const auto &r : results)
    if (!r.passed) std::cerr << "nwc: error: " << r.failure << "\n";
  return passed == results.size() ? 0 : 1;
}

} // namespace nwc::cli
