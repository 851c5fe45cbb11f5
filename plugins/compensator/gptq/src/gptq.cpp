// nwc.comp.gptq — GPTQ/OPTQ error compensation (Frantar et al., ICLR 2023) over any block codec.
//
// Columns are coded one at a time in GPTQ order; the error of each is fed to the columns not yet
// coded through the upper Cholesky factor U of H^-1 (H = the layer input's second moment from
// calibration), within a lazy batch of `block` columns and then to the rest with one matrix
// product per batch. Group grids are fitted when the group starts on its columns as they were
// when the lazy batch holding that start began (or on the original columns with static groups)
// and stay fixed for the group: the host's block
// codec fits on a reference (encode_ex fit_values) and tries columns without committing them
// (NWC_BLOCK_DRY_RUN). Committed blocks are contiguous in the original column order, so decoding
// needs nothing from this plugin.
//
// The weights are held in processing order (columns permuted once for act_order), so every update
// is contiguous. With fixed grids (static groups, act_order, group 0) the feedback is GPTQ's in
// its LDL form (the equivalence shown for LDLQ in QuIP, Chee et al. 2023), which needs no
// inverse: with H = R Rᵀ, R upper triangular, and F = R · diag(R)⁻¹ (unit upper triangular),
// column k is coded from W[:, k] + Σ_{t<k} (W − Ŵ)[:, t] · F[t, k]; that is GPTQ's update
// through U, the upper Cholesky factor of H⁻¹ (U = R⁻¹), and GPTQ's loss weight 1 / U[k, k]² is
// R[k, k]². Dynamic groups fit each grid on the columns as GPTQ's own updates leave them, so they
// use U itself (one triangular inverse more). Like GPTQ's reference code (gptq.py fasterquant,
// `find_params(W[:, i1+i : i1+i+groupsize])`, and AutoGPTQ/GPTQModel after it), the fit reads the
// weights as of the start of the current lazy batch: the updates from earlier columns of the same
// batch have not reached them yet. With group = block the two coincide; with smaller groups this is
// what every GPTQ checkpoint holds (checked bit for bit against the reference,
// docs/baselines-as-run.md). R is the reversed Cholesky factor of the reversed H
// (nwc/linalg/hessian.hpp; the products are nwc/linalg/gemm.hpp, the same bits on any
// machine and thread count). Within a lazy batch, columns are updated in sub-batches of kSub
// columns, each fed to the rest of the batch with one product.
//
// A trial codes a whole group to learn one column's values; most columns need none: what the
// codec makes of a value under a group's fixed grid is learned from the trials (staircase.hpp),
// and every predicted value is checked against the codec before any block is committed. When a
// prediction turns out wrong, the tensor is coded again with a trial for every column, so the
// result is always the one per-column trials give.
#include "nwc/cpp/plugin.hpp"
#include "nwc/linalg/hessian.hpp"
#include "staircase.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

namespace {

namespace hc = nwc::compensate;

constexpr int64_t kSub = 32; // columns per sub-batch inside a lazy batch

class Gptq final : public nwc::Compensator {
public:
  static constexpr const char *id = "nwc.comp.gptq";
  static constexpr const char *version = "1.2.0";
  static constexpr uint32_t stream_version = 1;
  static constexpr const char *name = "gptq";
  static constexpr const char *description =
      "GPTQ/OPTQ: codes columns one at a time and feeds each column's error, weighted by the "
      "inverse Hessian of the layer input, to the columns not yet coded (lazy batches of `block` "
      "columns). Needs calibration Hessians (nwc calibrate, then compress --calibration). Group "
      "grids are fitted when a group starts, on the weights as of the start of its lazy batch as "
      "GPTQ's reference code does (or on the original weights with static_groups); set `group` "
      "equal to the chunker's group. act_order codes columns by decreasing Hessian diagonal and "
      "implies static groups, so the stored layout stays in the original order; for act-order "
      "with dynamic groups (GPTQ's reference and GPTQModel's desc_act default) add [rotation] "
      "plugin = \"nwc.rotation.act_order\" and leave act_order off.";
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
    const nwc::ConstTensor<float> hv = hc::require_hessian(hessian, tname, n, "GPTQ");
    if (n == 0) return;
    const auto sz = [](int64_t v) { return static_cast<size_t>(v); };
    const int64_t g = group_ > 0 ? std::min(group_, n) : n;
    const bool static_groups = static_groups_ || act_order_ || group_ == 0;

