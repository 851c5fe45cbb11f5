// container_decoder.cpp — decoding a container's tensors: stage configurations checked against the
// installed plugins, tensor-level streams decoded once per tensor, blocks decoded in parallel with
// stage sets and buffers leased per thread.
#include "nwc/host/decode.hpp"

#include "nwc/cpp/error.hpp"
#include "resources.hpp"
#include "stages.hpp"
#include "tensor_side.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <exception>
#include <map>
#include <mutex>
#include <span>
#include <thread>
#include <zstd.h>

namespace nwc::host {

using namespace detail;

struct ContainerDecoder::Impl {
  const ContainerReader *reader = nullptr;
  const Registry *registry = nullptr;
  std::vector<std::array<StageSpec, kSlotCount>> configs;
  // Buffers of one decoding thread, reused from block to block: the block's symbols, latents,
  // chunks and columns.
  struct Scratch {
    std::vector<int32_t> symbols;
    std::vector<float> latents, chunks, block;
  };
  // Idle stage sets per configuration, and idle scratch buffers. Instances are [instance-serial],
  // so each decoding thread leases its own set (with a scratch) and returns it when it is done.
  mutable std::mutex mu;
  mutable std::map<int32_t, std::vector<std::unique_ptr<Stages>>> idle;
  mutable std::vector<std::unique_ptr<Scratch>> idle_scratch;
  std::vector<std::filesystem::path>
      extracted; // embedded resources written out; removed at the end
  ~Impl() {
    idle.clear();
    std::error_code ec;
    for (const auto &p : extracted) std::filesystem::remove(p, ec);
  }

  struct Lease {
    const Impl *impl;
    int32_t config;
    std::unique_ptr<Stages> stages;
    std::unique_ptr<Scratch> scratch;
    ~Lease() {
      std::lock_guard<std::mutex> lock(impl->mu);
      impl->idle[config].push_back(std::move(stages));
      impl->idle_scratch.push_back(std::move(scratch));
    }
  };

