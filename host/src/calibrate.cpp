#include "nwc/host/calibrate.hpp"

#include "nwc/cpp/error.hpp"
#include "nwc/formats/safetensors.hpp"

#include <cstdio>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <xxhash.h>

namespace nwc::host {

namespace {
std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}
} // namespace

const Hessian *Calibration::for_linear(const std::string &name) const {
  for (const auto &h : hessians)
    for (const auto &l : h.linears)
      if (l == name) return &h;
  return nullptr;
}

Calibration calibrate(const LlamaModel &model, const std::vector<int32_t> &stream,
                      const CalibrationSettings &settings) {
  Calibration c;
  c.seq_len = settings.seq_len > 0 ? settings.seq_len : model.arch().max_seq_len;
  if (c.seq_len < 1 || c.seq_len > model.arch().max_seq_len)
    fail(NWC_E_INVALID_ARG,
         "calibrate: --seq-len must be in [1, " + std::to_string(model.arch().max_seq_len) + "]");
  int64_t usable = std::min<int64_t>(static_cast<int64_t>(stream.size()), settings.tokens);
  const int64_t windows = usable / c.seq_len;
  if (windows == 0)
    fail(NWC_E_INVALID_ARG, "calibrate: the text gives " + std::to_string(stream.size()) +
                                " tokens, fewer than one window of " + std::to_string(c.seq_len));
  c.tokens = windows * c.seq_len;
  std::map<std::string, size_t> index;
  for (const auto &name : model.input_names()) {
    index[name] = c.hessians.size();
    Hessian h;
    h.input = name;
    h.linears = model.linears_of(name);
    c.hessians.push_back(std::move(h));
  }
  unsigned threads = settings.threads ? settings.threads : std::thread::hardware_concurrency();
  threads = std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(windows)));
  // Per worker: a Gram sum and a row count per input; window w goes to worker w % threads.
  struct Partial {
    std::vector<std::vector<double>> sums;
    std::vector<int64_t> counts;
    std::vector<int64_t> dims;
  };
  std::vector<Partial> parts(threads);
  std::exception_ptr error;
  std::mutex mu;
  auto work = [&](unsigned t) {
    Partial &p = parts[t];
    p.sums.resize(c.hessians.size());
    p.counts.assign(c.hessians.size(), 0);
    p.dims.assign(c.hessians.size(), 0);
    auto hook = [&](const std::string &input, const float *x, int64_t rows, int64_t dim) {
      const size_t k = index.at(input);
      if (p.sums[k].empty()) {
        p.dims[k] = dim;
        p.sums[k].assign(static_cast<size_t>(dim * dim), 0.0);
      }
      accumulate_gram(x, rows, dim, p.sums[k].data());
      p.counts[k] += rows;
    };
    try {
      for (int64_t w = t; w < windows; w += threads) {
        std::vector<int32_t> window(stream.begin() + w * c.seq_len,
                                    stream.begin() + (w + 1) * c.seq_len);
        model.forward_with_hook(window, 1, c.seq_len, hook);
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!error) error = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work, t);
  work(0);
  for (auto &th : pool) th.join();
  if (error) std::rethrow_exception(error);
  std::vector<std::vector<double>> sums(c.hessians.size());
  for (size_t k = 0; k < c.hessians.size(); ++k)
    for (const Partial &p : parts) {
      if (p.sums[k].empty()) continue;
      if (sums[k].empty()) {
        sums[k] = p.sums[k];
        c.hessians[k].dim = p.dims[k];
      } else {
        for (size_t i = 0; i < sums[k].size(); ++i) sums[k][i] += p.sums[k][i];
      }
      c.hessians[k].count += p.counts[k];
    }
  for (size_t i = 0; i < c.hessians.size(); ++i) {
    Hessian &h = c.hessians[i];
    h.h = std::move(sums[i]);
    for (double &v : h.h) v /= static_cast<double>(h.count);
  }
  return c;
}

std::string model_fingerprint(const Model &model) {
  XXH64_state_t *st = XXH64_createState();
  XXH64_reset(st, 0);
  for (const auto &t : model.tensors) {
    XXH64_update(st, t.info.name.data(), t.info.name.size() + 1);
    XXH64_update(st, t.info.shape.data(), t.info.shape.size() * sizeof(int64_t));
    std::vector<float> v = t.load();
    XXH64_update(st, v.data(), v.size() * sizeof(float));
  }
  uint64_t h = XXH64_digest(st);
  XXH64_freeState(st);
  return hex64(h);
}

void save_calibration(const Calibration &c, const std::filesystem::path &path) {
  nlohmann::json meta = {{"model_hash", c.model_hash},
                         {"text_hash", c.text_hash},
                         {"tokens", c.tokens},
                         {"seq_len", c.seq_len},
                         {"inputs", nlohmann::json::object()}};
  std::vector<TensorInfo> infos;
  for (const auto &h : c.hessians) {
    meta["inputs"][h.input] = {{"linears", h.linears}, {"count", h.count}, {"dim", h.dim}};
    infos.push_back(TensorInfo{"hessian." + h.input, DType::F32, {h.dim, h.dim}});
  }
  SafetensorsWriter w(path, infos, {{"nwc.calibration", meta.dump()}});
  for (const auto &h : c.hessians) {
    std::vector<float> f(h.h.begin(), h.h.end());
    w.write("hessian." + h.input, f.data());
  }
  w.commit();
}

Calibration load_calibration(const std::filesystem::path &path) {
  Model m = read_safetensors(path);
  const std::string p = path.string();
  nlohmann::json meta;
  try {
    meta = nlohmann::json::parse(
        m.metadata.at("__metadata__").at("nwc.calibration").get<std::string>());
  } catch (const std::exception &) {
    fail(NWC_E_CORRUPT_STREAM, p + ": not an nwc calibration file (no nwc.calibration metadata)");
  }
  Calibration c;
  try {
    c.model_hash = meta.at("model_hash").get<std::string>();
    c.text_hash = meta.at("text_hash").get<std::string>();
    c.tokens = meta.at("tokens").get<int64_t>();
    c.seq_len = meta.at("seq_len").get<int64_t>();
    for (auto it = meta.at("inputs").begin(); it != meta.at("inputs").end(); ++it) {
      Hessian h;
      h.input = it.key();
      h.linears = it.value().at("linears").get<std::vector<std::string>>();
      h.count = it.value().at("count").get<int64_t>();
      h.dim = it.value().at("dim").get<int64_t>();
      const ModelTensor *t = m.find("hessian." + h.input);
      if (!t || t->info.shape != std::vector<int64_t>{h.dim, h.dim})
        fail(NWC_E_CORRUPT_STREAM, p + ": missing or misshapen tensor hessian." + h.input);
      std::vector<float> v = t->load();
      h.h.assign(v.begin(), v.end());
      c.hessians.push_back(std::move(h));
    }
  } catch (const nlohmann::json::exception &e) {
    fail(NWC_E_CORRUPT_STREAM, p + ": malformed nwc.calibration metadata: " + e.what());
  }
  return c;
}

} // namespace nwc::host
