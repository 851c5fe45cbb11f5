// compress.cpp — the compression driver: every tensor of a model coded with its stage chain (or
// stored raw / zstd), in parallel, written to the container in model order.
#include "nwc/host/compress.hpp"

#include "encoded_tensor.hpp"
#include "nwc/cpp/error.hpp"
#include "resources.hpp"
#include "stages.hpp"
#include "tensor_side.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstring>
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

// The type an unselected tensor is stored in, losslessly: F16 and BF16 as they are; F32 as BF16 or
// F16 when every value converts there and back to the same bits (weights of a 16-bit model held in
// float32, norms of exactly 1), else F32. Other types are stored as F32, which holds them exactly.
DType storage_dtype(DType original, const std::vector<float> &values) {
  if (original == DType::F16 || original == DType::BF16) return original;
  if (original != DType::F32 || values.empty()) return DType::F32;
  bool bf16 = true, f16 = true;
  for (const float v : values) {
    uint32_t bits = 0, back_bf16 = 0, back_f16 = 0;
    std::memcpy(&bits, &v, sizeof bits);
    const float b = bf16_to_f32(f32_to_bf16(v)), h = f16_to_f32(f32_to_f16(v));
    std::memcpy(&back_bf16, &b, sizeof b);
    std::memcpy(&back_f16, &h, sizeof h);
    bf16 = bf16 && back_bf16 == bits;
    f16 = f16 && back_f16 == bits;
    if (!bf16 && !f16) return DType::F32;
  }
  return bf16 ? DType::BF16 : DType::F16;
}

// One model compressed into one container: the steps of compress_model(), in the order run()
// takes them. Tensors are coded by worker threads (in model order, at most `window_` ahead of the
// writer) and handed over in model order: written by rank 0, or sent to rank 0 by other ranks.
class CompressionRun {
public:
  CompressionRun(const Model &model, const Pipeline &pipeline, const Registry &registry,
                 const std::filesystem::path &out, const CompressSettings &settings)
      : model_(model), pipeline_(pipeline), registry_(registry), out_(out), settings_(settings),
        n_(model.tensors.size()) {}
  ~CompressionRun() { // joins the workers only when run() did not get that far
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto &t : pool_) t.join();
  }
  CompressionRun(const CompressionRun &) = delete;
  CompressionRun &operator=(const CompressionRun &) = delete;

  // The checks of plan_chains() alone: nothing is coded or written.
  void check() { plan_chains(); }

  CompressResult run() {
    plan_chains();
    schedule();
    if (rank_ == 0) writer_.emplace(out_);
    start_workers();
    hand_over();
    stop_workers();
    if (error_) std::rethrow_exception(error_);
    if (rank_ != 0) return result_; // rank 0 writes the container
    return finish();
  }

