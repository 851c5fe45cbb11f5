// decompress.cpp — a container opened as a Model that decodes on demand, and decompression of a
// whole container to a safetensors file.
#include "nwc/host/decode.hpp"

#include "nwc/formats/safetensors.hpp"
#include "stages.hpp"

#include <algorithm>
#include <condition_variable>
#include <exception>
#include <map>
#include <mutex>
#include <thread>

namespace nwc::host {

using detail::as_matrix;

Model open_container_model(const std::filesystem::path &path, const Registry &registry,
                           unsigned threads) {
  struct State {
    ContainerReader reader;
    std::unique_ptr<ContainerDecoder> decoder;
    explicit State(const std::filesystem::path &p) : reader(p) {}
  };
  auto state = std::make_shared<State>(path);
  state->decoder = std::make_unique<ContainerDecoder>(state->reader, registry);
  Model m;
  m.format = "nwc";
  m.path = path;
  m.arch = Architecture::from_json(state->reader.manifest().architecture);
  for (const auto &t : state->reader.manifest().tensors) {
    ModelTensor mt;
    mt.info.name = t.name;
    mt.info.dtype = t.dtype;
    mt.info.shape = t.shape;
    const TensorRecord *rec = &t;
    State *s = state.get();
    mt.load = [s, rec, threads] { return s->decoder->decode_tensor(*rec, threads); };
    mt.load_native = [s, rec] { return s->decoder->native_tensor(*rec); };
    m.tensors.push_back(std::move(mt));
  }
  m.keepalive = state;
  return m;
}

namespace {

// Decodes a container's tensors into a safetensors writer. Work units in model order: the column
// blocks of a pipeline tensor with several blocks, else the whole tensor. Worker threads take
// units in order, so blocks of one tensor and tensors with a single unit (raw, zstd, one block)
// decode in parallel; the calling thread writes the tensors in model order as they complete. At
// most `window_` tensors are in memory (decoding, decoded or being written). The error reported
// is the one of the first failing unit in model order.
class SafetensorsDecompression {
public:
  SafetensorsDecompression(const std::vector<TensorRecord> &tensors,
                           const ContainerDecoder &decoder, SafetensorsWriter &writer,
                           unsigned threads, const ProgressFn &progress)
      : tensors_(tensors), decoder_(decoder), writer_(writer), progress_(progress),
        workers_(resolve_threads(threads)), window_(workers_ + 1), failed_{tensors.size(), 0} {
    for (const auto &t : tensors) {
      auto j = std::make_unique<TensorJob>();
      j->t = &t;
      // A rotated tensor decodes as a whole: its blocks hold columns of the rotated matrix.
      const bool rotated = std::any_of(t.streams.begin(), t.streams.end(),
                                       [](const StreamRef &s) { return s.role == "rotation"; });
      if (t.storage == "pipeline" && t.blocks.size() > 1 && !rotated) j->units = t.blocks.size();
      jobs_.push_back(std::move(j));
    }
  }
  ~SafetensorsDecompression() { join(); }
  SafetensorsDecompression(const SafetensorsDecompression &) = delete;
  SafetensorsDecompression &operator=(const SafetensorsDecompression &) = delete;

  // Writes every tensor (the writer is committed by the caller).
  void run() {
    try {
      for (unsigned i = 0; i < workers_; ++i) pool_.emplace_back([this] { work(); });
      write_in_order();
    } catch (...) {
      join();
      throw;
    }
    join();
    if (error_) std::rethrow_exception(error_);
  }

private:
  struct TensorJob {
    const TensorRecord *t = nullptr;
    size_t units = 1, done = 0; // done: guarded by mu_
    std::vector<float> values;
    std::once_flag alloc;
  };

  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      work_cv_.wait(lock, [&] {
        return stop_ || next_job_ >= jobs_.size() || next_job_ < written_ + window_;
      });
      if (stop_ || next_job_ >= jobs_.size()) return;
      const size_t ji = next_job_, u = next_unit_;
      TensorJob &j = *jobs_[ji];
      if (++next_unit_ == j.units) {
        ++next_job_;
        next_unit_ = 0;
      }
      lock.unlock();
      try {
        decode_unit(j, u);
        lock.lock();
        if (++j.done == j.units) done_cv_.notify_all();
      } catch (...) {
        lock.lock();
        record_failure(ji, u, std::current_exception());
      }
    }
  }