  Lease lease(int32_t config) const {
    std::unique_ptr<Scratch> scratch;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!idle_scratch.empty()) {
        scratch = std::move(idle_scratch.back());
        idle_scratch.pop_back();
      }
      auto &pool = idle[config];
      if (!pool.empty()) {
        auto st = std::move(pool.back());
        pool.pop_back();
        return Lease{this, config, std::move(st),
                     scratch ? std::move(scratch) : std::make_unique<Scratch>()};
      }
    }
    auto st = make_stages(configs[static_cast<size_t>(config)], *registry, true);
    return Lease{this, config, std::move(st),
                 scratch ? std::move(scratch) : std::make_unique<Scratch>()};
  }

  // What every block of a tensor shares: its matrix shape and its tensor-level streams (row
  // scales, row gain, levels), read, checksummed and decoded once per tensor rather than once per
  // block. The last few are kept, keyed by content (shape and the streams' records), so that
  // random access to single blocks reads them once too.
  struct TensorPlan {
    int64_t rows = 0, cols = 0;
    std::vector<StreamRef> key; // the tensor-level streams it was read from
    TensorSide side;
    std::vector<float> row_gain;
    bool rotated = false;               // stream "rotation": undo the rotation after merging
    std::vector<uint8_t> rotation_side; // the rotation plugin's side information (untrusted)
  };
  static constexpr size_t kPlanCache = 8;
  mutable std::mutex plan_mu;
  mutable std::vector<std::shared_ptr<const TensorPlan>> plans; // most recently made last

  std::shared_ptr<const TensorPlan> plan_for(const TensorRecord &t) const {
    // Plain variables, not a structured binding: the lambda below captures them (clang < 16).
    const int64_t rows = as_matrix(t.shape).first, cols = as_matrix(t.shape).second;
    std::vector<StreamRef> key;
    for (const auto &s : t.streams)
      if (s.block == -1) key.push_back(s);
    auto same = [&](const TensorPlan &p) {
      if (p.rows != rows || p.cols != cols || p.key.size() != key.size()) return false;
      for (size_t i = 0; i < key.size(); ++i)
        if (p.key[i].role != key[i].role || p.key[i].offset != key[i].offset ||
            p.key[i].length != key[i].length || p.key[i].xxh64 != key[i].xxh64)
          return false;
      return true;
    };
    {
      std::lock_guard<std::mutex> lock(plan_mu);
      for (const auto &p : plans)
        if (same(*p)) return p;
    }
    auto p = std::make_shared<TensorPlan>();
    p->rows = rows;
    p->cols = cols;
    const std::string where = reader->path().string() + ": tensor " + t.name;
    for (const auto &s : key) {
      if (s.role == "row_scales")
        p->side.row_scales = decode_row_scales(reader->read_stream(t, s), rows, where);
      else if (s.role == "row_gain")
        p->row_gain = decode_row_scales(reader->read_stream(t, s), rows, where);
      else if (s.role == "levels")
        p->side.levels = unpack_levels(reader->read_stream(t, s), cols, where);
      else if (s.role == "rotation") {
        if (p->rotated) fail(NWC_E_CORRUPT_STREAM, where + ": two rotation streams");
        p->rotated = true;
        p->rotation_side = reader->read_stream(t, s);
      } else
        fail(NWC_E_CORRUPT_STREAM, where + ": unknown tensor stream role '" + s.role + "'");
    }
    const bool has_rotation =
        !configs.at(static_cast<size_t>(t.stage_config))[static_cast<size_t>(Slot::Rotation)]
             .plugin.empty();
    if (p->rotated != has_rotation)
      fail(NWC_E_CORRUPT_STREAM,
           where + (p->rotated ? ": has a rotation stream but its stage configuration no rotation"
                               : ": its stage configuration has a rotation but the tensor no "
                                 "rotation stream"));
    p->key = std::move(key);
    std::lock_guard<std::mutex> lock(plan_mu);
    plans.push_back(p);
    if (plans.size() > kPlanCache) plans.erase(plans.begin());
    return p;
  }

  // A block up to its symbols: its info (chunk levels included), chunk geometry, the chunker's and
  // the quantizer's side information (in the mapped file, checksummed); the entropy-decoded
  // symbols are in the lease's scratch.
  struct BlockCodes {
    nwc_block_info info{};
    Geometry g;
    std::vector<uint8_t> levels; // info.chunk_levels points here
    std::span<const uint8_t> chunk_side, quant_side;
  };

  void decode_codes(const TensorRecord &t, const TensorPlan &plan, size_t block,
                    const std::vector<const StreamRef *> &streams, Lease &lease,
                    BlockCodes &c) const {
    const std::string file = reader->path().string();
    const Stages &st = *lease.stages;
    Scratch &sc = *lease.scratch;
    const BlockRecord &b = t.blocks[block];
    std::span<const uint8_t> coded;
    bool have_entropy = false;
    for (const StreamRef *s : streams) {
      if (s->role == "chunker")
        c.chunk_side = reader->stream_view(t, *s);
      else if (s->role == "quantizer")
        c.quant_side = reader->stream_view(t, *s);
      else if (s->role == "entropy") {
        coded = reader->stream_view(t, *s);
        have_entropy = true;
      } else
        fail(NWC_E_CORRUPT_STREAM,
             file + ": tensor " + t.name + ": unknown stream role '" + s->role + "'");
    }
    c.info = block_info(t.name, plan.rows, plan.cols, b.col_begin, b.col_end, plan.side);
    c.g = plan_block(st, c.info);
    if (c.g.symbols() != b.symbol_count)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + " block " + std::to_string(block) +
                                     ": manifest says " + std::to_string(b.symbol_count) +
                                     " symbols, the stages expect " +
                                     std::to_string(c.g.symbols()));
    c.levels = chunk_levels(st, c.info, c.g, plan.side.levels);
    if (!c.levels.empty()) c.info.chunk_levels = c.levels.data();
    if (!have_entropy)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + " block " + std::to_string(block) +
                                     " has no entropy stream");
    sc.symbols.resize(static_cast<size_t>(c.g.symbols()));
    View sym_v(sc.symbols.data(), NWC_DTYPE_I32, c.g.count, c.g.latent);
    nwc_cdf_model copy{};
    const nwc_cdf_model *model = stream_model(st, c.info, c.g.latent, copy);
    st.at(Slot::Entropy)
        .check(st.entropy->decode(st.at(Slot::Entropy).raw(), nwc_bytes{coded.data(), coded.size()},
                                  model, sym_v.get()),
               ("decode of tensor " + t.name).c_str());
  }

  // Decodes block `block` of t (whose streams are `streams`) into dst: rows x width floats with
  // row stride ld.
  void decode_into(const TensorRecord &t, const TensorPlan &plan, size_t block,
                   const std::vector<const StreamRef *> &streams, Lease &lease, float *dst,
                   int64_t ld) const {
    const Stages &st = *lease.stages;
    Scratch &sc = *lease.scratch;
    const int64_t rows = plan.rows;
    const BlockRecord &b = t.blocks[block];
    BlockCodes c;
    decode_codes(t, plan, block, streams, lease, c);
    const nwc_block_info &info = c.info;
    const Geometry &g = c.g;
    const std::span<const uint8_t> chunk_side = c.chunk_side, quant_side = c.quant_side;
    View sym_v(sc.symbols.data(), NWC_DTYPE_I32, g.count, g.latent);
    sc.latents.resize(sc.symbols.size());
    View lat_v(sc.latents.data(), NWC_DTYPE_F32, g.count, g.latent);
    st.at(Slot::Quantizer)
        .check(st.quantizer->dequantize(st.at(Slot::Quantizer).raw(), &info, sym_v.get(),
                                        nwc_bytes{quant_side.data(), quant_side.size()},
                                        lat_v.get()),
               ("dequantize of tensor " + t.name).c_str());
    nwc_tensor_view *chunks = lat_v.get();
    View chunks_v(nullptr, NWC_DTYPE_F32, g.count, g.length);
    if (st.transform) {
      sc.chunks.resize(static_cast<size_t>(g.count * g.length));
      chunks_v.view.data = sc.chunks.data();
      st.at(Slot::Transform)
          .check(st.transform->inverse(st.at(Slot::Transform).raw(), &info, lat_v.get(),
                                       chunks_v.get()),
                 ("inverse of tensor " + t.name).c_str());
      chunks = chunks_v.get();
    }
    // The chunker merges into dst when the block's rows are contiguous there, else into the
    // scratch block, copied into dst's columns afterwards.
    const int64_t w = b.col_end - b.col_begin;
    float *merged = dst;
    if (ld != w) {
      sc.block.resize(static_cast<size_t>(rows * w));
      merged = sc.block.data();
    }
    View out_v(merged, NWC_DTYPE_F32, rows, w);
    st.at(Slot::Chunker)
        .check(st.chunker->merge(st.at(Slot::Chunker).raw(), &info, chunks,
                                 nwc_bytes{chunk_side.data(), chunk_side.size()}, out_v.get()),
               ("merge of tensor " + t.name).c_str());
    for (int64_t i = 0; i < rows; ++i) {
      float *row = dst + i * ld;
      if (merged != dst) std::copy_n(merged + i * w, w, row);
      if (!plan.row_gain
               .empty()) { // a host row gain (fine-tuned scales where the chunker has none)
        const double gain = plan.row_gain[static_cast<size_t>(i)];
        for (int64_t j = 0; j < w; ++j)
          row[j] = static_cast<float>(static_cast<double>(row[j]) * gain);
      }
    }
  }
};

