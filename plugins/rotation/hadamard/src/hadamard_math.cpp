// hadamard_math.cpp — see hadamard_math.hpp.
#include "hadamard_math.hpp"

#include <cmath>
#include <cstddef>
#include <stdexcept>

namespace nwc_hadamard {

uint64_t splitmix64(uint64_t &state) {
  state += 0x9E3779B97F4A7C15ull;
  uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t stream_seed(uint64_t key, uint64_t purpose) {
  return key ^ (purpose * 0xD1B54A32D192ED03ull);
}

bool is_prime(uint64_t q) {
  if (q < 2) return false;
  for (uint64_t d = 2; d * d <= q; ++d)
    if (q % d == 0) return false;
  return true;
}

namespace {

// chi(x) for x in [0, q): 0, +1 for a nonzero square mod q, -1 otherwise.
std::vector<int8_t> quadratic_character(int64_t q) {
  std::vector<int8_t> chi(static_cast<size_t>(q), -1);
  chi[0] = 0;
  for (int64_t x = 1; x < q; ++x) chi[static_cast<size_t>((x * x) % q)] = 1;
  return chi;
}

// Paley I: q prime = 3 mod 4, order q + 1. S = [[0, 1ᵀ], [-1, Q]] with Q[i][j] = chi(j - i)
// (skew-symmetric), H = I + S.
std::vector<int8_t> paley1(int64_t q) {
  const int64_t k = q + 1;
  const auto chi = quadratic_character(q);
  std::vector<int8_t> h(static_cast<size_t>(k * k), 0);
  for (int64_t i = 0; i < k; ++i)
    for (int64_t j = 0; j < k; ++j) {
      int8_t s;
      if (i == 0 && j == 0)
        s = 0;
      else if (i == 0)
        s = 1;
      else if (j == 0)
        s = -1;
      else
        s = chi[static_cast<size_t>(((j - i) % q + q) % q)];
      h[static_cast<size_t>(i * k + j)] = static_cast<int8_t>(s + (i == j ? 1 : 0));
    }
  return h;
}

// Paley II: q prime = 1 mod 4, order 2(q + 1). S = [[0, 1ᵀ], [1, Q]] (symmetric); every entry
// becomes a 2 x 2 block: 0 -> [[1, -1], [-1, -1]], +-1 -> +-[[1, 1], [1, -1]].
std::vector<int8_t> paley2(int64_t q) {
  const int64_t s_order = q + 1, k = 2 * s_order;
  const auto chi = quadratic_character(q);
  std::vector<int8_t> h(static_cast<size_t>(k * k), 0);
  for (int64_t i = 0; i < s_order; ++i)
    for (int64_t j = 0; j < s_order; ++j) {
      int s;
      if (i == 0 && j == 0)
        s = 0;
      else if (i == 0 || j == 0)
        s = 1;
      else
        s = chi[static_cast<size_t>(((j - i) % q + q) % q)];
      const int blk[2][2] = {{s == 0 ? 1 : s, s == 0 ? -1 : s},
                             {s == 0 ? -1 : s, s == 0 ? -1 : -s}};
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
          h[static_cast<size_t>((2 * i + a) * k + 2 * j + b)] = static_cast<int8_t>(blk[a][b]);
    }
  return h;
}

// A Paley matrix of exactly order k (no doubling), or empty.
std::vector<int8_t> paley(int64_t k) {
  if (k == 1) return {1};
  if (k == 2) return {1, 1, 1, -1};
  if (k % 4 != 0) return {};
  if (is_prime(static_cast<uint64_t>(k - 1)) && (k - 1) % 4 == 3) return paley1(k - 1);
  if (k % 2 == 0 && is_prime(static_cast<uint64_t>(k / 2 - 1)) && (k / 2 - 1) % 4 == 1)
    return paley2(k / 2 - 1);
  return {};
}

bool power_of_two(int64_t v) {
  return v > 0 && (v & (v - 1)) == 0;
}

} // namespace

std::vector<int8_t> hadamard_matrix(int64_t k) {
  if (k <= 0) return {};
  // The smallest Paley order k0 with k / k0 a power of two, doubled up to k (Sylvester).
  for (int64_t k0 = 1; k0 <= k; ++k0) {
    if (k % k0 != 0 || !power_of_two(k / k0)) continue;
    std::vector<int8_t> h = paley(k0);
    if (h.empty()) continue;
    for (int64_t o = k0; o < k; o *= 2) { // [[H, H], [H, -H]]
      std::vector<int8_t> d(static_cast<size_t>(4 * o * o));
      for (int64_t i = 0; i < o; ++i)
        for (int64_t j = 0; j < o; ++j) {
          const int8_t v = h[static_cast<size_t>(i * o + j)];
          d[static_cast<size_t>(i * 2 * o + j)] = v;
          d[static_cast<size_t>(i * 2 * o + o + j)] = v;
          d[static_cast<size_t>((o + i) * 2 * o + j)] = v;
          d[static_cast<size_t>((o + i) * 2 * o + o + j)] = static_cast<int8_t>(-v);
        }
      h.swap(d);
    }
    return h;
  }
  return {};
}

Decomposition decompose(int64_t n) {
  Decomposition d;
  if (n <= 0) return d;
  for (int64_t k0 = 1; k0 <= std::min(n, kMaxPaley); ++k0)
    if (n % k0 == 0 && power_of_two(n / k0) && !paley(k0).empty()) {
      d.supported = true;
      d.base = k0;
      d.pow2 = n / k0;
      return d;
    }
  int64_t m = n;
  while (m % 2 == 0) m /= 2;
  if (m <= kMaxRandom) {
    d.supported = true;
    d.base = m;
    d.pow2 = n / m;
    d.random = true;
  }
  return d;
}

std::vector<double> random_orthogonal(int64_t m, uint64_t seed) {
  const auto mm = static_cast<size_t>(m);
  std::vector<double> a(mm * mm);
  uint64_t state = seed;
  for (auto &v : a) {
    double s = 0.0;
    for (int k = 0; k < 12; ++k)
      s += static_cast<double>(splitmix64(state) >> 11) * 0x1.0p-53; // uniform on [0, 1)
    v = s - 6.0;
  }
  // Householder QR in place: column j's reflector v (stored in vs) zeroes a[j+1.., j].
  std::vector<double> vs(mm * mm, 0.0), sign(mm, 1.0);
  for (size_t j = 0; j < mm; ++j) {
    double norm = 0.0;
    for (size_t i = j; i < mm; ++i) norm += a[i * mm + j] * a[i * mm + j];
    norm = std::sqrt(norm);
    const double x0 = a[j * mm + j];
    const double alpha = x0 >= 0 ? -norm : norm; // R[j][j] = alpha
    double *v = &vs[j * mm];
    for (size_t i = j; i < mm; ++i) v[i] = a[i * mm + j];
    v[j] -= alpha;
    double vn = 0.0;
    for (size_t i = j; i < mm; ++i) vn += v[i] * v[i];
    if (vn > 0.0)
      for (size_t c = j; c < mm; ++c) { // a <- (I - 2 v vᵀ / vᵀv) a
        double dot = 0.0;
        for (size_t i = j; i < mm; ++i) dot += v[i] * a[i * mm + c];
        const double f = 2.0 * dot / vn;
        for (size_t i = j; i < mm; ++i) a[i * mm + c] -= f * v[i];
      }
    sign[j] = a[j * mm + j] < 0 ? -1.0 : 1.0;
  }
  // Q = H_0 H_1 ... H_{m-1}: applied to the identity from the last reflector to the first.
  std::vector<double> q(mm * mm, 0.0);
  for (size_t i = 0; i < mm; ++i) q[i * mm + i] = 1.0;
  for (size_t jj = mm; jj-- > 0;) {
    const double *v = &vs[jj * mm];
    double vn = 0.0;
    for (size_t i = jj; i < mm; ++i) vn += v[i] * v[i];
    if (vn == 0.0) continue;
    for (size_t c = 0; c < mm; ++c) {
      double dot = 0.0;
      for (size_t i = jj; i < mm; ++i) dot += v[i] * q[i * mm + c];
      const double f = 2.0 * dot / vn;
      for (size_t i = jj; i < mm; ++i) q[i * mm + c] -= f * v[i];
    }
  }
  // Q·diag(sign(R)): the column signs that make R's diagonal positive (a Haar-distributed Q for
  // Gaussian input).
  for (size_t i = 0; i < mm; ++i)
    for (size_t c = 0; c < mm; ++c) q[i * mm + c] *= sign[c];
  return q;
}

SideTransform::SideTransform(int64_t n, uint64_t key, uint64_t purpose) : n_(n) {
  d_ = decompose(n);
  if (!d_.supported) throw std::invalid_argument("unsupported size");
  const auto b = static_cast<size_t>(d_.base);
  if (d_.random) {
    block_ = random_orthogonal(d_.base, stream_seed(key, purpose + 2));
  } else {
    const std::vector<int8_t> h = hadamard_matrix(d_.base);
    const double s = 1.0 / std::sqrt(static_cast<double>(d_.base));
    block_.resize(b * b);
    for (size_t i = 0; i < b * b; ++i) block_[i] = h[i] * s;
  }
  signs_.resize(static_cast<size_t>(n));
  uint64_t state = stream_seed(key, purpose);
  uint64_t word = 0;
  for (size_t i = 0; i < signs_.size(); ++i) {
    if (i % 64 == 0) word = splitmix64(state);
    signs_[i] = (word >> (i % 64)) & 1u ? -1.0 : 1.0;
  }
  scale_ = 1.0 / std::sqrt(static_cast<double>(d_.pow2));
}

void SideTransform::fwht(double *x) const {
  const int64_t b = d_.base;
  for (int64_t h = 1; h < d_.pow2; h *= 2)
    for (int64_t i = 0; i < d_.pow2; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j)
        for (int64_t c = 0; c < b; ++c) {
          const double u = x[j * b + c], v = x[(j + h) * b + c];
          x[j * b + c] = u + v;
          x[(j + h) * b + c] = u - v;
        }
}

void SideTransform::forward(double *x) const {
  const int64_t b = d_.base;
  for (int64_t i = 0; i < n_; ++i) x[i] *= signs_[static_cast<size_t>(i)];
  if (b > 1) {
    std::vector<double> tmp(static_cast<size_t>(b));
    for (int64_t a = 0; a < d_.pow2; ++a) {
      double *blk = x + a * b;
      for (int64_t r = 0; r < b; ++r) {
        double s = 0.0;
        const double *row = &block_[static_cast<size_t>(r * b)];
        for (int64_t c = 0; c < b; ++c) s += row[c] * blk[c];
        tmp[static_cast<size_t>(r)] = s;
      }
      for (int64_t r = 0; r < b; ++r) blk[r] = tmp[static_cast<size_t>(r)];
    }
  }
  fwht(x);
  for (int64_t i = 0; i < n_; ++i) x[i] *= scale_;
}

void SideTransform::transpose(double *x) const {
  const int64_t b = d_.base;
  fwht(x); // the Sylvester matrix is symmetric
  for (int64_t i = 0; i < n_; ++i) x[i] *= scale_;
  if (b > 1) {
    std::vector<double> tmp(static_cast<size_t>(b));
    for (int64_t a = 0; a < d_.pow2; ++a) {
      double *blk = x + a * b;
      for (int64_t c = 0; c < b; ++c) tmp[static_cast<size_t>(c)] = 0.0;
      for (int64_t r = 0; r < b; ++r) {
        const double *row = &block_[static_cast<size_t>(r * b)];
        const double xr = blk[r];
        for (int64_t c = 0; c < b; ++c) tmp[static_cast<size_t>(c)] += row[c] * xr;
      }
      for (int64_t c = 0; c < b; ++c) blk[c] = tmp[static_cast<size_t>(c)];
    }
  }
  for (int64_t i = 0; i < n_; ++i) x[i] *= signs_[static_cast<size_t>(i)];
}

} // namespace nwc_hadamard
