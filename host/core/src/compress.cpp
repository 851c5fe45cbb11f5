// compress.cpp — the compression driver: every tensor of a model coded with its stage chain (or
// stored raw / zstd), in parallel, written to the container in model order.
#include "nwc/host/compress.hpp"

#include "encoded_tensor.hpp"
#include "nwc/cpp/error.hpp"
#include "resources.hpp"
#include "stages.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <thread>
#include <zstd.h>

namespace nwc::host {

using namespace detail;

namespace {

std::vector<uint8_t> raw_bytes(DType dtype, const std::vector<float> &values) {
  std::vector<uint8_t> out(values.size() * dtype_size(dtype));
  from_float(dtype, values.data(), values.size(), out.data());
  return out;
}

DType storage_dtype(DType original) {
  return original == DType::F16 || original == DType::BF16 ? original : DType::F32;
}

} // namespace

CompressResult compress_model(const Model &model, const Pipeline &pipeline,
                              const Registry &registry, const std::filesystem::path &out,
                              const CompressSettings &settings) {
  // Resolve every tensor's chain first: configuration errors surface before any work.
  const size_t n = model.tensors.size();
  std::vector<std::optional<StageChain>> chains(n);
  for (size_t i = 0; i < n; ++i) chains[i] = pipeline.chain_for(model.tensors[i].info.name);
  bool any = std::any_of(chains.begin(), chains.end(), [](auto &c) { return c.has_value(); });
  if (!any && !pipeline.select.empty())
    fail(NWC_E_INVALID_ARG, pipeline.file.string() +
                                ": pipeline.select matches no tensor of the model (first tensor: " +
                                (n ? model.tensors[0].info.name : std::string("none")) + ")");
  // Instantiate each distinct chain once up front: a plugin that cannot be created with these
  // options, or needs what we lack, fails here, before the output file exists.
  Job *job = settings.job && settings.job->size() > 1 ? settings.job : nullptr;
  if (job && !settings.precoded.empty())
    fail(NWC_E_INVALID_ARG, "tensors coded ahead (block fine-tuning) cannot be distributed over "
                            "MPI ranks");
  std::map<std::string, std::array<OptionValues, 5>> resolved_by_chain; // for other ranks' tensors
  for (size_t i = 0; i < n; ++i) {
    if (!chains[i]) continue;
    const TensorInfo &info = model.tensors[i].info;
    auto st = make_stages(chains[i]->stages, registry, false);
    if (job) {
      auto &resolved = resolved_by_chain[chains[i]->to_json().dump()];
      for (size_t s = 0; s < st->inst.size(); ++s)
        if (st->inst[s]) resolved[s] = st->inst[s]->resolved_options();
    }
    auto h = settings.hessians.find(info.name);
    const int64_t cols = as_matrix(info.shape).second;
    if (h != settings.hessians.end() &&
        h->second.size() != static_cast<uint64_t>(cols) * static_cast<uint64_t>(cols))
      fail(NWC_E_INVALID_ARG, "calibration: Hessian of " + info.name + " has " +
                                  std::to_string(h->second.size()) + " entries, expected " +
                                  std::to_string(cols) + " x " + std::to_string(cols));
    if (pipeline.levels.enabled && h == settings.hessians.end() &&
        settings.column_levels.find(info.name) == settings.column_levels.end())
      fail(NWC_E_INVALID_ARG, pipeline.levels.where +
                                  ": [levels] needs the calibration Hessian of " + info.name +
                                  "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    if (st->compensator && h == settings.hessians.end()) {
      uint32_t req = st->compensator->requirements(st->at(Slot::Compensator).raw());
      if (req & NWC_COMPENSATOR_NEEDS_HESSIAN)
        fail(NWC_E_INVALID_ARG,
             "plugin " + st->at(Slot::Compensator).plugin().id +
                 " needs the calibration Hessian of " + info.name +
                 "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    }
  }

  // Which process codes which tensor: all here, or with a job the largest tensors first, each
  // to the rank with the fewest weights so far (deterministic, so every rank agrees).
  const int rank = job ? job->rank() : 0, ranks = job ? job->size() : 1;
  std::vector<int> owner(n, 0);
  if (job) {
    std::vector<size_t> by_size(n);
    std::iota(by_size.begin(), by_size.end(), size_t{0});
    std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) {
      return model.tensors[a].info.numel() > model.tensors[b].info.numel();
    });
    std::vector<uint64_t> load(static_cast<size_t>(ranks), 0);
    for (size_t i : by_size) {
      auto least = std::min_element(load.begin(), load.end());
      owner[i] = static_cast<int>(least - load.begin());
      *least += model.tensors[i].info.numel();
    }
  }
  std::vector<size_t> mine; // the tensors this process codes, in model order
  for (size_t i = 0; i < n; ++i)
    if (owner[i] == rank) mine.push_back(i);

  std::optional<ContainerWriter> writer;
  if (rank == 0) writer.emplace(out);
  const unsigned threads = std::min<unsigned>(
      resolve_threads(settings.threads), static_cast<unsigned>(std::max<size_t>(mine.size(), 1)));

  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::unique_ptr<EncodedTensor>> done(n);
  std::atomic<size_t> next{0}; // position in `mine`
  size_t handed = 0;           // of `mine`: written (rank 0) or sent to rank 0
  std::exception_ptr error;
  size_t error_index = 0; // the failing tensor earliest in model order is the one reported
  std::atomic<bool> stop{false};
  const size_t window = 2 * static_cast<size_t>(threads); // bounds tensors held in memory

  auto encode_one = [&](size_t i, std::map<std::string, std::unique_ptr<Stages>> &cache) {
    const ModelTensor &mt = model.tensors[i];
    auto enc = std::make_unique<EncodedTensor>();
    TensorRecord &rec = enc->record;
    rec.name = mt.info.name;
    rec.dtype = mt.info.dtype;
    rec.shape = mt.info.shape;
    if (auto pre = settings.precoded.find(rec.name); pre != settings.precoded.end()) {
      if (!chains[i])
        fail(NWC_E_INVALID_ARG, "tensor " + rec.name + " was coded ahead but is not selected");
      *enc = *pre->second->encoded;
      return enc;
    }
    std::vector<float> values;
    if (auto r = settings.replaced.find(rec.name); r != settings.replaced.end())
      values = *r->second;
    else
      values = mt.load();
    if (values.size() != mt.info.numel())
      fail(NWC_E_INTERNAL, "tensor " + rec.name + ": loader returned the wrong element count");
    if (!chains[i]) {
      DType sd = pipeline.unselected == "zstd-f16" ? DType::F16 : storage_dtype(mt.info.dtype);
      rec.dtype = sd;
      auto bytes = raw_bytes(sd, values);
      if (pipeline.unselected == "zstd" || pipeline.unselected == "zstd-f16") {
        std::vector<uint8_t> z(ZSTD_compressBound(bytes.size()));
        size_t zn = ZSTD_compress(z.data(), z.size(), bytes.data(), bytes.size(), 9);
        if (ZSTD_isError(zn)) fail(NWC_E_INTERNAL, "zstd: " + std::string(ZSTD_getErrorName(zn)));
        z.resize(zn);
        rec.storage = "zstd";
        enc->streams.push_back({"zstd", {-1, std::move(z)}});
      } else {
        rec.storage = "raw";
        enc->streams.push_back({"raw", {-1, std::move(bytes)}});
      }
      return enc;
    }
    std::string key = chains[i]->to_json().dump();
    auto &slot = cache[key];
    if (!slot) slot = make_stages(chains[i]->stages, registry, false);
    encode_with_chain(*enc, values, *chains[i], *slot, pipeline, settings, nullptr);
    return enc;
  };

  auto worker = [&] {
    std::map<std::string, std::unique_ptr<Stages>> cache;
    while (!stop) {
      const size_t k = next.fetch_add(1);
      if (k >= mine.size()) return;
      const size_t i = mine[k];
      {
        std::unique_lock<std::mutex> lock(mu);
        cv.wait(lock, [&] { return stop || k < handed + window; });
        // After a failure only tensors before it still matter: one of them may fail too, and
        // the earliest failure is the one reported, whatever the thread count.
        if (stop && (!error || i > error_index)) return;
      }
      try {
        auto enc = encode_one(i, cache);
        std::lock_guard<std::mutex> lock(mu);
        done[i] = std::move(enc);
      } catch (...) {
        // Tensors before i are already claimed and finish; the earliest failure is reported, so
        // the error does not depend on the thread count.
        std::lock_guard<std::mutex> lock(mu);
        if (!error || i < error_index) {
          error = std::current_exception();
          error_index = i;
        }
        stop = true;
      }
      cv.notify_all();
    }
  };

  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) pool.emplace_back(worker);

