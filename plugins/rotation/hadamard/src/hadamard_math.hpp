// hadamard_math.hpp — the arithmetic of nwc.rotation.hadamard, kept apart from the plugin class so
// that tests can check it against closed forms: Hadamard matrices by Paley's constructions, the
// seeded random orthogonal fallback, and the randomized Hadamard transform of one vector.
//
// Everything runs in double with plain scalar loops in a fixed order (no BLAS, no threads); the
// plugin is compiled with -ffp-contract=off, so results are the same bits on every machine.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace nwc_hadamard {

// splitmix64 (Steele, Lea, Flood 2014): state += 0x9E3779B97F4A7C15, then the finalizer.
uint64_t splitmix64(uint64_t &state);

// Whether q is prime (trial division; q < 2^32).
bool is_prime(uint64_t q);

// A Hadamard matrix of order k (entries +-1, H·Hᵀ = k·I, row-major) from Paley's constructions:
// Paley I (k = q + 1, q prime = 3 mod 4), Paley II (k = 2(q + 1), q prime = 1 mod 4), order 1 and
// 2 directly, and Sylvester doubling of any of them. Empty when none of these gives order k.
std::vector<int8_t> hadamard_matrix(int64_t k);

// The base block of a transform of size n: n = base * 2^r. For base > 1 the block is either a
// Hadamard matrix of order base (Paley, smallest such base <= kMaxPaley with n / base a power of
// two) scaled by 1/sqrt(base), or — when no such base exists — a seeded random orthogonal matrix
// of order m, the odd part of n (m <= kMaxRandom). Unsupported when neither applies.
inline constexpr int64_t kMaxPaley = 1024;
inline constexpr int64_t kMaxRandom = 1024;
struct Decomposition {
  bool supported = false;
  int64_t base = 1;    // order of the base block
  int64_t pow2 = 1;    // n / base, a power of two
  bool random = false; // base block is a random orthogonal matrix (QuIP's construction)
};
Decomposition decompose(int64_t n);

// An orthogonal matrix of order m (row-major, double): Householder QR of an m x m matrix of
// approximately Gaussian entries (Irwin–Hall: the sum of 12 uniforms on [0, 1) minus 6, uniforms
// from splitmix64 seeded with `seed`), Q with its columns' signs fixed so that diag(R) > 0.
std::vector<double> random_orthogonal(int64_t m, uint64_t seed);

// The transform of one side: y = (H_{2^r} / sqrt(2^r) ⊗ B) · diag(s) · x for x of length n, with B
// the base block and s the +-1 signs.
class SideTransform {
public:
  // key: the tensor's key (XXH64 of its name seeded with the option seed); purpose: 1 for the
  // input side (V), 2 for the output side (U) — independent sign streams and base blocks.
  SideTransform(int64_t n, uint64_t key, uint64_t purpose);
  int64_t size() const { return n_; }
  // x (n doubles, stride 1) -> V·x, and the transpose Vᵀ·x.
  void forward(double *x) const;
  void transpose(double *x) const;

private:
  void fwht(double *x) const; // along the power-of-two index, stride base_, unnormalized
  int64_t n_ = 0;
  Decomposition d_;
  std::vector<double> block_; // base x base, orthogonal (Hadamard / sqrt(base) or random)
  std::vector<double> signs_; // n values, +-1
  double scale_ = 1.0;        // 1 / sqrt(pow2)
};

// XXH64-free key derivation is in the plugin; this names the sign stream of a purpose.
uint64_t stream_seed(uint64_t key, uint64_t purpose);

} // namespace nwc_hadamard