private:
  using StageCache = std::map<std::string, std::unique_ptr<Stages>>; // a worker's, by chain

  // ---- before any output exists --------------------------------------------------------------

  // Resolves every tensor's chain and instantiates each distinct chain once: a plugin that cannot
  // be created with these options, or needs what we lack, fails here, before the output file
  // exists.
  void plan_chains() {
    chains_.resize(n_);
    for (size_t i = 0; i < n_; ++i) chains_[i] = pipeline_.chain_for(model_.tensors[i].info.name);
    bool any = std::any_of(chains_.begin(), chains_.end(), [](auto &c) { return c.has_value(); });
    if (!any && !pipeline_.select.empty())
      fail(NWC_E_INVALID_ARG,
           pipeline_.file.string() +
               ": pipeline.select matches no tensor of the model (first tensor: " +
               (n_ ? model_.tensors[0].info.name : std::string("none")) + ")");
    job_ = settings_.job && settings_.job->size() > 1 ? settings_.job : nullptr;
    if (job_ && !settings_.precoded.empty())
      fail(NWC_E_INVALID_ARG, "tensors coded ahead (block fine-tuning) cannot be distributed over "
                              "MPI ranks");
    for (size_t i = 0; i < n_; ++i) {
      if (!chains_[i]) continue;
      auto st = make_stages(chains_[i]->stages, registry_, false);
      if (job_) { // rank 0 records the options of tensors other ranks code
        auto &resolved = resolved_by_chain_[chains_[i]->to_json().dump()];
        for (size_t s = 0; s < st->inst.size(); ++s)
          if (st->inst[s]) resolved[s] = st->inst[s]->resolved_options();
      }
      // A tensor coded ahead (block fine-tuning, sequential calibration) had its inputs then.
      if (!settings_.precoded.count(model_.tensors[i].info.name))
        check_inputs(model_.tensors[i].info, *st);
    }
  }

  // What a selected tensor's chain needs from the settings: a Hessian of the right size, one for
  // [levels] and [importance], one for a compensator that requires it.
  void check_inputs(const TensorInfo &info, const Stages &st) const {
    auto h = settings_.hessians.find(info.name);
    const int64_t cols = as_matrix(info.shape).second;
    if (h != settings_.hessians.end() &&
        h->second.size() != static_cast<uint64_t>(cols) * static_cast<uint64_t>(cols))
      fail(NWC_E_INVALID_ARG, "calibration: Hessian of " + info.name + " has " +
                                  std::to_string(h->second.size()) + " entries, expected " +
                                  std::to_string(cols) + " x " + std::to_string(cols));
    if (pipeline_.levels_for(info.name) && h == settings_.hessians.end() &&
        settings_.column_levels.find(info.name) == settings_.column_levels.end())
      fail(NWC_E_INVALID_ARG, pipeline_.levels.where +
                                  ": [levels] needs the calibration Hessian of " + info.name +
                                  "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    if (pipeline_.importance.enabled && h == settings_.hessians.end())
      fail(NWC_E_INVALID_ARG, pipeline_.importance.where +
                                  ": [importance] needs the calibration Hessian of " + info.name +
                                  "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    if (st.compensator && h == settings_.hessians.end()) {
      uint32_t req = st.compensator->requirements(st.at(Slot::Compensator).raw());
      if (req & NWC_COMPENSATOR_NEEDS_HESSIAN)
        fail(NWC_E_INVALID_ARG,
             "plugin " + st.at(Slot::Compensator).plugin().id +
                 " needs the calibration Hessian of " + info.name +
                 "; pass --calibration FILE from `nwc calibrate`, or --calibrate");
    }
  }

  // Which process codes which tensor: all here, or with a job the largest tensors first, each
  // to the rank with the fewest weights so far (deterministic, so every rank agrees). Sets the
  // worker count and the window of tensors held in memory.
  void schedule() {
    rank_ = job_ ? job_->rank() : 0;
    const int ranks = job_ ? job_->size() : 1;
    owner_.assign(n_, 0);
    if (job_) {
      std::vector<size_t> by_size(n_);
      std::iota(by_size.begin(), by_size.end(), size_t{0});
      std::stable_sort(by_size.begin(), by_size.end(), [&](size_t a, size_t b) {
        return model_.tensors[a].info.numel() > model_.tensors[b].info.numel();
      });
      std::vector<uint64_t> load(static_cast<size_t>(ranks), 0);
      for (size_t i : by_size) {
        auto least = std::min_element(load.begin(), load.end());
        owner_[i] = static_cast<int>(least - load.begin());
        *least += model_.tensors[i].info.numel();
      }
    }
    for (size_t i = 0; i < n_; ++i)
      if (owner_[i] == rank_) mine_.push_back(i);
    threads_ = std::min<unsigned>(resolve_threads(settings_.threads),
                                  static_cast<unsigned>(std::max<size_t>(mine_.size(), 1)));
    window_ = 2 * static_cast<size_t>(threads_);
    done_.resize(n_);
  }

  // ---- workers: code this process's tensors --------------------------------------------------

  void start_workers() {
    for (unsigned t = 0; t < threads_; ++t) pool_.emplace_back([this] { work(); });
  }

  // Takes this process's tensors in model order, waiting while `window_` of them are coded but
  // not yet handed over.
  void work() {
    StageCache cache;
    while (!stop_) {
      const size_t k = next_.fetch_add(1);
      if (k >= mine_.size()) return;
      const size_t i = mine_[k];
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stop_ || k < handed_ + window_; });
        // After a failure only tensors before it still matter: one of them may fail too, and
        // the earliest failure is the one reported, whatever the thread count.
        if (stop_ && (!error_ || i > error_index_)) return;
      }
      try {
        auto enc = encode(i, cache);
        std::lock_guard<std::mutex> lock(mu_);
        done_[i] = std::move(enc);
      } catch (...) {
        // Tensors before i are already claimed and finish; the earliest failure is reported, so
        // the error does not depend on the thread count.
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_ || i < error_index_) {
          error_ = std::current_exception();
          error_index_ = i;
        }
        stop_ = true;
      }
      cv_.notify_all();
    }
  }

  // Tensor i as written: coded ahead, stored without the pipeline, or coded with its chain.
  std::unique_ptr<EncodedTensor> encode(size_t i, StageCache &cache) const {
    const ModelTensor &mt = model_.tensors[i];
    auto enc = std::make_unique<EncodedTensor>();
    TensorRecord &rec = enc->record;
    rec.name = mt.info.name;
    rec.dtype = mt.info.dtype;
    rec.shape = mt.info.shape;
    if (auto pre = settings_.precoded.find(rec.name); pre != settings_.precoded.end()) {
      if (!chains_[i])
        fail(NWC_E_INVALID_ARG, "tensor " + rec.name + " was coded ahead but is not selected");
      *enc = *pre->second->encoded;
      return enc;
    }
    const auto r = settings_.replaced.find(rec.name);
    const bool replaced = r != settings_.replaced.end();
    std::vector<float> values = replaced ? *r->second : mt.load();
    if (values.size() != mt.info.numel())
      fail(NWC_E_INTERNAL,
           replaced ? "replaced tensor " + rec.name + " has the wrong element count"
                    : "tensor " + rec.name + ": loader returned the wrong element count");
    if (!chains_[i]) {
      // At the precision the original would be stored at, fine-tuned values too: the file does not
      // grow when fine-tuning moves a bf16 model's norms off the bf16 grid.
      const DType stored = pipeline_.unselected == "zstd-f16"
                               ? DType::F16
                               : storage_dtype(rec.dtype, replaced ? mt.load() : values);
      store_unselected(*enc, values, stored);
      return enc;
    }
    std::string key = chains_[i]->to_json().dump();
    auto &slot = cache[key];
    if (!slot) slot = make_stages(chains_[i]->stages, registry_, false);
    encode_with_chain(*enc, values, *chains_[i], *slot, pipeline_, settings_, nullptr);
    if (settings_.unit_row_gains &&
        std::none_of(enc->streams.begin(), enc->streams.end(), [](const auto &s) {
          return s.first == "row_scales" || s.first == "row_gain";
        })) {
      std::vector<float> ones(static_cast<size_t>(as_matrix(rec.shape).first), 1.0f);
      enc->streams.insert(
          enc->streams.begin(),
          {"row_gain", {-1, encode_row_scales(NWC_DTYPE_F16, ones, "tensor " + rec.name)}});
    }
    return enc;
  }

  // A tensor the pipeline does not select: one "raw" or "zstd" stream (pipeline.unselected).
  void store_unselected(EncodedTensor &enc, const std::vector<float> &values, DType sd) const {
    TensorRecord &rec = enc.record;
    rec.dtype = sd;
    auto bytes = raw_bytes(sd, values);
    if (pipeline_.unselected == "zstd" || pipeline_.unselected == "zstd-f16") {
      std::vector<uint8_t> z(ZSTD_compressBound(bytes.size()));
      size_t zn = ZSTD_compress(z.data(), z.size(), bytes.data(), bytes.size(), 9);
      if (ZSTD_isError(zn)) fail(NWC_E_INTERNAL, "zstd: " + std::string(ZSTD_getErrorName(zn)));
      z.resize(zn);
      rec.storage = "zstd";
      enc.streams.push_back({"zstd", {-1, std::move(z)}});
    } else {
      rec.storage = "raw";
      enc.streams.push_back({"raw", {-1, std::move(bytes)}});
    }
  }

  // ---- the calling thread: hand the coded tensors over in model order ------------------------

  // Rank 0 writes every tensor; other ranks send theirs to rank 0. A failure here stops the
  // workers: nothing after it matters.
  void hand_over() {
    try {
      if (rank_ != 0)
        send_mine();
      else
        write_all();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      error_index_ = 0;
      stop_ = true;
    }
  }

  // This process's coded tensor i, once a worker has finished it (nullptr after an error).
  std::unique_ptr<EncodedTensor> take(size_t i) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return error_ || done_[i] != nullptr; });
    return error_ ? nullptr : std::move(done_[i]);
  }

  // One more of this process's tensors is out of memory: a worker may start the next.
  void handed_one() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++handed_;
    }
    cv_.notify_all();
  }

  void send_mine() {
    for (size_t i : mine_) {
      auto enc = take(i);
      if (!enc) break;
      std::vector<uint8_t> msg = pack_encoded(*enc);
      enc.reset();
      job_->send(0, msg.data(), msg.size());
      handed_one();
    }
  }

  void write_all() {
    for (size_t i = 0; i < n_; ++i) {
      std::unique_ptr<EncodedTensor> enc = owner_[i] == 0 ? take(i) : receive(i);
      if (!enc) break;
      write_tensor(std::move(*enc));
      if (owner_[i] == 0) handed_one();
      if (settings_.progress) settings_.progress(i + 1, n_, result_.tensors.back().name);
    }
  }

  // Tensor i from the rank that coded it, with the chain and options rank 0 derived for it.
  std::unique_ptr<EncodedTensor> receive(size_t i) {
    auto enc = unpack_encoded(job_->receive(owner_[i]), model_.tensors[i].info.name);
    if (chains_[i]) {
      enc->chain = chains_[i]->to_json();
      const auto &resolved = resolved_by_chain_.at(enc->chain.dump());
      std::copy(resolved.begin(), resolved.end(), enc->resolved);
    }
    return enc;
  }

  void write_tensor(EncodedTensor &&enc) {
    TensorRecord rec = std::move(enc.record);
    for (auto &s : enc.streams)
      rec.streams.push_back(writer_->append_stream(s.first, s.second.first, s.second.second.data(),
                                                   s.second.second.size()));
    if (rec.storage == "pipeline") rec.stage_config = stage_config(enc);
    result_.tensors.push_back({rec.name, rec.storage, rec.numel(), rec.stream_bytes()});
    writer_->add_tensor(std::move(rec));
  }

  // The manifest's stage configuration for a coded tensor's chain, added on first use: per stage
  // the plugin id, version, stream version and resolved options, and the files behind its path
  // options.
  int32_t stage_config(const EncodedTensor &enc) {
    std::string key = enc.chain.dump();
    auto it = config_index_.find(key);
    if (it != config_index_.end()) return it->second;
    StageConfig cfg;
    for (size_t s = 0; s < kSlotNames.size(); ++s) {
      const auto &spec =
          enc.chain.contains(kSlotNames[s]) ? enc.chain[kSlotNames[s]] : nlohmann::json();
      if (spec.is_null()) continue;
      const Plugin *p = registry_.find(spec["plugin"].get<std::string>());
      cfg.stages.push_back(StageRecord{kSlotNames[s], p->id, p->version, p->stream_version,
                                       enc.resolved[s].to_json()});
      record_resources(*p, enc.resolved[s], manifest_.stage_configs.size(), kSlotNames[s],
                       settings_.embed_resources, *writer_, resources_);
    }
    manifest_.stage_configs.push_back(std::move(cfg));
    const auto index = static_cast<int32_t>(manifest_.stage_configs.size() - 1);
    config_index_.emplace(key, index);
    return index;
  }

  // ---- the end ---------------------------------------------------------------------------------

  // Wakes the workers (all of them stop after an error) and joins them.
  void stop_workers() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (error_) stop_ = true;
    }
    cv_.notify_all();
    for (auto &t : pool_) t.join();
    pool_.clear();
  }

  // Rank 0: manifest and footer, the file renamed into place.
  CompressResult finish() {
    manifest_.architecture = model_.arch.to_json();
    if (!resources_.empty()) manifest_.extra["resources"] = resources_;
    manifest_.pipeline_name = pipeline_.name;
    manifest_.pipeline_text = toml_without_comments(pipeline_.text);
    manifest_.source_model = model_.path.filename().string();
    manifest_.source_format = model_.format;
    writer_->finish(std::move(manifest_));
    result_.file_bytes = std::filesystem::file_size(out_);
    return std::move(result_);
  }

  const Model &model_;
  const Pipeline &pipeline_;
  const Registry &registry_;
  const std::filesystem::path &out_;
  const CompressSettings &settings_;
  const size_t n_;

  // The plan, fixed before the workers start.
  std::vector<std::optional<StageChain>> chains_; // per tensor; nullopt: stored raw / zstd
  Job *job_ = nullptr;                            // with more than one rank
  std::map<std::string, std::array<OptionValues, kSlotCount>>
      resolved_by_chain_; // other ranks' tensors
  int rank_ = 0;
  std::vector<int> owner_;   // per tensor, the rank that codes it
  std::vector<size_t> mine_; // the tensors this process codes, in model order
  unsigned threads_ = 1;
  size_t window_ = 2; // bounds tensors held in memory

  // Shared by the workers and the calling thread: guarded by mu_ unless atomic.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> pool_;
  std::vector<std::unique_ptr<EncodedTensor>> done_; // coded, not yet handed over
  std::atomic<size_t> next_{0};                      // position in mine_
  size_t handed_ = 0;                                // of mine_: written (rank 0) or sent to rank 0
  std::exception_ptr error_;
  size_t error_index_ = 0; // the failing tensor earliest in model order is the one reported
  std::atomic<bool> stop_{false};

  // The output (rank 0), written by the calling thread.
  std::optional<ContainerWriter> writer_;
  CompressResult result_;
  std::map<std::string, int32_t> config_index_; // by chain
  ContainerManifest manifest_;
  nlohmann::json resources_ = nlohmann::json::array();
};

} // namespace

CompressResult compress_model(const Model &model, const Pipeline &pipeline,
                              const Registry &registry, const std::filesystem::path &out,
                              const CompressSettings &settings) {
  return CompressionRun(model, pipeline, registry, out, settings).run();
}

void check_compress_inputs(const Model &model, const Pipeline &pipeline, const Registry &registry,
                           const CompressSettings &settings) {
  CompressionRun(model, pipeline, registry, {}, settings).check();
}

RateFigures rate_figures(const CompressResult &result) {
  RateFigures f;
  f.tensors = result.tensors.size();
  f.bytes = result.file_bytes;
  double coded_bytes = 0, coded_weights = 0;
  for (const auto &t : result.tensors) {
    f.weights += t.numel;
    if (t.storage != "pipeline") continue;
    coded_bytes += static_cast<double>(t.stream_bytes);
    coded_weights += static_cast<double>(t.numel);
  }
  f.bits_per_weight =
      f.weights ? static_cast<double>(f.bytes) * 8.0 / static_cast<double>(f.weights) : 0.0;
  f.coded_bits_per_weight = coded_weights > 0 ? 8.0 * coded_bytes / coded_weights : 0.0;
  return f;
}

} // namespace nwc::host