  CompressResult result;
  std::map<std::string, int32_t> config_index;
  ContainerManifest manifest;
  nlohmann::json resources = nlohmann::json::array();
  // This process's next coded tensor, once a worker has finished it (nullptr after an error).
  auto take = [&](size_t i) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait(lock, [&] { return error || done[i] != nullptr; });
    return error ? nullptr : std::move(done[i]);
  };
  auto handed_one = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      ++handed;
    }
    cv.notify_all();
  };
  try {
    if (rank != 0) { // send each coded tensor to rank 0, in model order
      for (size_t i : mine) {
        auto enc = take(i);
        if (!enc) break;
        std::vector<uint8_t> msg = pack_encoded(*enc);
        enc.reset();
        job->send(0, msg.data(), msg.size());
        handed_one();
      }
    }
    for (size_t i = 0; rank == 0 && i < n; ++i) {
      std::unique_ptr<EncodedTensor> enc;
      if (owner[i] == 0) {
        enc = take(i);
        if (!enc) break;
      } else {
        enc = unpack_encoded(job->receive(owner[i]), model.tensors[i].info.name);
        if (chains[i]) {
          enc->chain = chains[i]->to_json();
          const auto &resolved = resolved_by_chain.at(enc->chain.dump());
          std::copy(resolved.begin(), resolved.end(), enc->resolved);
        }
      }
      TensorRecord rec = std::move(enc->record);
      for (auto &s : enc->streams)
        rec.streams.push_back(writer->append_stream(s.first, s.second.first, s.second.second.data(),
                                                    s.second.second.size()));
      if (rec.storage == "pipeline") {
        std::string key = enc->chain.dump();
        auto it = config_index.find(key);
        if (it == config_index.end()) {
          StageConfig cfg;
          for (size_t s = 0; s < kSlotNames.size(); ++s) {
            const auto &spec =
                enc->chain.contains(kSlotNames[s]) ? enc->chain[kSlotNames[s]] : nlohmann::json();
            if (spec.is_null()) continue;
            const Plugin *p = registry.find(spec["plugin"].get<std::string>());
            cfg.stages.push_back(StageRecord{kSlotNames[s], p->id, p->version, p->stream_version,
                                             enc->resolved[s].to_json()});
            record_resources(*p, enc->resolved[s], manifest.stage_configs.size(), kSlotNames[s],
                             settings.embed_resources, *writer, resources);
          }
          manifest.stage_configs.push_back(std::move(cfg));
          it = config_index.emplace(key, static_cast<int32_t>(manifest.stage_configs.size() - 1))
                   .first;
        }
        rec.stage_config = it->second;
      }
      result.tensors.push_back({rec.name, rec.storage, rec.numel(), rec.stream_bytes()});
      writer->add_tensor(std::move(rec));
      if (owner[i] == 0) handed_one();
      if (settings.progress) settings.progress(i + 1, n, result.tensors.back().name);
    }
  } catch (...) { // writing failed: nothing after it matters
    std::lock_guard<std::mutex> lock(mu);
    error = std::current_exception();
    error_index = 0;
    stop = true;
  }
  {
    std::lock_guard<std::mutex> lock(mu);
    if (error) stop = true;
  }
  cv.notify_all();
  for (auto &t : pool) t.join();
  if (error) std::rethrow_exception(error);
  if (rank != 0) return result; // rank 0 writes the container

  manifest.architecture = model.arch.to_json();
  if (!resources.empty()) manifest.extra["resources"] = resources;
  manifest.pipeline_name = pipeline.name;
  manifest.pipeline_text = pipeline.text;
  manifest.source_model = model.path.filename().string();
  manifest.source_format = model.format;
  writer->finish(std::move(manifest));
  result.file_bytes = std::filesystem::file_size(out);
  return result;
}

} // namespace nwc::host