ContainerDecoder::ContainerDecoder(const ContainerReader &reader, const Registry &registry)
    : impl_(std::make_unique<Impl>()) {
  impl_->reader = &reader;
  impl_->registry = &registry;
  const std::string file = reader.path().string();
  for (size_t cfg_index = 0; cfg_index < reader.manifest().stage_configs.size(); ++cfg_index) {
    const StageConfig &cfg = reader.manifest().stage_configs[cfg_index];
    std::array<StageSpec, kSlotCount> specs;
    for (const auto &s : cfg.stages) {
      bool known = false;
      size_t slot = 0;
      for (size_t i = 0; i < kSlotNames.size(); ++i)
        if (s.slot == kSlotNames[i]) {
          known = true;
          slot = i;
        }
      if (!known) fail(NWC_E_CORRUPT_STREAM, file + ": unknown stage slot '" + s.slot + "'");
      if (static_cast<Slot>(slot) == Slot::Compensator) continue; // not needed to decode
      const Plugin *p = registry.find(s.plugin_id);
      if (!p)
        fail(NWC_E_VERSION, file + ": needs plugin " + s.plugin_id + " (version " +
                                s.plugin_version + ", stream version " +
                                std::to_string(s.stream_version) +
                                "), which is not installed; see `nwc plugins list`");
      if (p->kind != slot_kind(static_cast<Slot>(slot)))
        fail(NWC_E_CORRUPT_STREAM, file + ": plugin " + s.plugin_id + " recorded as " + s.slot +
                                       " is " + kind_in_words(p->kind));
      if (p->stream_version < s.stream_version)
        fail(NWC_E_VERSION, file + ": needs plugin " + s.plugin_id + " reading stream version " +
                                std::to_string(s.stream_version) + ", but the installed version " +
                                p->version + " reads up to " + std::to_string(p->stream_version));
      specs[slot].plugin = s.plugin_id;
      specs[slot].options = OptionValues::from_json(s.options, p->options.data(),
                                                    static_cast<uint32_t>(p->options.size()),
                                                    file + ": plugin " + s.plugin_id);
      // Path options recorded as resources point at files verified by hash on this machine.
      if (reader.manifest().extra.contains("resources") &&
          reader.manifest().extra["resources"].is_array())
        for (const auto &r : reader.manifest().extra["resources"]) {
          if (!r.is_object() || r.value("config", -1) != static_cast<int64_t>(cfg_index) ||
              r.value("slot", "") != s.slot)
            continue;
          const std::string key = r.value("option", "");
          const nwc_option_spec *spec = p->option(key);
          if (!spec || spec->type != NWC_OPT_PATH)
            fail(NWC_E_CORRUPT_STREAM, file + ": resource for unknown path option '" + key +
                                           "' of plugin " + s.plugin_id);
          specs[slot].options.set(
              OptionValue{key, NWC_OPT_PATH, resolve_resource(reader, r, impl_->extracted)});
        }
      std::string why = validate_options(*p, specs[slot].options);
      if (!why.empty()) fail(NWC_E_CORRUPT_STREAM, file + ": plugin " + s.plugin_id + ": " + why);
    }
    for (Slot req : {Slot::Chunker, Slot::Quantizer, Slot::Entropy})
      if (specs[static_cast<size_t>(req)].plugin.empty())
        fail(NWC_E_CORRUPT_STREAM,
             file + ": a stage configuration lacks its " + kSlotNames[static_cast<size_t>(req)]);
    impl_->configs.push_back(std::move(specs));
  }
}

