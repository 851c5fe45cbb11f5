// nwc.comp.ldlq — block-LDL error feedback (LDLQ, QuIP# ordering) over any block codec.
//
// H (the layer input's second moment from calibration) is factored as H = C Cᵀ (C lower
// triangular). With D_k the k-th diagonal block of C and L = C · blockdiag(D_k)⁻¹ (unit
// block-lower-triangular), H = L · blockdiag(D_k D_kᵀ) · Lᵀ and the Hessian-weighted error splits
// into per-block terms:
//
//   tr(ΔW H ΔWᵀ) = Σ_k ‖ (ΔW[:, k] + ΔW[:, >k] · L[>k, k]) · D_k ‖²_F .
//
// Blocks are coded from the highest column index down; once the columns after block k are coded,
// block k's term is ‖(w_k − Ŵ_k) · D_k‖² with w_k = W[:, k] + (W − Ŵ)[:, >k] · L[>k, k], so block
// k is coded from w_k. Each block is committed as soon as it is coded and is decoded on its own:
// decoding needs nothing from this plugin.
//
// With act_order the same algebra runs on H with its column blocks permuted so that the block
// with the largest Hessian diagonal is coded first and the least important last (GPTQ's
// act-order, at the granularity of the committed blocks: the error of the columns that matter most
// is fed back to the most columns, and the one block whose error nobody compensates is the one
// that matters least). Only the coding order changes; each block keeps its columns, so the
// stored layout and the decoder are unchanged.
//
// The Cholesky factor (blocked), the blocks of L and the feedback are matrix products
// (nwc/linalg/hessian.hpp, nwc/linalg/gemm.hpp) that give the same bits on any machine and
// thread count.
#include "nwc/cpp/plugin.hpp"
#include "nwc/linalg/hessian.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

namespace hc = nwc::compensate;

