// nwc.comp.gptq — GPTQ/OPTQ error compensation (Frantar et al., ICLR 2023) over any block codec.
//
// Columns are coded one at a time in GPTQ order; the error of each is fed to the columns not yet
// coded through the upper Cholesky factor U of H^-1 (H = the layer input's second moment from
// calibration), within a lazy batch of `block` columns and then to the rest with one matrix
// product per batch. Group grids are fitted on the columns as they are when the group starts
// (or on the original columns with static groups) and stay fixed for the group: the host's block
// codec fits on a reference (encode_ex fit_values) and tries columns without committing them
// (NWC_BLOCK_DRY_RUN). Committed blocks are contiguous in the original column order, so decoding
// needs nothing from this plugin.
#include "../../common/hessian.hpp"
#include "nwc/cpp/plugin.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

namespace {

using Matrix = std::vector<double>; // row-major square or [rows, cols]

// H^-1 from its lower Cholesky factor L (H = L Lᵀ): invert L, then L^-ᵀ L^-1.
Matrix inverse_from_cholesky(const Matrix &l, int64_t n) {
  Matrix inv_l(static_cast<size_t>(n * n), 0.0);
  for (int64_t j = 0; j < n; ++j) {
    inv_l[j * n + j] = 1.0 / l[j * n + j];
    for (int64_t i = j + 1; i < n; ++i) {
      double v = 0.0;
      for (int64_t k = j; k < i; ++k) v -= l[i * n + k] * inv_l[k * n + j];
      inv_l[i * n + j] = v / l[i * n + i];
    }
  }
  Matrix out(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double v = 0.0;
      for (int64_t k = i; k < n; ++k) v += inv_l[k * n + i] * inv_l[k * n + j];
      out[i * n + j] = out[j * n + i] = v;
    }
  return out;
}

class Gptq final : public nwc::Compensator {
public:
  static constexpr const char *id = "nwc.comp.gptq";
  static constexpr const char *version = "1.0.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "gptq";
  static constexpr const char *description =
      "GPTQ/OPTQ: codes columns one at a time and feeds each column's error, weighted by the "
      "inverse Hessian of the layer input, to the columns not yet coded (lazy batches of `block` "
      "columns). Needs calibration Hessians (nwc calibrate, then compress --calibration). Group "
      "grids are fitted when a group starts (or on the original weights with static_groups); set "
      "`group` equal to the chunker's group. act_order codes columns by decreasing Hessian "
      "diagonal and implies static groups, so the stored layout stays in the original order.";
  static constexpr uint32_t flags = NWC_PLUGIN_DETERMINISTIC;
  NWC_OPTIONS(
      nwc::int_option("block", 128, 1, 1 << 20,
                      "Lazy batch width and width of the committed column blocks; a multiple of "
                      "group.",
                      0, "columns"),
      nwc::int_option("group", 128, 0, 1 << 20,
                      "Columns per quantization group, as in the chunker; 0 = one grid per row "
                      "fitted on the whole original row.",
                      0, "columns"),
      nwc::float_option("percdamp", 0.01, 0.0, 10.0,
                        "Dampening added to the Hessian diagonal, as a fraction of its mean; "
                        "multiplied by 10 (with a warning) while the Cholesky factorization "
                        "fails."),
      nwc::bool_option("act_order", false,
                       "Code columns in order of decreasing Hessian diagonal (implies "
                       "static_groups)."),
      nwc::bool_option("static_groups", false,
                       "Fit every group's grid on the original weights before any update."));

  explicit Gptq(const nwc::Options &o)
      : block_(o.get_int("block")), group_(o.get_int("group")), percdamp_(o.get_float("percdamp")),
        act_order_(o.get_bool("act_order")), static_groups_(o.get_bool("static_groups")) {
    if (group_ > 0 && block_ % group_ != 0)
      nwc::fail(NWC_E_INVALID_OPTION, "block (" + std::to_string(block_) +
                                          ") must be a multiple of group (" +
                                          std::to_string(group_) + ")");
  }

  uint32_t requirements() const override { return NWC_COMPENSATOR_NEEDS_HESSIAN; }

