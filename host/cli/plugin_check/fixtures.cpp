#include "fixtures.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace nwc::cli::check {

std::vector<float> synthetic(size_t n, double scale, uint64_t seed) {
  std::vector<float> v(n);
  uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
  auto next = [&] {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<double>(s >> 11) / 9007199254740992.0;
  };
  for (auto &x : v) x = static_cast<float>(scale * (next() + next() + next() + next() - 2.0));
  return v;
}

std::vector<float> check_weight() {
  std::vector<float> w = synthetic(static_cast<size_t>(kRows * kCols), 0.02, 1);
  for (int64_t c = 0; c < kCols; ++c) w[static_cast<size_t>(3 * kCols + c)] *= 8.0f;
  return w;
}

std::vector<float> check_hessian() {
  const int64_t n = 512;
  std::vector<float> xs = synthetic(static_cast<size_t>(n * kCols), 1.0, 5);
  std::vector<float> h(static_cast<size_t>(kCols * kCols));
  for (int64_t i = 0; i < kCols; ++i)
    for (int64_t j = 0; j <= i; ++j) {
      double s = 0;
      for (int64_t k = 0; k < n; ++k)
        s += static_cast<double>(xs[static_cast<size_t>(k * kCols + i)]) *
             xs[static_cast<size_t>(k * kCols + j)];
      const float v = static_cast<float>(s / n) + (i == j ? 0.01f : 0.0f);
      h[static_cast<size_t>(i * kCols + j)] = h[static_cast<size_t>(j * kCols + i)] = v;
    }
  return h;
}

Sink::Sink() {
  sink.ctx = this;
  sink.write = [](nwc_sink *s, const void *data, size_t len) -> nwc_status {
    auto *self = static_cast<Sink *>(s->ctx);
    const auto *p = static_cast<const uint8_t *>(data);
    self->bytes.insert(self->bytes.end(), p, p + len);
    return NWC_OK;
  };
}

View::View(const void *data, uint32_t dtype, int64_t rows, int64_t cols, int ndim) {
  shape[0] = ndim == 2 ? rows : cols;
  shape[1] = cols;
  v.data = const_cast<void *>(data);
  v.dtype = dtype;
  v.device_type = NWC_DEVICE_CPU;
  v.ndim = static_cast<uint32_t>(ndim);
  v.shape = shape;
}

TensorBlock::TensorBlock(int64_t c0, int64_t c1) {
  info.struct_size = sizeof(nwc_block_info);
  info.tensor_name = name.c_str();
  info.rows = kRows;
  info.cols = kCols;
  info.col_begin = c0;
  info.col_end = c1;
}

bool all_finite(const std::vector<float> &v) {
  return std::all_of(v.begin(), v.end(), [](float x) { return std::isfinite(x); });
}

double max_abs_diff(const std::vector<float> &a, const std::vector<float> &b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i)
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
  return m;
}

std::string rel_error(const std::vector<float> &x, const std::vector<float> &y) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double d = static_cast<double>(x[i]) - static_cast<double>(y[i]);
    num += d * d;
    den += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "relative error %.3g", den > 0 ? std::sqrt(num / den) : 0.0);
  return buf;
}

} // namespace nwc::cli::check
