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
#include "../../common/hessian.hpp"
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

class Ldlq final : public nwc::Compensator {
public:
  static constexpr const char *id = "nwc.comp.ldlq";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "ldlq";
  static constexpr const char *description =
      "LDLQ (QuIP#): block-LDL error feedback weighted by the layer input's Hessian. Factors "
      "H = L·blockdiag(D_k D_kᵀ)·Lᵀ with L unit block-lower-triangular (from the Cholesky factor "
      "of H), codes column blocks of `block` columns from the last to the first, and codes each "
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
                        "fails."));

  explicit Ldlq(const nwc::Options &o)
      : block_(o.get_int("block")), percdamp_(o.get_float("percdamp")) {}

  uint32_t requirements() const override { return NWC_COMPENSATOR_NEEDS_HESSIAN; }

  void compensate(std::string_view tensor, nwc::ConstTensor<float> weight,
                  const nwc_tensor_view *hessian, nwc_block_codec &codec) override {
    const std::string tname(tensor);
    const int64_t rows = weight.rows, n = weight.cols;
    if (!hessian) nwc::fail(NWC_E_INVALID_ARG, "tensor " + tname + ": LDLQ needs its Hessian");
    nwc::ConstTensor<float> hv(hessian);
    if (hv.rows != n || hv.cols != n)
      nwc::fail(NWC_E_INVALID_ARG, "tensor " + tname + ": Hessian is [" + std::to_string(hv.rows) +
                                       ", " + std::to_string(hv.cols) + "], expected [" +
                                       std::to_string(n) + ", " + std::to_string(n) + "]");
    if (n == 0 || rows == 0) return;
    const auto sz = [](int64_t v) { return static_cast<size_t>(v); };

    // Working copies in double: W (rows × n) and H (n × n).
    std::vector<double> w(sz(rows * n)), h(sz(n * n));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) w[sz(r * n + c)] = weight.row(r)[c];
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) h[sz(i * n + j)] = hv.row(i)[j];
    // Dead inputs (never active during calibration): their weights cannot affect the output, so
    // they are coded as zeros, and a unit diagonal keeps H positive definite.
    const int64_t dead = nwc::compensate::zero_dead_columns(h, w, rows, n);
    if (dead > 0)
      host.log(NWC_LOG_DEBUG,
               "tensor " + tname + ": " + std::to_string(dead) + " dead input columns zeroed");

    // Dampened Cholesky factor C (H + damp·I = C Cᵀ).
    double damp = 0.0;
    std::vector<double> c = nwc::compensate::dampened_cholesky(h, n, percdamp_, host, tname, &damp);
    h = {}; // no longer needed

    // L[e:, s:e] = C[e:, s:e] · D_k⁻¹ for every block [s, e), written over C in place (the
    // diagonal blocks D_k stay as they are). X · D = B with D lower triangular is solved column
    // by column from the last: X[:, j] = (B[:, j] − Σ_{i>j} X[:, i] D[i, j]) / D[j, j].
    const int64_t b = std::min(block_, n);
    for (int64_t s = 0; s < n; s += b) {
      const int64_t e = std::min(n, s + b);
      for (int64_t t = e; t < n; ++t) {
        double *x = c.data() + t * n;
        for (int64_t j = e - 1; j >= s; --j) {
          double v = x[j];
          for (int64_t i = j + 1; i < e; ++i) v -= x[i] * c[sz(i * n + j)];
          x[j] = v / c[sz(j * n + j)];
        }
      }
    }

    // Blocks from the highest column index down. err holds W − Ŵ of the columns already coded.
    std::vector<double> err(sz(rows * n), 0.0);
    std::vector<double> acc;
    std::vector<float> values, recon;
    double loss = 0.0; // Σ_k ‖(w_k − Ŵ_k) D_k‖²: the dampened proxy error tr(ΔW H ΔWᵀ)
    const int64_t last_start = ((n - 1) / b) * b;
    for (int64_t s = last_start; s >= 0; s -= b) {
      const int64_t e = std::min(n, s + b), width = e - s;
      acc.assign(sz(rows * width), 0.0);
      for (int64_t r = 0; r < rows; ++r) {
        double *a = acc.data() + r * width;
        const double *wr = w.data() + r * n;
        for (int64_t j = 0; j < width; ++j) a[j] = wr[s + j];
        const double *er = err.data() + r * n;
        for (int64_t t = e; t < n; ++t) {
          const double et = er[t];
          if (et == 0.0) continue;
          const double *lt = c.data() + t * n + s;
          for (int64_t j = 0; j < width; ++j) a[j] += et * lt[j];
        }
      }
      values.resize(acc.size());
      recon.resize(acc.size());
      for (size_t i = 0; i < acc.size(); ++i) values[i] = static_cast<float>(acc[i]);
      nwc::encode_block(codec, s, e, {values.data(), rows, width}, {recon.data(), rows, width});
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < width; ++j) {
          const double q = recon[sz(r * width + j)];
          err[sz(r * n + s + j)] = w[sz(r * n + s + j)] - q;
          acc[sz(r * width + j)] -= q; // w_k − Ŵ_k
        }
        // ‖(w_k − Ŵ_k)[r, :] · D_k‖²
        const double *d = acc.data() + r * width;
        for (int64_t j = 0; j < width; ++j) {
          double v = 0.0;
          for (int64_t i = j; i < width; ++i) v += d[i] * c[sz((s + i) * n + s + j)];
          loss += v * v;
        }
      }
    }
    host.log(NWC_LOG_DEBUG, "tensor " + tname + ": LDLQ proxy error tr(ΔW H ΔWᵀ) " +
                                std::to_string(loss) + " (dampening " + std::to_string(damp) + ")");
  }

private:
  int64_t block_;
  double percdamp_;
};

} // namespace

NWC_MODULE(Ldlq)