  // Unit u of a tensor: the whole tensor, or block u into its columns of the tensor's buffer.
  void decode_unit(TensorJob &j, size_t u) {
    const TensorRecord &t = *j.t;
    if (j.units == 1) {
      j.values = decoder_.decode_tensor(t, 1);
      return;
    }
    std::vector<float> block = decoder_.decode_block(t, u);
    const BlockRecord &br = t.blocks[u];
    const int64_t w = br.col_end - br.col_begin;
    const int64_t cols = as_matrix(t.shape).second;
    std::call_once(j.alloc, [&] { allocate(j); });
    for (int64_t r = 0; r * w < static_cast<int64_t>(block.size()); ++r)
      std::copy_n(block.data() + r * w, w, j.values.data() + r * cols + br.col_begin);
  }

  // A tensor's buffer: a written tensor's spare one when large enough, else fresh.
  void allocate(TensorJob &j) {
    const auto n = static_cast<size_t>(j.t->numel());
    {
      std::lock_guard<std::mutex> guard(mu_);
      for (auto &b : spare_)
        if (b.capacity() >= n) {
          j.values = std::move(b);
          std::swap(b, spare_.back());
          spare_.pop_back();
          break;
        }
    }
    if (j.values.capacity() < n) j.values = tensor_buffer(n);
    j.values.resize(n); // every block overwrites its columns
  }

  void record_failure(size_t job, size_t unit, std::exception_ptr e) { // with mu_ held
    if (std::make_pair(job, unit) < failed_) {
      failed_ = {job, unit};
      error_ = std::move(e);
    }
    stop_ = true;
    work_cv_.notify_all();
    done_cv_.notify_all();
  }

  void write_in_order() {
    for (size_t i = 0; i < jobs_.size(); ++i) {
      std::vector<float> values;
      {
        std::unique_lock<std::mutex> lock(mu_);
        done_cv_.wait(lock, [&] { return stop_ || jobs_[i]->done == jobs_[i]->units; });
        if (stop_) break;
        values = std::move(jobs_[i]->values);
      }
      writer_.write(tensors_[i].name, values.data());
      {
        std::lock_guard<std::mutex> lock(mu_);
        written_ = i + 1;
        // One spare at most: memory stays about (window + 1) x the largest tensor.
        if (spare_.empty() && values.capacity() > 0) spare_.push_back(std::move(values));
      }
      work_cv_.notify_all();
      if (progress_) progress_(i + 1, tensors_.size(), tensors_[i].name);
    }
  }

  void join() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    work_cv_.notify_all();
    for (auto &th : pool_) th.join();
    pool_.clear();
  }

  const std::vector<TensorRecord> &tensors_;
  const ContainerDecoder &decoder_;
  SafetensorsWriter &writer_;
  const ProgressFn &progress_;
  const unsigned workers_;
  const size_t window_;
  std::vector<std::unique_ptr<TensorJob>> jobs_;
  std::vector<std::thread> pool_;
  // Guarded by mu_.
  std::mutex mu_;
  std::vector<std::vector<float>> spare_; // buffers of written tensors, reused (no fresh pages)
  std::condition_variable work_cv_, done_cv_;
  size_t next_job_ = 0, next_unit_ = 0, written_ = 0;
  bool stop_ = false;
  std::pair<size_t, size_t> failed_;
  std::exception_ptr error_;
};

} // namespace

void decompress_to_safetensors(const std::filesystem::path &in, const std::filesystem::path &out,
                               const Registry &registry, DType dtype, unsigned threads,
                               const ProgressFn &progress) {
  ContainerReader reader(in);
  ContainerDecoder decoder(reader, registry);
  const Architecture arch = Architecture::from_json(reader.manifest().architecture);
  const std::vector<TensorRecord> &tensors = reader.manifest().tensors;
  std::vector<TensorInfo> infos;
  for (const auto &t : tensors) infos.push_back(TensorInfo{t.name, dtype, t.shape});
  std::map<std::string, std::string> meta{{"format", "pt"},
                                          {"nwc.architecture", arch.to_json().dump()},
                                          {"nwc.source", in.filename().string()}};
  SafetensorsWriter writer(out, infos, meta);
  SafetensorsDecompression(tensors, decoder, writer, threads, progress).run();
  writer.commit();
}

} // namespace nwc::host