class Ldlq final : public nwc::Compensator {
public:
  static constexpr const char *id = "nwc.comp.ldlq";
  static constexpr const char *version = "1.2.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "ldlq";
  static constexpr const char *description =
      "LDLQ (QuIP#): block-LDL error feedback weighted by the layer input's Hessian. Factors "
      "H = L·blockdiag(D_k D_kᵀ)·Lᵀ with L unit block-lower-triangular (from the Cholesky factor "
      "of H), codes column blocks of `block` columns from the last to the first (with act_order, "
      "by decreasing Hessian diagonal), and codes each "
      "block from W[:, s:e] + (W − Ŵ)[:, e:]·L[e:, s:e], the feedback of the error of the blocks "
      "already coded. Blocks are [0, b), [b, 2b), …, the last one shorter when b does not divide "
      "the width. Needs calibration Hessians (nwc calibrate, then compress --calibration). Blocks "
      "decode independently; decoding does not need this plugin.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(
      nwc::int_option("block", 128, 1, 1 << 20,
                      "Columns per block: the unit of error feedback and of the committed, "
                      "independently decodable blocks. A block as wide as the tensor or wider "
                      "means one block and no feedback; best a multiple of the chunker's group.",
                      0, "columns"),
      nwc::float_option("percdamp", 0.01, 0.0, 10.0,
                        "Dampening added to the Hessian diagonal, as a fraction of its mean; "
                        "multiplied by 10 (with a warning) while the Cholesky factorization "
                        "fails."),
      nwc::bool_option("act_order", false,
                       "Code the column blocks in order of decreasing Hessian diagonal (summed "
                       "over the block) instead of last to first: GPTQ's act-order at block "
                       "granularity (with block = 1, column by column). Changes only the coding "
                       "order; nothing is stored."));

  explicit Ldlq(const nwc::Options &o)
      : block_(o.get_int("block")), percdamp_(o.get_float("percdamp")),
        act_order_(o.get_bool("act_order")) {}

  uint32_t requirements() const override { return NWC_COMPENSATOR_NEEDS_HESSIAN; }

  void compensate(std::string_view tensor, nwc::ConstTensor<float> weight,
                  const nwc_tensor_view *hessian, nwc_block_codec &codec) override {
    const std::string tname(tensor);
    const int64_t rows = weight.rows, n = weight.cols;
    const nwc::ConstTensor<float> hv = hc::require_hessian(hessian, tname, n, "LDLQ");
    if (n == 0 || rows == 0) return;
    const auto sz = [](int64_t v) { return static_cast<size_t>(v); };

    // Dead inputs (never active during calibration): their weights cannot affect the output, so
    // they are coded as zeros, and a unit diagonal keeps H positive definite.
    std::vector<char> dead;
    std::vector<double> diag;
    const int64_t ndead = hc::find_dead_columns(hv.data, n, dead, diag);
    if (ndead > 0)
      host.log(NWC_LOG_DEBUG,
               "tensor " + tname + ": " + std::to_string(ndead) + " dead input columns zeroed");
    // Column blocks [begin, end) of the original layout in processing order: block i of the list
    // occupies the processed columns [pos[i], pos[i + 1]), and the list is coded from its end.
    // The identity unless act_order.
    const int64_t b = std::min(block_, n);
    struct Block {
      int64_t begin, end; // original columns
      double importance;  // Σ diag(H) over the block
    };
    std::vector<Block> blocks;
    for (int64_t s = 0; s < n; s += b) {
      Block blk{s, std::min(n, s + b), 0.0};
      for (int64_t j = blk.begin; j < blk.end; ++j) blk.importance += diag[sz(j)];
      blocks.push_back(blk);
    }
    // Coded from the end of the list, so the most important block goes last in the list.
    if (act_order_)
      std::stable_sort(blocks.begin(), blocks.end(),
                       [](const Block &x, const Block &y) { return x.importance < y.importance; });
    std::vector<int64_t> perm(sz(n)), pos(blocks.size() + 1, 0); // perm: processed → original
    for (size_t i = 0; i < blocks.size(); ++i) {
      pos[i + 1] = pos[i] + (blocks[i].end - blocks[i].begin);
      for (int64_t j = 0; j < blocks[i].end - blocks[i].begin; ++j)
        perm[sz(pos[i] + j)] = blocks[i].begin + j;
    }

    // Working copy of W in double (rows × n), columns in processing order.
    std::vector<double> w(sz(rows * n));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t p = 0; p < n; ++p) {
        const int64_t j = perm[sz(p)];
        w[sz(r * n + p)] = dead[sz(j)] ? 0.0 : static_cast<double>(weight.data[r * n + j]);
      }

    // Dampened Cholesky factor C (P(H + damp·I)Pᵀ = C Cᵀ), from H's lower triangle.
    double mean_diag = 0.0;
    for (int64_t i = 0; i < n; ++i) mean_diag += diag[sz(i)];
    mean_diag /= static_cast<double>(n);
    double damp = 0.0;
    std::vector<double> c;
    hc::dampened_cholesky(c, n, mean_diag, percdamp_, host, tname, &damp,
                          [&](std::vector<double> &a) {
                            for (int64_t i = 0; i < n; ++i) {
                              const int64_t pi = perm[sz(i)];
                              double *ar = a.data() + i * n;
                              for (int64_t j = 0; j < i; ++j) {
                                const int64_t pj = perm[sz(j)];
                                ar[j] = pi > pj ? hv.data[pi * n + pj] : hv.data[pj * n + pi];
                              }
                              ar[i] = diag[sz(pi)];
                            }
                          });

    // L[e:, s:e] = C[e:, s:e] · D_k⁻¹ for every block [s, e) (processed columns), written over C
    // (the diagonal blocks D_k stay as they are): D_k is inverted (blocked triangular inverse) and
    // the panel below it multiplied by the inverse, a slice of rows at a time.
    std::vector<double> dinv, tmp;
    for (size_t k = 0; k + 1 < blocks.size(); ++k) { // nothing below the last block
      const int64_t s = pos[k], e = pos[k + 1], width = e - s;
      dinv.resize(sz(width * width));
      for (int64_t i = 0; i < width; ++i)
        std::copy(c.data() + (s + i) * n + s, c.data() + (s + i) * n + e, dinv.data() + i * width);
      hc::lower_inverse(dinv.data(), width, width);
      const int64_t slice = std::max<int64_t>(1, (int64_t{1} << 20) / width);
      for (int64_t t0 = e; t0 < n; t0 += slice) {
        const int64_t t1 = std::min(n, t0 + slice);
        tmp.resize(sz((t1 - t0) * width));
        for (int64_t t = t0; t < t1; ++t)
          std::copy(c.data() + t * n + s, c.data() + t * n + e, tmp.data() + (t - t0) * width);
        hc::gemm(false, false, t1 - t0, width, width, 1.0, tmp.data(), width, dinv.data(), width,
                 0.0, c.data() + t0 * n + s, n);
      }
    }

    // Blocks from the end of the list. err holds W − Ŵ of the columns already coded (zero
    // elsewhere), in processing order.
    std::vector<double> err(sz(rows * n), 0.0);
    std::vector<double> acc, y;
    std::vector<float> values, recon;
    double loss = 0.0; // Σ_k ‖(w_k − Ŵ_k) D_k‖²: the dampened proxy error tr(ΔW H ΔWᵀ)
    for (size_t k = blocks.size(); k-- > 0;) {
      const int64_t s = pos[k], e = pos[k + 1], width = e - s;
      // w_k = W[:, s:e] + (W − Ŵ)[:, e:] · L[e:, s:e]
      acc.resize(sz(rows * width));
      for (int64_t r = 0; r < rows; ++r)
        std::copy(w.data() + r * n + s, w.data() + r * n + e, acc.data() + r * width);
      hc::gemm(false, false, rows, width, n - e, 1.0, err.data() + e, n, c.data() + e * n + s, n,
               1.0, acc.data(), width);
      values.resize(acc.size());
      recon.resize(acc.size());
      for (size_t i = 0; i < acc.size(); ++i) values[i] = static_cast<float>(acc[i]);
      nwc::encode_block(codec, blocks[k].begin, blocks[k].end, {values.data(), rows, width},
                        {recon.data(), rows, width});
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = 0; j < width; ++j) {
          const double q = recon[sz(r * width + j)];
          err[sz(r * n + s + j)] = w[sz(r * n + s + j)] - q;
          acc[sz(r * width + j)] -= q; // w_k − Ŵ_k
        }
      // ‖(w_k − Ŵ_k) · D_k‖² (D_k lower triangular, zeros above its diagonal)
      y.resize(acc.size());
      hc::gemm(false, false, rows, width, width, 1.0, acc.data(), width, c.data() + s * n + s, n,
               0.0, y.data(), width);
      for (const double v : y) loss += v * v;
    }
    host.log(NWC_LOG_DEBUG, "tensor " + tname + ": LDLQ proxy error tr(ΔW H ΔWᵀ) " +
                                std::to_string(loss) + " (dampening " + std::to_string(damp) + ")");
  }

private:
  int64_t block_;
  double percdamp_;
  bool act_order_;
};

} // namespace

NWC_MODULE(Ldlq)