ContainerDecoder::~ContainerDecoder() = default;

std::vector<float> ContainerDecoder::decode_block(const TensorRecord &t, size_t block) const {
  const ContainerReader &reader = *impl_->reader;
  const std::string file = reader.path().string();
  if (t.storage != "pipeline" || block >= t.blocks.size())
    fail(NWC_E_INVALID_ARG, file + ": tensor " + t.name + " has no block " + std::to_string(block));
  auto lease = impl_->lease(t.stage_config);
  const auto plan = impl_->plan_for(t);
  if (plan->rotated)
    fail(NWC_E_INVALID_ARG, file + ": tensor " + t.name + " is rotated by " +
                                lease.stages->at(Slot::Rotation).plugin().id +
                                ": its blocks hold columns of the rotated matrix; decode the whole "
                                "tensor");
  std::vector<const StreamRef *> streams;
  for (const auto &s : t.streams)
    if (s.block == static_cast<int32_t>(block)) streams.push_back(&s);
  const BlockRecord &b = t.blocks[block];
  const int64_t w = b.col_end - b.col_begin;
  std::vector<float> out(static_cast<size_t>(plan->rows * w));
  impl_->decode_into(t, *plan, block, streams, lease, out.data(), w);
  return out;
}

std::optional<NativeBlocks> ContainerDecoder::native_tensor(const TensorRecord &t) const {
  if (t.storage != "pipeline" || t.blocks.empty()) return std::nullopt;
  const std::string where = impl_->reader->path().string() + ": tensor " + t.name;
  auto lease = impl_->lease(t.stage_config);
  const Stages &st = *lease.stages;
  const auto plan = impl_->plan_for(t);
  if (st.transform || plan->rotated || !plan->row_gain.empty() || !plan->side.row_scales.empty() ||
      !interface_has(st.quantizer, offsetof(nwc_quantizer_interface, export_native)) ||
      !st.quantizer->export_native)
    return std::nullopt;
  // Blocks in column order; each adds its part of every row.
  std::vector<size_t> order(t.blocks.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](size_t a, size_t b) { return t.blocks[a].col_begin < t.blocks[b].col_begin; });
  NativeBlocks out;
  std::vector<std::vector<uint8_t>> parts(t.blocks.size());
  for (size_t k : order) {
    std::vector<const StreamRef *> streams;
    for (const auto &s : t.streams)
      if (s.block == static_cast<int32_t>(k)) streams.push_back(&s);
    Impl::BlockCodes c;
    impl_->decode_codes(t, *plan, k, streams, lease, c);
    View sym_v(lease.scratch->symbols.data(), NWC_DTYPE_I32, c.g.count, c.g.latent);
    nwc_native_layout layout{};
    layout.struct_size = sizeof(layout);
    VectorSink sink;
    const nwc_status s = st.quantizer->export_native(
        st.at(Slot::Quantizer).raw(), &c.info, sym_v.get(),
        nwc_bytes{c.quant_side.data(), c.quant_side.size()}, &layout, &sink.sink);
    if (s == NWC_E_UNSUPPORTED_SHAPE) return std::nullopt;
    st.at(Slot::Quantizer).check(s, ("export_native of tensor " + t.name).c_str());
    const std::string format(layout.format, strnlen(layout.format, sizeof(layout.format)));
    const std::string type(layout.type, strnlen(layout.type, sizeof(layout.type)));
    const int64_t width = t.blocks[k].col_end - t.blocks[k].col_begin;
    if (layout.values_per_block == 0 || layout.bytes_per_block == 0 ||
        t.blocks[k].col_begin % static_cast<int64_t>(layout.values_per_block) != 0 ||
        width % static_cast<int64_t>(layout.values_per_block) != 0 ||
        sink.bytes.size() != static_cast<size_t>(plan->rows) *
                                 (static_cast<uint64_t>(width) / layout.values_per_block) *
                                 layout.bytes_per_block)
      fail(NWC_E_CORRUPT_STREAM, where + ": quantizer " + st.at(Slot::Quantizer).plugin().id +
                                     " exported " + std::to_string(sink.bytes.size()) +
                                     " bytes of " + format + " " + type +
                                     ", not whole blocks of its " + std::to_string(plan->rows) +
                                     " x " + std::to_string(width) + " values");
    if (out.format.empty()) {
      out.format = format;
      out.type = type;
      out.values_per_block = layout.values_per_block;
      out.bytes_per_block = layout.bytes_per_block;
    } else if (format != out.format || type != out.type) {
      return std::nullopt; // column blocks of different types: no single native tensor
    }
    parts[k] = std::move(sink.bytes);
  }
  // Rows of the whole tensor: each block's row segments, in column order.
  const auto rows = static_cast<size_t>(plan->rows);
  size_t row_bytes = 0;
  for (const auto &p : parts) row_bytes += p.size() / rows;
  out.bytes.resize(rows * row_bytes);
  size_t at = 0;
  for (size_t k : order) {
    const size_t seg = parts[k].size() / rows;
    for (size_t r = 0; r < rows; ++r)
      std::copy_n(parts[k].data() + r * seg, seg, out.bytes.data() + r * row_bytes + at);
    at += seg;
  }
  return out;
}