    // Dead inputs (H[j][j] == 0) get a unit diagonal and zero weights. Processing order perm
    // (perm[k] = the original column coded k-th) and its inverse pos.
    std::vector<char> dead;
    std::vector<double> diag;
    hc::find_dead_columns(hv.data, n, dead, diag);
    std::vector<int64_t> perm(sz(n)), pos(sz(n));
    std::iota(perm.begin(), perm.end(), 0);
    if (act_order_)
      std::stable_sort(perm.begin(), perm.end(),
                       [&](int64_t a, int64_t b) { return diag[sz(a)] > diag[sz(b)]; });
    for (int64_t k = 0; k < n; ++k) pos[sz(perm[sz(k)])] = k;

    // The feedback factor F (unit upper triangular, processing order) and rd, the diagonal of R
    // in H = R Rᵀ, the Cholesky factorisation of H (processing order, dampened) with R upper
    // triangular: R = J L J from J·H·J = L Lᵀ (J: the order reversal). With fixed grids
    // (static groups) F = R · diag(R)⁻¹ and columns feed their error against the original
    // weights. Dynamic groups fit each group's grid on the columns as GPTQ's own updates leave
    // them when the group starts, which only GPTQ's form gives: F = diag(U)⁻¹ · U with U = R⁻¹
    // (= J L⁻¹ J), the upper Cholesky factor of H⁻¹, and columns feed minus their error against
    // their current values.
    const bool ldl_form = static_groups;
    std::vector<double> u, rd(sz(n));
    {
      double mean_diag = 0.0;
      for (int64_t k = 0; k < n; ++k) mean_diag += diag[sz(perm[sz(k)])];
      mean_diag /= static_cast<double>(n);
      std::vector<int64_t> q(sz(n)); // reversed processing order
      for (int64_t i = 0; i < n; ++i) q[sz(i)] = perm[sz(n - 1 - i)];
      // Lower triangle of J·Hp·J, read from the lower triangle of Hp (H in processing order):
      // A[i][j] = Hp[n-1-j][n-1-i] = H[q[j]][q[i]] for j <= i, in tiles.
      auto fill = [&](std::vector<double> &a) {
        constexpr int64_t t = 64;
        for (int64_t i0 = 0; i0 < n; i0 += t)
          for (int64_t j0 = 0; j0 <= i0; j0 += t)
            for (int64_t j = j0; j < std::min(n, j0 + t); ++j) {
              const float *hr = hv.data + q[sz(j)] * n;
              for (int64_t i = std::max(i0, j); i < std::min(n, i0 + t); ++i)
                a[sz(i * n + j)] = hr[q[sz(i)]];
            }
        for (int64_t i = 0; i < n; ++i) a[sz(i * n + i)] = diag[sz(q[sz(i)])];
      };
      hc::dampened_cholesky(u, n, mean_diag, percdamp_, host, tname, nullptr, fill);
      if (ldl_form) {
        std::reverse(u.begin(), u.end()); // R[i][j] = L[n-1-i][n-1-j]
        for (int64_t k = 0; k < n; ++k) rd[sz(k)] = u[sz(k * n + k)];
        for (int64_t i = 0; i < n; ++i)
          for (int64_t k = i; k < n; ++k) u[sz(i * n + k)] /= rd[sz(k)];
      } else {
        hc::lower_inverse(u.data(), n, n);
        std::reverse(u.begin(), u.end()); // U[i][j] = L⁻¹[n-1-i][n-1-j]
        for (int64_t i = 0; i < n; ++i) {
          const double d = u[sz(i * n + i)];
          rd[sz(i)] = 1.0 / d;
          for (int64_t k = i; k < n; ++k) u[sz(i * n + k)] /= d;
        }
      }
    }