  void compensate(std::string_view tensor, nwc::ConstTensor<float> weight,
                  const nwc_tensor_view *hessian, nwc_block_codec &codec) override {
    const std::string tname(tensor);
    const int64_t rows = weight.rows, n = weight.cols;
    if (!hessian) nwc::fail(NWC_E_INVALID_ARG, "tensor " + tname + ": GPTQ needs its Hessian");
    nwc::ConstTensor<float> hv(hessian);
    if (hv.rows != n || hv.cols != n)
      nwc::fail(NWC_E_INVALID_ARG, "tensor " + tname + ": Hessian is [" + std::to_string(hv.rows) +
                                       ", " + std::to_string(hv.cols) + "], expected [" +
                                       std::to_string(n) + ", " + std::to_string(n) + "]");
    const int64_t g = group_ > 0 ? std::min(group_, n) : n;
    const bool static_groups = static_groups_ || act_order_ || group_ == 0;

    // Working copy W (rows x n, original column order) and H in double.
    Matrix w(static_cast<size_t>(rows * n)), h(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < rows * n; ++i) w[i] = weight.data[i];
    for (int64_t i = 0; i < n * n; ++i) h[i] = hv.data[i];
    nwc::compensate::zero_dead_columns(h, w, rows, n);
    std::vector<int64_t> perm(static_cast<size_t>(n));
    std::iota(perm.begin(), perm.end(), 0);
    if (act_order_)
      std::stable_sort(perm.begin(), perm.end(),
                       [&](int64_t a, int64_t b) { return h[a * n + a] > h[b * n + b]; });
    // H in processing order, dampened, then U = upper Cholesky factor of H^-1.
    Matrix hp(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) hp[i * n + j] = h[perm[i] * n + perm[j]];
    const Matrix l = nwc::compensate::dampened_cholesky(hp, n, percdamp_, host, tname, nullptr);
    Matrix u = inverse_from_cholesky(l, n); // H^-1 (symmetric)
    if (!nwc::compensate::lower_cholesky(u, n))
      nwc::fail(NWC_E_INTERNAL, "tensor " + tname + ": inverse Hessian is not positive definite");
    // u now holds L' with H^-1 = L' L'ᵀ; GPTQ's U is L'ᵀ (upper): U[i][j] = u[j][i].
    auto U = [&](int64_t i, int64_t j) { return u[j * n + i]; };

    // Reference (fit) values per column: its group's columns when the group's grid is fitted.
    Matrix ref = w; // static groups (and group 0): the original weights
    std::vector<float> values(static_cast<size_t>(rows * g)), fit(values.size()),
        recon(values.size());
    std::vector<double> q(static_cast<size_t>(rows * n)); // coded value of every column
    std::vector<char> fitted(static_cast<size_t>((n + g - 1) / g), static_groups ? 1 : 0);
    auto group_of = [&](int64_t j) { return j / g; };
    double loss = 0.0;

    for (int64_t s = 0; s < n; s += block_) {
      const int64_t e = std::min(n, s + block_);
      Matrix err(static_cast<size_t>(rows * (e - s)));
      for (int64_t k = s; k < e; ++k) {
        const int64_t j = perm[k], grp = group_of(j), g0 = grp * g, g1 = std::min(n, g0 + g);
        if (!fitted[grp]) { // dynamic groups: the grid is fitted when the group starts
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = g0; c < g1; ++c) ref[r * n + c] = w[r * n + c];
          fitted[grp] = 1;
        }
        // Try the group with its fixed grid; only column j's reconstruction is used.
        const int64_t width = g1 - g0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < width; ++c) {
            values[r * width + c] = static_cast<float>(w[r * n + g0 + c]);
            fit[r * width + c] = static_cast<float>(ref[r * n + g0 + c]);
          }
        nwc::encode_block_ex(codec, g0, g1, {values.data(), rows, width}, {fit.data(), rows, width},
                             NWC_BLOCK_DRY_RUN, {recon.data(), rows, width});
        const double d = U(k, k);
        for (int64_t r = 0; r < rows; ++r) {
          const double wj = w[r * n + j], qj = recon[r * width + (j - g0)];
          q[r * n + j] = qj;
          const double e_r = (wj - qj) / d;
          loss += (wj - qj) * (wj - qj) / (d * d);
          err[r * (e - s) + (k - s)] = e_r;
          for (int64_t k2 = k + 1; k2 < e; ++k2) w[r * n + perm[k2]] -= e_r * U(k, k2);
        }
      }
      // Lazy batch: the block's errors reach the remaining columns with one product.
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t k2 = e; k2 < n; ++k2) {
          double acc = 0.0;
          for (int64_t k = s; k < e; ++k) acc += err[r * (e - s) + (k - s)] * U(k, k2);
          w[r * n + perm[k2]] -= acc;
        }
    }
    host.log(NWC_LOG_DEBUG, "tensor " + tname + ": GPTQ loss " + std::to_string(loss / 2));

    // Commit in original column order. Every column holds the value it had when it was coded
    // (later updates only touch columns coded after it), so the committed reconstruction must
    // equal the trial values exactly; anything else means the quantizer is not elementwise under
    // a fixed grid, and the result would not be GPTQ.
    const int64_t step = std::max<int64_t>(block_ / g, 1) * g;
    std::vector<float> cv, cf, cr;
    for (int64_t c0 = 0; c0 < n; c0 += step) {
      const int64_t c1 = std::min(n, c0 + step), width = c1 - c0;
      cv.resize(static_cast<size_t>(rows * width));
      cf.resize(cv.size());
      cr.resize(cv.size());
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < width; ++c) {
          cv[r * width + c] = static_cast<float>(w[r * n + c0 + c]);
          cf[r * width + c] = static_cast<float>(ref[r * n + c0 + c]);
        }
      nwc::encode_block_ex(codec, c0, c1, {cv.data(), rows, width}, {cf.data(), rows, width}, 0,
                           {cr.data(), rows, width});
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < width; ++c)
          if (static_cast<double>(cr[r * width + c]) != q[r * n + c0 + c])
            nwc::fail(NWC_E_INTERNAL, "tensor " + tname + ": the committed block [" +
                                          std::to_string(c0) + ", " + std::to_string(c1) +
                                          ") does not reproduce the trial quantization");
    }
  }

private:
  int64_t block_, group_;
  double percdamp_;
  bool act_order_, static_groups_;
};

} // namespace

NWC_MODULE(Gptq)