std::vector<float> ContainerDecoder::decode_tensor(const TensorRecord &t, unsigned threads) const {
  const ContainerReader &reader = *impl_->reader;
  const std::string file = reader.path().string();
  const uint64_t numel = t.numel();
  if (t.storage == "raw" || t.storage == "zstd") {
    if (t.streams.size() != 1)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + " should have one stream");
    std::vector<uint8_t> bytes = reader.read_stream(t, t.streams[0]);
    const uint64_t expect = numel * dtype_size(t.dtype);
    if (t.storage == "zstd") {
      unsigned long long size = ZSTD_getFrameContentSize(bytes.data(), bytes.size());
      if (size != expect)
        fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": zstd frame holds " +
                                       std::to_string(size) + " bytes, expected " +
                                       std::to_string(expect));
      // A zstd block of at least 4 bytes (header + RLE byte) yields at most 128 KiB: refuse a
      // declared size no stream of this length can hold before allocating it.
      if (expect / 32768 > bytes.size())
        fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": zstd stream of " +
                                       std::to_string(bytes.size()) + " bytes cannot hold the " +
                                       std::to_string(expect) + " bytes of its shape");
      std::vector<uint8_t> raw(static_cast<size_t>(expect));
      size_t got = ZSTD_decompress(raw.data(), raw.size(), bytes.data(), bytes.size());
      if (ZSTD_isError(got) || got != expect)
        fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": zstd stream is corrupt");
      bytes.swap(raw);
    }
    if (bytes.size() != expect)
      fail(NWC_E_CORRUPT_STREAM, file + ": tensor " + t.name + ": raw stream has " +
                                     std::to_string(bytes.size()) + " bytes, expected " +
                                     std::to_string(expect));
    std::vector<float> out = tensor_buffer(static_cast<size_t>(numel));
    to_float(t.dtype, bytes.data(), out.size(), out.data());
    return out;
  }
  // Pipeline tensors: the tensor-level streams are read once, each block's streams found once,
  // and the blocks decoded straight into their columns of the output by up to `threads` threads
  // (the calling thread is one of them), each with one leased stage set and scratch for all the
  // blocks it takes. Blocks are taken in order; after a failure no new block starts, and the error
  // reported is the one of the first failing block, whatever the thread count.
  const auto plan = impl_->plan_for(t);
  const int64_t cols = plan->cols;
  std::vector<float> out = tensor_buffer(static_cast<size_t>(numel));
  const size_t nb = t.blocks.size();
  std::vector<std::vector<const StreamRef *>> streams(nb);
  for (const auto &s : t.streams)
    if (s.block >= 0 && static_cast<size_t>(s.block) < nb)
      streams[static_cast<size_t>(s.block)].push_back(&s);
  std::atomic<size_t> next{0};
  std::mutex mu;
  size_t failed = nb;
  std::exception_ptr error;
  auto fail_at = [&](size_t b) {
    std::lock_guard<std::mutex> lock(mu);
    if (b < failed) {
      failed = b;
      error = std::current_exception();
    }
    next = nb;
  };
  auto work = [&] {
    size_t b = next.fetch_add(1);
    if (b >= nb) return;
    try {
      auto lease = impl_->lease(t.stage_config);
      for (; b < nb; b = next.fetch_add(1)) {
        try {
          impl_->decode_into(t, *plan, b, streams[b], lease, out.data() + t.blocks[b].col_begin,
                             cols);
        } catch (...) {
          fail_at(b);
        }
      }
    } catch (...) { // no stage set for this thread: block b fails
      fail_at(b);
    }
  };
  const unsigned nthreads = std::min<unsigned>(resolve_threads(threads), static_cast<unsigned>(nb));
  std::vector<std::thread> pool;
  for (unsigned i = 1; i < nthreads; ++i) pool.emplace_back(work);
  work();
  for (auto &th : pool) th.join();
  if (error) std::rethrow_exception(error);
  if (plan->rotated) { // the rotation is undone on the whole merged matrix, on this thread
    auto lease = impl_->lease(t.stage_config);
    rotation_inverse(*lease.stages, file + ": tensor " + t.name, plan->rotation_side.data(),
                     plan->rotation_side.size(), out.data(), plan->rows, cols);
  }
  return out;
}

} // namespace nwc::host
