// nwc.chunk.group — each chunk is `group` consecutive input columns of one output row (the layout
// of group-wise RTN/GPTQ scales). Chunks are ordered row-major by (row, group). No side info.
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <limits>
#include <string>

namespace {

const char *const kTailChoices[] = {"fit", "pad", "error"};

class GroupChunker final : public nwc::Chunker {
public:
  static constexpr const char *id = "nwc.chunk.group";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "group";
  static constexpr const char *description =
      "Splits each row of a column block into groups of `group` consecutive input columns; each "
      "group is one chunk, ordered by (row, group). This is the layout of group-wise scales "
      "(RTN, GPTQ): a quantizer that works per chunk then keeps one scale per group. A block "
      "narrower than the group is one group of its width (tail = \"fit\"); otherwise a short "
      "last group is padded by repeating its last value (min/max/absmax unchanged) and the "
      "padding is dropped on merge. Writes no side information.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(nwc::int_option("group", 128, 0, 1 << 24,
                              "Input columns per chunk; 0 makes the whole row of the block one "
                              "chunk.",
                              NWC_OPTF_AFFECTS_BITSTREAM, "columns"),
              nwc::enum_option("tail", "fit", kTailChoices, 3,
                               "What to do when the block width is not a multiple of `group`: "
                               "\"fit\" uses the block width as the group when the block is "
                               "narrower than `group` and pads otherwise, \"pad\" always repeats "
                               "the last value of each row's short last group, \"error\" refuses "
                               "the block.",
                               NWC_OPTF_AFFECTS_BITSTREAM));

  explicit GroupChunker(const nwc::Options &opts)
      : group_(opts.get_int("group")), pad_(opts.get_string("tail") != "error"),
        fit_(opts.get_string("tail") == "fit") {}

  nwc_chunk_geometry plan(const nwc::BlockInfo &b) override {
    const int64_t width = b.width();
    if (b.rows <= 0 || width <= 0)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + std::string(b.tensor_name) + "': block of " + std::to_string(b.rows) +
                    " rows x " + std::to_string(width) + " columns is empty; nothing to chunk");
    const int64_t g = length(width);
    if (width % g != 0 && !pad_)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE, "tensor '" + std::string(b.tensor_name) +
                                             "': block width " + std::to_string(width) +
                                             " is not a multiple of group " + std::to_string(g) +
                                             " (set tail = \"pad\")");
    const int64_t groups = (width + g - 1) / g;
    if (groups > std::numeric_limits<int64_t>::max() / b.rows ||
        groups * b.rows > std::numeric_limits<int64_t>::max() / g)
      nwc::fail(NWC_E_UNSUPPORTED_SHAPE,
                "tensor '" + std::string(b.tensor_name) + "': chunk matrix is too large");
    return {b.rows * groups, g};
  }

  void split(const nwc::BlockInfo &b, nwc::ConstTensor<float> values, nwc::Tensor<float> chunks,
             nwc::Sink &) override {
    const nwc_chunk_geometry geo = plan(b);
    require_views(b, geo, values.rows, values.cols, chunks.rows, chunks.cols);
    const int64_t width = b.width(), g = geo.length;
    const int64_t groups = geo.count / b.rows;
    for (int64_t r = 0; r < b.rows; ++r) {
      const float *src = values.row(r);
      for (int64_t k = 0; k < groups; ++k) {
        float *dst = chunks.row(r * groups + k);
        const int64_t c0 = k * g, n = std::min(g, width - c0);
        std::copy_n(src + c0, n, dst);
        // Repeating the last real value keeps the group's min, max and absmax unchanged.
        std::fill(dst + n, dst + g, src[c0 + n - 1]);
      }
    }
  }

  void merge(const nwc::BlockInfo &b, nwc::ConstTensor<float> chunks, nwc::Bytes side,
             nwc::Tensor<float> values) override {
    if (side.size != 0)
      nwc::fail(NWC_E_CORRUPT_STREAM, "tensor '" + std::string(b.tensor_name) +
                                          "': group chunker has no side info, got " +
                                          std::to_string(side.size) + " bytes");
    const nwc_chunk_geometry geo = plan(b);
    require_views(b, geo, values.rows, values.cols, chunks.rows, chunks.cols);
    const int64_t width = b.width(), g = geo.length;
    const int64_t groups = geo.count / b.rows;
    for (int64_t r = 0; r < b.rows; ++r) {
      float *dst = values.row(r);
      for (int64_t k = 0; k < groups; ++k) {
        const int64_t c0 = k * g, n = std::min(g, width - c0);
        std::copy_n(chunks.row(r * groups + k), n, dst + c0);
      }
    }
  }

private:
  // Chunk length of a block: with "fit", a block narrower than the group is one group of its
  // width rather than a padded one (64-wide matrices with group 128 would otherwise code twice
  // as many symbols as weights).
  int64_t length(int64_t width) const {
    if (group_ == 0) return width;
    return fit_ ? std::min(group_, width) : group_;
  }

  int64_t group_;
  bool pad_;
  bool fit_;
};

} // namespace

NWC_MODULE(GroupChunker)