    // Reference (fit) values by group, each group [g0, g1) stored as rows × (g1 - g0) at
    // rows · g0: the original weights with static groups, otherwise the group's columns as they
    // are when it starts. w: the working copy of W in processing order (double), dead columns
    // zero. coded: what each column was coded to (original order).
    const int64_t groups = (n + g - 1) / g;
    std::vector<double> w(sz(rows * n));
    std::vector<float> ref(sz(rows * n)), coded(sz(rows * n));
    const int64_t step = std::max<int64_t>(block_ / g, 1) * g; // width of the committed blocks
    std::vector<float> cv, cf, cr;
    // The committed blocks' values and fit values: cv, cf = columns [c0, c1) of w and ref.
    auto block_values = [&](int64_t c0, int64_t c1) {
      const int64_t width = c1 - c0;
      cv.resize(sz(rows * width));
      cf.resize(cv.size());
      cr.resize(cv.size());
      for (int64_t r = 0; r < rows; ++r) {
        const double *wr = w.data() + r * n;
        float *vr = cv.data() + r * width, *fr = cf.data() + r * width;
        for (int64_t c = 0; c < width; ++c) {
          const int64_t j = c0 + c, g0 = (j / g) * g, gw = std::min(n, g0 + g) - g0;
          vr[c] = static_cast<float>(wr[pos[sz(j)]]);
          fr[c] = ref[sz(rows * g0 + r * gw + (j - g0))];
        }
      }
    };
    // Codes the block (mode: NWC_BLOCK_DRY_RUN or 0 = commit); true when that gives `coded`,
    // bit for bit (exact) or value for value.
    auto block_agrees = [&](int64_t c0, int64_t c1, uint32_t mode, bool exact) {
      const int64_t width = c1 - c0;
      nwc::encode_block_ex(codec, c0, c1, {cv.data(), rows, width}, {cf.data(), rows, width}, mode,
                           {cr.data(), rows, width});
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < width; ++c) {
          const float a = cr[sz(r * width + c)], b = coded[sz(r * n + c0 + c)];
          if (exact ? !nwc::gptq::same_bits(a, b) : a != b) return false;
        }
      return true;
    };

    // Codes every column (GPTQ proper). learn: predict columns from earlier trials where the
    // staircases allow it (staircase.hpp), and check every block against the codec at the end;
    // false when that fails, and the tensor is coded again with learn false: a trial for every
    // column, with the rest of its group at reference values.
    auto code_columns = [&](bool learn) {
      for (int64_t r = 0; r < rows; ++r) {
        const float *src = weight.data + r * n;
        double *dst = w.data() + r * n;
        for (int64_t k = 0; k < n; ++k) {
          const int64_t j = perm[sz(k)];
          dst[k] = dead[sz(j)] ? 0.0 : static_cast<double>(src[j]);
        }
      }
      std::vector<char> fitted(sz(groups), 0);
      std::vector<float> ref_lo(learn ? sz(rows * groups) : 0), ref_hi(ref_lo.size());
      // Dynamic groups: the current lazy batch [batch_s, batch_e) as it was when it began (columns
      // after it are not touched until it ends). Static groups fit before any update.
      std::vector<double> batch_start;
      int64_t batch_s = 0, batch_e = 0;
      auto fit_value = [&](int64_t r, int64_t k) {
        return k >= batch_s && k < batch_e ? batch_start[sz(r * (batch_e - batch_s) + k - batch_s)]
                                           : w[sz(r * n + k)];
      };
      auto fit_group = [&](int64_t grp) {
        const int64_t g0 = grp * g, width = std::min(n, g0 + g) - g0;
        float *dst = ref.data() + rows * g0;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < width; ++c)
            dst[r * width + c] = static_cast<float>(fit_value(r, pos[sz(g0 + c)]));
          if (learn) {
            const auto [lo, hi] = std::minmax_element(dst + r * width, dst + (r + 1) * width);
            ref_lo[sz(grp * rows + r)] = *lo;
            ref_hi[sz(grp * rows + r)] = *hi;
          }
        }
        fitted[sz(grp)] = 1;
      };
      if (static_groups)
        for (int64_t grp = 0; grp < groups; ++grp) fit_group(grp);
      // Staircases of every row of every group (learn). A group with a row of more than
      // max_runs levels is tried column by column: at most about 2/3 of the group width (up to
      // 256) so that the staircases take no more memory than w.
      const auto max_runs = static_cast<size_t>(std::clamp<int64_t>(2 * g / 3, 16, 256));
      std::vector<std::vector<nwc::gptq::Staircase>> stairs(learn ? sz(groups) : 0);
      std::vector<char> tried_only(sz(groups), learn ? 0 : 1);
      std::vector<float> trial(sz(rows * g)), recon(sz(rows * g)), col(sz(rows)), probe(sz(g));
      int64_t trial_grp = -1, trial_col = -1;
      // The range of the values the codec has been given in learning trials.
      float seen_lo = std::numeric_limits<float>::quiet_NaN(), seen_hi = seen_lo;
      std::vector<double> err;
      double loss = 0.0;
      int64_t trials = 0;

      for (int64_t s = 0; s < n; s += block_) {
        const int64_t e = std::min(n, s + block_), bw = e - s;
        err.assign(sz(rows * bw), 0.0);
        if (!static_groups) {
          batch_start.resize(sz(rows * bw));
          for (int64_t r = 0; r < rows; ++r)
            std::copy(w.begin() + r * n + s, w.begin() + r * n + e, batch_start.begin() + r * bw);
          batch_s = s;
          batch_e = e;
        }
        for (int64_t s2 = s, e2 = s; s2 < e; s2 = e2) {
          e2 = std::min(e, s2 + kSub);
          for (int64_t k = s2; k < e2; ++k) {
            const int64_t j = perm[sz(k)], grp = j / g, g0 = grp * g,
                          width = std::min(n, g0 + g) - g0, c = j - g0;
            if (!fitted[sz(grp)]) { // dynamic groups: the grid is fitted when the group starts
              fit_group(grp);
              if (trial_grp == grp) trial_grp = -1;
            }
            const float *gref = ref.data() + rows * g0;
            for (int64_t r = 0; r < rows; ++r) col[sz(r)] = static_cast<float>(w[sz(r * n + k)]);
            bool known = false;
            if (!tried_only[sz(grp)]) {
              auto &st = stairs[sz(grp)];
              if (st.empty()) st.resize(sz(rows));
              known = true;
              for (int64_t r = 0; r < rows && known; ++r)
                known = st[sz(r)].predict(col[sz(r)], recon[sz(r * width + c)]);
              if (!known) { // try the column, and probe the steps in the group's other columns
                for (int64_t r = 0; r < rows; ++r) {
                  st[sz(r)].probes(ref_lo[sz(grp * rows + r)], ref_hi[sz(grp * rows + r)], seen_lo,
                                   seen_hi, probe.data(), width - 1);
                  float *t = trial.data() + r * width;
                  std::copy(probe.data(), probe.data() + c, t);
                  t[c] = col[sz(r)];
                  std::copy(probe.data() + c, probe.data() + width - 1, t + c + 1);
                }
                trial_grp = -1;
                nwc::encode_block_ex(codec, g0, g0 + width, {trial.data(), rows, width},
                                     {gref, rows, width}, NWC_BLOCK_DRY_RUN,
                                     {recon.data(), rows, width});
                ++trials;
                size_t most = 0;
                for (int64_t r = 0; r < rows; ++r) {
                  for (int64_t cc = 0; cc < width; ++cc) {
                    const float x = trial[sz(r * width + cc)];
                    if (!st[sz(r)].observe(x, recon[sz(r * width + cc)])) return false;
                    if (std::isfinite(x)) { // NaN bounds compare false: the first value sets them
                      seen_lo = !(seen_lo <= x) ? x : seen_lo;
                      seen_hi = !(seen_hi >= x) ? x : seen_hi;
                    }
                  }
                  most = std::max(most, st[sz(r)].size());
                }
                if (most > max_runs) {
                  tried_only[sz(grp)] = 1;
                  st = {};
                }
                known = true;
              }
            }
            if (!known) { // the group's reference values, with the column in its place
              if (trial_grp != grp) {
                std::copy(gref, gref + rows * width, trial.data());
                trial_grp = grp;
              } else if (trial_col >= 0) {
                for (int64_t r = 0; r < rows; ++r)
                  trial[sz(r * width + trial_col)] = gref[r * width + trial_col];
              }
              for (int64_t r = 0; r < rows; ++r) trial[sz(r * width + c)] = col[sz(r)];
              trial_col = c;
              nwc::encode_block_ex(codec, g0, g0 + width, {trial.data(), rows, width},
                                   {gref, rows, width}, NWC_BLOCK_DRY_RUN,
                                   {recon.data(), rows, width});
              ++trials;
            }
            // The column's error (against the original weights or, negated, its current values)
            // fed forward through F.
            const double *fk = u.data() + k * n;
            const double rk2 = rd[sz(k)] * rd[sz(k)];
            for (int64_t r = 0; r < rows; ++r) {
              double *wr = w.data() + r * n;
              const float qf = recon[sz(r * width + c)];
              const double wj = wr[k], qj = qf;
              coded[sz(r * n + j)] = qf;
              const double e_r =
                  ldl_form ? (dead[sz(j)] ? 0.0 : static_cast<double>(weight.data[r * n + j])) - qj
                           : qj - wj;
              loss += (wj - qj) * (wj - qj) * rk2;
              err[sz(r * bw + (k - s))] = e_r;
              for (int64_t k2 = k + 1; k2 < e2; ++k2) wr[k2] += e_r * fk[k2];
            }
          }
          // The sub-batch's errors reach the rest of the lazy batch with one product.
          hc::gemm(false, false, rows, e - e2, e2 - s2, 1.0, err.data() + (s2 - s), bw,
                   u.data() + s2 * n + e2, n, 1.0, w.data() + e2, n);
        }
        // Lazy batch: the block's errors reach the remaining columns with one product,
        // W[:, e:] += Err · F[s:e, e:].
        hc::gemm(false, false, rows, n - e, bw, 1.0, err.data(), bw, u.data() + s * n + e, n, 1.0,
                 w.data() + e, n);
      }
      if (learn) // every column as the codec codes the committed blocks, before any is committed
        for (int64_t c0 = 0; c0 < n; c0 += step) {
          const int64_t c1 = std::min(n, c0 + step);
          block_values(c0, c1);
          if (!block_agrees(c0, c1, NWC_BLOCK_DRY_RUN, true)) return false;
        }
      host.log(NWC_LOG_DEBUG, "tensor " + tname + ": GPTQ loss " + std::to_string(loss / 2) + ", " +
                                  std::to_string(trials) + " trials for " + std::to_string(n) +
                                  " columns");
      return true;
    };
    if (!code_columns(true)) {
      host.log(NWC_LOG_DEBUG, "tensor " + tname +
                                  ": the codec is not a non-decreasing elementwise function "
                                  "under a fixed grid; trying every column");
      code_columns(false);
    }
    u = {};

    // Commit in original column order. Every column holds the value it had when it was coded
    // (later updates only touch columns coded after it), so the committed reconstruction must
    // equal the trial values exactly; anything else means the quantizer is not elementwise under
    // a fixed grid, and the result would not be GPTQ.
    for (int64_t c0 = 0; c0 < n; c0 += step) {
      const int64_t c1 = std::min(n, c0 + step);
      block_values(c0, c1);
      if (!block_agrees(c0, c1, 0, false))
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
