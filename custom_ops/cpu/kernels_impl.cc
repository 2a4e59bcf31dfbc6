// Compute kernels, compiled once per ISA variant (see kernels.h and CMakeLists.txt).
//
// Algorithm (deformable and plain convolution alike):
//   * the input is transposed once to NHWC, so that the channels of one sampling position are
//     contiguous;
//   * the work is split into tasks (sample n, group g, tile of output pixels); each task builds a
//     column buffer col[T, KH*KW*Cg] (pixel-major, tap, then channel) in thread-local scratch memory
//     sized to stay in L2, either by copying (plain conv) or by bilinear sampling (deformable conv:
//     the 4 corner weights and addresses of a (pixel, tap) are computed once per offset group and
//     applied to all its channels with a vectorised loop), and then multiplies it with the packed
//     weights: Y[g*Og:(g+1)*Og, tile] = Wpacked[g] (Og x KK*Cg) * col^T, plus the bias (AVX2:
//     own micro-kernel, K-blocked so that a 16-channel weight panel stays in L1; else Eigen);
//   * tasks run on onnxruntime's intra-op thread pool; Eigen's own threading is off.
// Depthwise convolution (one input channel per group) has its own direct loop (DepthwiseConv2d):
// as a GEMM it would have one output channel per group, 1/16 of the AVX2 micro-kernel's panel.
#ifndef EDGECONV_KERN_NS
#error "EDGECONV_KERN_NS must be defined (generic, avx2, ...)"
#endif

#define EDGECONV_CAT2(a, b) a##b
#define EDGECONV_CAT(a, b) EDGECONV_CAT2(a, b)
// Give every ISA variant its own copy of Eigen (see kernels.h): the namespace is renamed.
#define Eigen EDGECONV_CAT(EdgeconvEigen_, EDGECONV_KERN_NS)
#define EIGEN_DONT_PARALLELIZE 1
#define EIGEN_MPL2_ONLY 1
#include <Eigen/Core>

#include <cmath>
#include <cstring>
#include <new>

#include "kernels.h"

// x86-64 AVX2+FMA variant: own GEMM micro-kernel (6 pixels x 16 output channels, 12 accumulators)
// that reads the column buffer in place (no packing pass) against weights packed once per call.
// Other variants (baseline x86-64, aarch64/NEON): Eigen's GEMM.
#if defined(__AVX2__) && defined(__FMA__)
#define EDGECONV_MICROKERNEL 1
#include <immintrin.h>
#endif

namespace edgeconv {
namespace kern {
namespace EDGECONV_KERN_NS {
namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Vec = Eigen::Matrix<float, Eigen::Dynamic, 1>;
using OStride = Eigen::OuterStride<>;

inline int64_t Min(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t Max(int64_t a, int64_t b) { return a > b ? a : b; }

constexpr int64_t kSliceFloats = 32 * 1024;     // column K-slice (tile x 256) kept in L2: 128 KB
constexpr int64_t kTileCapFloats = 512 * 1024;  // whole column tile: at most 2 MB
#if EDGECONV_MICROKERNEL
constexpr int64_t kPanel = 16;  // output channels per packed weight panel (2 AVX vectors)
constexpr int64_t kRows = 6;    // pixels per micro-kernel call
constexpr int64_t kKC = 256;    // reduction block: a 16 x 256 weight panel (16 KB) stays in L1
constexpr int64_t kKCTile = kKC;
#else
constexpr int64_t kKCTile = 256;
constexpr int64_t kPanel = 1;   // Eigen path: weights [G][Og][Kd] row-major
constexpr int64_t kRows = 8;
#endif
inline int64_t RoundUp(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

#if EDGECONV_MICROKERNEL
inline void Transpose8x8(const float* s, int64_t lds, float* d, int64_t ldd) {
  const __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds), r2 = _mm256_loadu_ps(s + 2 * lds),
               r3 = _mm256_loadu_ps(s + 3 * lds), r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds),
               r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0)), u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2)),
               u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0)), u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2)),
               u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0)), u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2)),
               u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0)), u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

// d[j * ldd + i] = s[i * lds + j] for i < rows, j < cols.
// (GCC 12 warns about an impossible overflow in the tail loop of the baseline variant.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Waggressive-loop-optimizations"
void Transpose(const float* __restrict s, int64_t rows, int64_t cols, int64_t lds, float* __restrict d, int64_t ldd) {
  int64_t i0 = 0;
#if EDGECONV_MICROKERNEL
  for (; i0 + 8 <= rows; i0 += 8) {
    int64_t j0 = 0;
    for (; j0 + 8 <= cols; j0 += 8) Transpose8x8(s + i0 * lds + j0, lds, d + j0 * ldd + i0, ldd);
    for (int64_t j = j0; j < cols; ++j)
      for (int64_t i = i0; i < i0 + 8; ++i) d[j * ldd + i] = s[i * lds + j];
  }
#else
  constexpr int64_t kB = 8;
  for (; i0 + kB <= rows; i0 += kB)
    for (int64_t j0 = 0; j0 < cols; j0 += kB) {
      const int64_t j1 = Min(j0 + kB, cols);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i0 + kB; ++i) d[j * ldd + i] = s[i * lds + j];
    }
#endif
  if (i0 < rows) {
    for (int64_t j = 0; j < cols; ++j) {
      float* dr = d + j * ldd;
      for (int64_t i = i0; i < rows; ++i) dr[i] = s[i * lds + j];
    }
  }
}
#pragma GCC diagnostic pop

struct ConvJob {
  const ConvArgs* a;
  int64_t Og, Cg, Cog, KK, Kd, P, tile, ntiles;
  int64_t OgPad, col_floats;  // OgPad: Og rounded up to kPanel
  int failed;
};

// Sample position p = float(base) + d, computed in float32 like the ONNX formula (and the
// PyTorch reference and the fallback functions), split into floor(p) and p - floor(p). Returns
// false when the tap does not sample: p <= -1, p >= size, or p NaN (an infinite p fails the bounds).
inline bool SplitPosition(int64_t base, float d, int64_t size, int64_t* i0, float* frac) {
  const float p = static_cast<float>(base) + d;
  if (!(p > -1.0f && p < static_cast<float>(size))) return false;
  const float fp = std::floor(p);
  *i0 = static_cast<int64_t>(fp);  // in [-1, size]: bounded above
  if (*i0 > size - 1) return false;  // (float(size) rounded up for size > 2^24)
  *frac = p - fp;
  return true;
}

// dst[0:len] = m * S, S the bilinear sample of the NHWC image `img` (already offset to the first
// channel) at (by + dy, bx + dx): the sum over the corners inside the image of
// (float32 corner weight) * value; corners outside are skipped, and S = 0 when the tap does not
// sample. The mask multiplies after the interpolation, so a NaN/Inf mask gives NaN even there
// (docs/onnx-ops.md, "NaN and Inf").
inline void SampleBilinear(float* __restrict dst, const float* __restrict img, int64_t len, int64_t H,
                           int64_t W, int64_t C, int64_t by, float dy, int64_t bx, float dx, float m) {
  int64_t y0, x0;
  float ly, lx;
  if (!SplitPosition(by, dy, H, &y0, &ly) || !SplitPosition(bx, dx, W, &x0, &lx)) {
    const float v = m * 0.0f;
    for (int64_t i = 0; i < len; ++i) dst[i] = v;
    return;
  }
  const float hy = 1.0f - ly, hx = 1.0f - lx;
  if (y0 >= 0 && y0 + 1 < H && x0 >= 0 && x0 + 1 < W) {  // interior: all 4 corners (common case)
    const float* __restrict a = img + (y0 * W + x0) * C;
    const float* __restrict b = a + C;
    const float* __restrict c = a + W * C;
    const float* __restrict d = c + C;
    const float wa = hy * hx, wb = hy * lx, wc = ly * hx, wd = ly * lx;
    for (int64_t i = 0; i < len; ++i) dst[i] = m * (wa * a[i] + wb * b[i] + wc * c[i] + wd * d[i]);
    return;
  }
  const float* s[4];
  float w[4];
  int n = 0;
  if (y0 >= 0) {
    const float* row = img + y0 * W * C;
    if (x0 >= 0) { s[n] = row + x0 * C; w[n++] = hy * hx; }
    if (x0 + 1 < W) { s[n] = row + (x0 + 1) * C; w[n++] = hy * lx; }
  }
  if (y0 + 1 < H) {
    const float* row = img + (y0 + 1) * W * C;
    if (x0 >= 0) { s[n] = row + x0 * C; w[n++] = ly * hx; }
    if (x0 + 1 < W) { s[n] = row + (x0 + 1) * C; w[n++] = ly * lx; }
  }
  switch (n) {
    case 3: {
      const float* __restrict a = s[0]; const float* __restrict b = s[1]; const float* __restrict c = s[2];
      const float wa = w[0], wb = w[1], wc = w[2];
      for (int64_t i = 0; i < len; ++i) dst[i] = m * (wa * a[i] + wb * b[i] + wc * c[i]);
      break;
    }
    case 2: {
      const float* __restrict a = s[0]; const float* __restrict b = s[1];
      const float wa = w[0], wb = w[1];
      for (int64_t i = 0; i < len; ++i) dst[i] = m * (wa * a[i] + wb * b[i]);
      break;
    }
    case 1: {
      const float* __restrict a = s[0];
      const float wa = w[0];
      for (int64_t i = 0; i < len; ++i) dst[i] = m * (wa * a[i]);
      break;
    }
    default: {  // (unreachable: a sampling position has at least one corner inside)
      const float v = m * 0.0f;
      for (int64_t i = 0; i < len; ++i) dst[i] = v;
    }
  }
}

// Fills col[(p - p0) * Kd + k * Cg + c] for output pixels [p0, p1) of sample n, group gi.
// (noinline: keeps it visible in profiles; it is called once per task.)
__attribute__((noinline)) void BuildColumns(const ConvJob& job, int64_t n, int64_t gi, int64_t p0, int64_t p1,
                                            float* __restrict col) {
  const ConvArgs& a = *job.a;
  const ConvGeometry& g = a.g;
  const int64_t Cg = job.Cg, Kd = job.Kd, KK = job.KK, P = job.P;
  const int64_t c_begin = gi * Cg;
  const float* img = a.x_nhwc + n * g.H * g.W * g.C;
  int64_t oh = p0 / g.OW, ow = p0 % g.OW;
  if (a.offset == nullptr) {
    const size_t bytes = sizeof(float) * static_cast<size_t>(Cg);
    for (int64_t p = p0; p < p1; ++p) {
      float* colp = col + (p - p0) * Kd;
      const int64_t ih0 = oh * g.SH - g.PT, iw0 = ow * g.SW - g.PL;
      for (int64_t ky = 0; ky < g.KH; ++ky) {
        const int64_t ih = ih0 + ky * g.DH;
        for (int64_t kx = 0; kx < g.KW; ++kx) {
          const int64_t iw = iw0 + kx * g.DW;
          float* dst = colp + (ky * g.KW + kx) * Cg;
          if (ih >= 0 && ih < g.H && iw >= 0 && iw < g.W)
            std::memcpy(dst, img + (ih * g.W + iw) * g.C + c_begin, bytes);
          else
            std::memset(dst, 0, bytes);
        }
      }
      if (++ow == g.OW) { ow = 0; ++oh; }
    }
    return;
  }
  // Deformable: the channel range of group gi may span several offset groups.
  const int64_t og_first = c_begin / job.Cog, og_last = (c_begin + Cg - 1) / job.Cog;
  const float* off_n = a.offset + n * g.OG * 2 * KK * P;
  const float* mask_n = a.mask ? a.mask + n * g.OG * KK * P : nullptr;
  for (int64_t p = p0; p < p1; ++p) {
    float* colp = col + (p - p0) * Kd;
    const int64_t ih0 = oh * g.SH - g.PT, iw0 = ow * g.SW - g.PL;
    for (int64_t og = og_first; og <= og_last; ++og) {
      const int64_t c0 = Max(og * job.Cog, c_begin), c1 = Min((og + 1) * job.Cog, c_begin + Cg);
      const float* off = off_n + og * 2 * KK * P + p;
      const float* msk = mask_n ? mask_n + og * KK * P + p : nullptr;
      for (int64_t ky = 0; ky < g.KH; ++ky) {
        for (int64_t kx = 0; kx < g.KW; ++kx) {
          const int64_t k = ky * g.KW + kx;
          const float m = msk ? msk[k * P] : 1.0f;
          SampleBilinear(colp + k * Cg + (c0 - c_begin), img + c0, c1 - c0, g.H, g.W, g.C, ih0 + ky * g.DH,
                         off[(2 * k) * P], iw0 + kx * g.DW, off[(2 * k + 1) * P], m);
        }
      }
    }
    if (++ow == g.OW) { ow = 0; ++oh; }
  }
}

#if EDGECONV_MICROKERNEL
// ct[r][0:16] (+)= sum_d a[r][d] * b[d][0:16] for r < R (a: R rows with stride lda, b: [kc][16]).
template <int R>
inline void MicroKernel(int64_t kc, const float* __restrict a, int64_t lda, const float* __restrict b,
                        float* __restrict c, int64_t ldc, bool first) {
  __m256 c0[R], c1[R];
  const float* ar[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    c0[r] = _mm256_setzero_ps();
    c1[r] = _mm256_setzero_ps();
    ar[r] = a + r * lda;
  }
#pragma GCC unroll 2
  for (int64_t d = 0; d < kc; ++d) {
    const __m256 b0 = _mm256_loadu_ps(b + 16 * d), b1 = _mm256_loadu_ps(b + 16 * d + 8);
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const __m256 av = _mm256_broadcast_ss(ar[r] + d);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * ldc;
    if (first) {
      _mm256_storeu_ps(cr, c0[r]);
      _mm256_storeu_ps(cr + 8, c1[r]);
    } else {
      _mm256_storeu_ps(cr, _mm256_add_ps(_mm256_loadu_ps(cr), c0[r]));
      _mm256_storeu_ps(cr + 8, _mm256_add_ps(_mm256_loadu_ps(cr + 8), c1[r]));
    }
  }
}

void MicroKernelRows(int rows, int64_t kc, const float* a, int64_t lda, const float* b, float* c, int64_t ldc,
                     bool first) {
  switch (rows) {
    case 6: MicroKernel<6>(kc, a, lda, b, c, ldc, first); break;
    case 5: MicroKernel<5>(kc, a, lda, b, c, ldc, first); break;
    case 4: MicroKernel<4>(kc, a, lda, b, c, ldc, first); break;
    case 3: MicroKernel<3>(kc, a, lda, b, c, ldc, first); break;
    case 2: MicroKernel<2>(kc, a, lda, b, c, ldc, first); break;
    default: MicroKernel<1>(kc, a, lda, b, c, ldc, first); break;
  }
}

// Y[n, gi*Og + o, p0 + p] = ct[p][o] + bias[o]: transposed store of the GEMM result.
__attribute__((noinline)) void WriteOutput(const ConvJob& job, int64_t n, int64_t gi, int64_t p0, int64_t T,
                                           const float* ct) {
  const ConvArgs& a = *job.a;
  float* y = a.y + (n * a.g.O + gi * job.Og) * job.P + p0;
  Transpose(ct, T, job.Og, job.OgPad, y, job.P);
  if (a.bias != nullptr) {
    const float* bias = a.bias + n * a.bias_batch_stride + gi * job.Og;
    for (int64_t o = 0; o < job.Og; ++o) {
      float* yr = y + o * job.P;
      const float bo = bias[o];
      for (int64_t p = 0; p < T; ++p) yr[p] += bo;
    }
  }
}

// Y[n, gi*Og + o, p0 + p] = sum_d col[p][d] * Wp[o][d] + bias[o] for p < T.
void TileGemm(const ConvJob& job, int64_t n, int64_t gi, int64_t p0, int64_t T, const float* col, float* ct) {
  const ConvArgs& a = *job.a;
  const int64_t Kd = job.Kd, OgPad = job.OgPad, nop = OgPad / kPanel;
  const float* wp = a.w_packed + n * a.w_batch_stride + gi * OgPad * Kd;
  for (int64_t d0 = 0; d0 < Kd; d0 += kKC) {
    const int64_t kc = Min(kKC, Kd - d0);
    const bool first = d0 == 0;
    for (int64_t op = 0; op < nop; ++op) {
      const float* b = wp + op * Kd * kPanel + d0 * kPanel;
      for (int64_t pb = 0; pb < T; pb += kRows) {
        const int rows = static_cast<int>(Min(kRows, T - pb));
        MicroKernelRows(rows, kc, col + pb * Kd + d0, Kd, b, ct + pb * OgPad + op * kPanel, OgPad, first);
      }
    }
  }
  WriteOutput(job, n, gi, p0, T, ct);
}
#else
void TileGemm(const ConvJob& job, int64_t n, int64_t gi, int64_t p0, int64_t T, const float* col, float*) {
  const ConvArgs& a = *job.a;
  const float* wg = a.w_packed + n * a.w_batch_stride + gi * job.Og * job.Kd;
  Eigen::Map<const RowMat> Wm(wg, job.Og, job.Kd);
  Eigen::Map<const RowMat> Cm(col, T, job.Kd);
  Eigen::Map<RowMat, 0, OStride> Ym(a.y + (n * a.g.O + gi * job.Og) * job.P + p0, job.Og, T, OStride(job.P));
  Ym.noalias() = Wm * Cm.transpose();
  if (a.bias != nullptr) {
    Eigen::Map<const Vec> b(a.bias + n * a.bias_batch_stride + gi * job.Og, job.Og);
    Ym.colwise() += b;
  }
}
#endif

void ConvTask(void* user, size_t task) {
  ConvJob& job = *static_cast<ConvJob*>(user);
  const ConvGeometry& g = job.a->g;
  const int64_t t = static_cast<int64_t>(task);
  const int64_t tile = t % job.ntiles;
  const int64_t gi = (t / job.ntiles) % g.G;
  const int64_t n = t / (job.ntiles * g.G);
  const int64_t p0 = tile * job.tile, p1 = Min(p0 + job.tile, job.P), T = p1 - p0;
  try {
    float* col = ThreadScratch(static_cast<size_t>(job.col_floats + job.tile * job.OgPad));
    if (col == nullptr) {
      __atomic_store_n(&job.failed, 1, __ATOMIC_RELAXED);
      return;
    }
    BuildColumns(job, n, gi, p0, p1, col);
    TileGemm(job, n, gi, p0, T, col, col + job.col_floats);
  } catch (...) {  // std::bad_alloc from Eigen's temporary buffers: never let it cross the pool
    __atomic_store_n(&job.failed, 1, __ATOMIC_RELAXED);
  }
  TrimThreadScratch();
}

// Output pixels per task. The GEMM reads the column tile in K-slices of kKC columns: a slice
// (tile x kKC) must stay in L2 while all weight panels pass over it, and a larger tile amortises
// streaming the weights (Og x Kd, up to MBs) from L3 once per tile. The whole tile is capped so that
// sampling writes do not go too far. With few tasks the tile count is made even, so that 2 (or 4)
// threads get balanced work.
int64_t ChooseTile(int64_t P, int64_t Kd, int64_t outer_tasks) {
  int64_t t = Min(kSliceFloats / Min(Kd, kKCTile), kTileCapFloats / Kd);
  t = Max(t, kRows);
  int64_t ntiles = (P + t - 1) / t;
  if (ntiles > 1 && ntiles < 16 && outer_tasks < 4 && ntiles % 2 == 1) ++ntiles;
  t = RoundUp((P + ntiles - 1) / ntiles, kRows);
  return Max(1, Min(t, P));
}

ConvJob MakeConvJob(const ConvArgs* a) {
  const ConvGeometry& g = a->g;
  ConvJob job{};
  job.a = a;
  job.Og = g.O / g.G;
  job.Cg = g.C / g.G;
  job.Cog = g.C / g.OG;
  job.KK = g.KH * g.KW;
  job.Kd = job.KK * job.Cg;
  job.P = g.OH * g.OW;
  job.OgPad = RoundUp(job.Og, kPanel);
  job.tile = ChooseTile(job.P, job.Kd, g.N * g.G);
  job.ntiles = (job.P + job.tile - 1) / job.tile;
  job.col_floats = RoundUp(job.tile * job.Kd, 16);
  job.failed = 0;
  return job;
}

int64_t ConvScratchFloats(const ConvGeometry& g) {
  ConvArgs a{};
  a.g = g;
  const ConvJob job = MakeConvJob(&a);
  return job.col_floats + job.tile * job.OgPad;
}

int Conv2d(const ConvArgs& a, const Runner& runner) {
  const ConvGeometry& g = a.g;
  if (g.N == 0 || g.O == 0 || g.OH * g.OW == 0) return 0;
  ConvJob job = MakeConvJob(&a);
  runner.Run(&ConvTask, static_cast<size_t>(g.N * g.G * job.ntiles), &job);
  return job.failed;
}

struct TransposeJob {
  const float* x;
  float* out;
  int64_t C, HW, block;
  int64_t nblocks;
};

void TransposeTask(void* user, size_t task) {
  const TransposeJob& j = *static_cast<const TransposeJob*>(user);
  const int64_t n = static_cast<int64_t>(task) / j.nblocks, b = static_cast<int64_t>(task) % j.nblocks;
  const int64_t s0 = b * j.block, s1 = Min(s0 + j.block, j.HW);
  // x[n]: [C][HW] -> out[n]: [HW][C], spatial block [s0, s1)
  Transpose(j.x + n * j.C * j.HW + s0, j.C, s1 - s0, j.HW, j.out + n * j.C * j.HW + s0 * j.C, j.C);
}

void NchwToNhwc(const float* x, float* out, int64_t N, int64_t C, int64_t HW, const Runner& runner) {
  if (N == 0 || C == 0 || HW == 0) return;
  TransposeJob j{x, out, C, HW, 0, 0};
  j.block = RoundUp(Max(64, (16 * 1024) / Max(1, C)), 8);
  j.nblocks = (HW + j.block - 1) / j.block;
  runner.Run(&TransposeTask, static_cast<size_t>(N * j.nblocks), &j);
}

struct PackJob {
  const float* w;
  const float* a;  // nullptr: pack N weights; else out[n] = pack(sum_e a[n, e] W[e])
  float* out;
  int64_t K, O, G, Og, OgPad, Cg, KK, Kd;
  int* failed;
};

// Scratch of one PackTask: a panel in [KK][Cg] order plus one mixed row.
int64_t PackScratchFloats(int64_t, int64_t, int64_t Cg, int64_t KK) { return kPanel * Cg * KK + Cg * KK; }

// One panel of kPanel output channels of weight n, group gi: out[d][jj] = W[n, o(jj), c, k] for
// d = k*Cg + c. Rows are reordered to [KK][Cg] in scratch, then transposed into the panel.
void PackTask(void* user, size_t task) {
  const PackJob& j = *static_cast<const PackJob*>(user);
  const int64_t nop = j.OgPad / kPanel;
  const int64_t op = static_cast<int64_t>(task) % nop;
  const int64_t gi = (static_cast<int64_t>(task) / nop) % j.G;
  const int64_t n = static_cast<int64_t>(task) / (nop * j.G);
  const int64_t per_o = j.Cg * j.KK;
  float* __restrict dst = j.out + ((n * j.G + gi) * nop + op) * j.Kd * kPanel;
  const int64_t rows = Min(kPanel, j.Og - op * kPanel);
  float* scratch = ThreadScratch(static_cast<size_t>(PackScratchFloats(j.O, j.G, j.Cg, j.KK)));
  if (scratch == nullptr) {
    __atomic_store_n(j.failed, 1, __ATOMIC_RELAXED);
    return;
  }
  float* __restrict tmp = kPanel == 1 ? dst : scratch;
  float* __restrict mixed = scratch + kPanel * j.Kd;
  for (int64_t jj = 0; jj < rows; ++jj) {
    const int64_t o = gi * j.Og + op * kPanel + jj;
    const float* __restrict src;  // [Cg][KK]
    if (j.a == nullptr) {
      src = j.w + (n * j.O + o) * per_o;
    } else {  // mix the experts' rows first (contiguous, vectorised)
      const float* an = j.a + n * j.K;
      const float a0 = an[0];
      const float* __restrict w0 = j.w + o * per_o;
      for (int64_t i = 0; i < per_o; ++i) mixed[i] = a0 * w0[i];
      for (int64_t e = 1; e < j.K; ++e) {
        const float ae = an[e];
        const float* __restrict we = j.w + (e * j.O + o) * per_o;
        for (int64_t i = 0; i < per_o; ++i) mixed[i] += ae * we[i];
      }
      src = mixed;
    }
    float* __restrict t = tmp + jj * j.Kd;  // [KK][Cg]
    for (int64_t c = 0; c < j.Cg; ++c)
      for (int64_t k = 0; k < j.KK; ++k) t[k * j.Cg + c] = src[c * j.KK + k];
  }
#if EDGECONV_MICROKERNEL
  for (int64_t i = rows * j.Kd; i < kPanel * j.Kd; ++i) tmp[i] = 0.0f;  // padding channels
  Transpose(tmp, kPanel, j.Kd, j.Kd, dst, kPanel);
#endif
  TrimThreadScratch();
}

int64_t PackedWeightsSize(int64_t O, int64_t G, int64_t Cg, int64_t KK) {
  return G * RoundUp(O / G, kPanel) * Cg * KK;
}

int PackWeights(const float* w, const float* a, float* out, int64_t N, int64_t K, int64_t O, int64_t G, int64_t Cg,
                int64_t KK, const Runner& runner) {
  if (N == 0 || O == 0) return 0;
  const int64_t Og = O / G;
  int failed = 0;
  PackJob j{w, a, out, K, O, G, Og, RoundUp(Og, kPanel), Cg, KK, Cg * KK, &failed};
  runner.Run(&PackTask, static_cast<size_t>(N * G * (j.OgPad / kPanel)), &j);
  return failed;
}

struct MixJob {
  const float* packed;
  const float* a;
  float* out;
  int64_t K, size, chunk, nchunks;
};

void MixTask(void* user, size_t task) {
  const MixJob& j = *static_cast<const MixJob*>(user);
  const int64_t n = static_cast<int64_t>(task) / j.nchunks, b = static_cast<int64_t>(task) % j.nchunks;
  const int64_t i0 = b * j.chunk, i1 = Min(i0 + j.chunk, j.size);
  float* __restrict out = j.out + n * j.size;
  const float* an = j.a + n * j.K;
  {
    const float a0 = an[0];
    const float* __restrict p = j.packed;
    for (int64_t i = i0; i < i1; ++i) out[i] = a0 * p[i];
  }
  for (int64_t e = 1; e < j.K; ++e) {
    const float ae = an[e];
    const float* __restrict p = j.packed + e * j.size;
    for (int64_t i = i0; i < i1; ++i) out[i] += ae * p[i];
  }
}

void MixWeights(const float* packed, int64_t K, int64_t size, const float* a, int64_t N, float* out,
                const Runner& runner) {
  if (N == 0 || K == 0 || size == 0) return;
  MixJob j{packed, a, out, K, size, 16 * 1024, 0};
  j.nchunks = (size + j.chunk - 1) / j.chunk;
  runner.Run(&MixTask, static_cast<size_t>(N * j.nchunks), &j);
}

// ---- depthwise convolution (C/G == 1): direct loops on the NCHW planes ----
//
// For each tap (ky, kx) the outputs whose input pixel is inside the image form a rectangle
// [oh0, oh1) x [ow0, ow1), computed once per call (the same for every plane). Two loops per plane:
// tap by tap, y += w * x over the rectangle's rows (any variant; the baseline one's only loop), and
// on AVX2, for rows of <= kByRowMaxWidth outputs, each row accumulated over all taps in registers.

// First i >= 0 with i * stride + off >= 0, at most `out`.
inline int64_t FirstInside(int64_t off, int64_t stride, int64_t out) {
  return off >= 0 ? 0 : Min(out, (-off + stride - 1) / stride);
}
// One past the last i < out with i * stride + off <= size - 1, at least `first`.
inline int64_t EndInside(int64_t off, int64_t stride, int64_t size, int64_t out, int64_t first) {
  if (off > size - 1) return first;
  return Max(first, Min(out, (size - 1 - off) / stride + 1));
}

#if EDGECONV_MICROKERNEL
// Lanes [0, k) set, for 0 < k <= 8.
inline __m256i TailMask(int64_t k) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
#endif

// y[i] += w * x[i * s] for i < n.
inline void AxpyRow(float* __restrict y, const float* __restrict x, int64_t n, int64_t s, float w) {
  int64_t i = 0;
#if EDGECONV_MICROKERNEL
  // The tail of < 8 (stride 2: <= 8) outputs is one masked vector (masked-out lanes are never
  // read), not a scalar loop.
  const __m256 wv = _mm256_set1_ps(w);
  if (s == 1) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    if (i < n) {
      const __m256i m = TailMask(n - i);
      _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(wv, _mm256_maskload_ps(x + i, m), _mm256_maskload_ps(y + i, m)));
    }
    return;
  }
  if (s == 2) {
    // 16 loaded floats hold 8 even ones; the last load ends at x[2i + 15] <= x[2(n-1)] (i + 8 < n):
    // never past the row's last read pixel.
    for (; i + 8 < n; i += 8) {
      const __m256 a = _mm256_loadu_ps(x + 2 * i), b = _mm256_loadu_ps(x + 2 * i + 8);
      const __m256 even = _mm256_castpd_ps(_mm256_permute4x64_pd(
          _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
      _mm256_storeu_ps(y + i, _mm256_fmadd_ps(wv, even, _mm256_loadu_ps(y + i)));
    }
    const __m256i m = TailMask(n - i);  // 1 to 8 lanes
    const __m256 xv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x + 2 * i,
                                               _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14), _mm256_castsi256_ps(m), 4);
    _mm256_maskstore_ps(y + i, m, _mm256_fmadd_ps(wv, xv, _mm256_maskload_ps(y + i, m)));
    return;
  }
#endif
  for (; i < n; ++i) y[i] += w * x[i * s];
}

// y += v outside the rectangle [oh0, oh1) x [ow0, ow1) of the OH x OW plane.
void AddOutside(float* y, int64_t OH, int64_t OW, int64_t oh0, int64_t oh1, int64_t ow0, int64_t ow1, float v) {
  for (int64_t oh = 0; oh < OH; ++oh) {
    float* row = y + oh * OW;
    const bool inside = oh >= oh0 && oh < oh1;
    for (int64_t ow = 0; ow < OW; ++ow)
      if (!inside || ow < ow0 || ow >= ow1) row[ow] += v;
  }
}

// Output range [first, end) of each kernel row ky (rows[2 ky], rows[2 ky + 1]) and column kx
// (cols[...]) whose input pixel is inside the image: the same for every plane, computed once per call.
struct DepthwiseJob {
  const DepthwiseArgs* a;
  int64_t planes, per_task;
  const int64_t* rows;
  const int64_t* cols;
  const int32_t* lane_masks;  // AVX2, rows of <= kByRowMaxWidth outputs: [KW][kByRowMaxWidth], -1 where
                              // output ow reads a pixel (inside cols[kx]), else 0
};

// Y[n, o] = b + sum over taps of w[tap] * (input pixel or padding zero), tap by tap over the
// plane (y += w * x row by row). Baseline variant, and any variant for non-finite weights.
void DepthwisePlaneByTap(const DepthwiseJob& j, const float* x, const float* w, float b, float* y) {
  const ConvGeometry& g = j.a->g;
  for (int64_t i = 0; i < g.OH * g.OW; ++i) y[i] = b;
  for (int64_t ky = 0; ky < g.KH; ++ky) {
    const int64_t offy = ky * g.DH - g.PT, oh0 = j.rows[2 * ky], oh1 = j.rows[2 * ky + 1];
    for (int64_t kx = 0; kx < g.KW; ++kx) {
      const float wt = w[ky * g.KW + kx];
      const int64_t offx = kx * g.DW - g.PL, ow0 = j.cols[2 * kx], ow1 = j.cols[2 * kx + 1];
      // IEEE like the column path: an Inf/NaN weight times a padding zero is NaN.
      if (!std::isfinite(wt)) AddOutside(y, g.OH, g.OW, oh0, oh1, ow0, ow1, wt * 0.0f);
      if (ow0 == ow1) continue;
      const float* xr = x + (oh0 * g.SH + offy) * g.W + ow0 * g.SW + offx;
      for (int64_t oh = oh0; oh < oh1; ++oh, xr += g.SH * g.W)
        AxpyRow(y + oh * g.OW + ow0, xr, ow1 - ow0, g.SW, wt);
    }
  }
}

// Rows of at most this many outputs are accumulated in registers by the AVX2 variant.
constexpr int64_t kByRowMaxWidth = 64;

#if EDGECONV_MICROKERNEL
// The same sum with finite weights, for rows of at most kByRowMaxWidth outputs: the tap-by-tap
// loop reloads each short y row right after storing it (a store-forwarding stall per vector, worse
// after a masked store; 5x slower than this at 14x14). Here the CN vectors of 8 outputs of a row
// are accumulated over all taps in registers (CN independent FMA chains) and stored once. Lanes
// whose pixel is outside the image are masked out of the loads (never read; the masks depend only
// on kx and the vector, so they are computed once per call and the loop has no bounds branch).
template <int CN>
void DepthwiseRow(const DepthwiseJob& j, const float* x, const float* w, float b, float* yr, int64_t oh,
                  __m256i stride_idx) {
  const ConvGeometry& g = j.a->g;
  __m256 acc[CN];
#pragma GCC unroll 8
  for (int q = 0; q < CN; ++q) acc[q] = _mm256_set1_ps(b);
  for (int64_t ky = 0; ky < g.KH; ++ky) {
    if (oh < j.rows[2 * ky] || oh >= j.rows[2 * ky + 1]) continue;
    const float* xr = x + (oh * g.SH + ky * g.DH - g.PT) * g.W;
    for (int64_t kx = 0; kx < g.KW; ++kx) {
      const __m256 wv = _mm256_set1_ps(w[ky * g.KW + kx]);
      // pixel of lane l of vector q: xr[(8q + l) * SW + kx * DW - PL], read for the mask's lanes
      const float* p = xr + (kx * g.DW - g.PL);
      const int32_t* mk = j.lane_masks + kByRowMaxWidth * kx;
#pragma GCC unroll 8
      for (int q = 0; q < CN; ++q) {
        const __m256i m = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(mk + 8 * q));
        const float* pq = p + 8 * q * g.SW;
        const __m256 xv = g.SW == 1 ? _mm256_maskload_ps(pq, m)
                                    : _mm256_mask_i32gather_ps(_mm256_setzero_ps(), pq, stride_idx,
                                                               _mm256_castsi256_ps(m), 4);
        acc[q] = _mm256_fmadd_ps(wv, xv, acc[q]);
      }
    }
  }
#pragma GCC unroll 8
  for (int q = 0; q < CN; ++q) {
    if (8 * q + 8 <= g.OW)
      _mm256_storeu_ps(yr + 8 * q, acc[q]);
    else
      _mm256_maskstore_ps(yr + 8 * q, TailMask(g.OW - 8 * q), acc[q]);
  }
}

void DepthwisePlaneByRow(const DepthwiseJob& j, const float* x, const float* w, float b, float* y) {
  const ConvGeometry& g = j.a->g;
  const __m256i stride_idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                _mm256_set1_epi32(static_cast<int>(g.SW)));  // SW <= 2^24
  for (int64_t oh = 0; oh < g.OH; ++oh) {
    float* yr = y + oh * g.OW;
    switch ((g.OW + 7) / 8) {
      case 1: DepthwiseRow<1>(j, x, w, b, yr, oh, stride_idx); break;
      case 2: DepthwiseRow<2>(j, x, w, b, yr, oh, stride_idx); break;
      case 3: DepthwiseRow<3>(j, x, w, b, yr, oh, stride_idx); break;
      case 4: DepthwiseRow<4>(j, x, w, b, yr, oh, stride_idx); break;
      case 5: DepthwiseRow<5>(j, x, w, b, yr, oh, stride_idx); break;
      case 6: DepthwiseRow<6>(j, x, w, b, yr, oh, stride_idx); break;
      case 7: DepthwiseRow<7>(j, x, w, b, yr, oh, stride_idx); break;
      default: DepthwiseRow<8>(j, x, w, b, yr, oh, stride_idx); break;
    }
  }
}
#endif

void DepthwiseTask(void* user, size_t task) {
  const DepthwiseJob& j = *static_cast<const DepthwiseJob*>(user);
  const ConvGeometry& g = j.a->g;
  const int64_t Og = g.O / g.G, KK = g.KH * g.KW;
  const int64_t p0 = static_cast<int64_t>(task) * j.per_task, p1 = Min(p0 + j.per_task, j.planes);
  for (int64_t p = p0; p < p1; ++p) {
    const int64_t n = p / g.O, o = p % g.O;
    const float* x = j.a->x + (n * g.C + o / Og) * g.H * g.W;
    const float* w = j.a->w + p * KK;
    float* y = j.a->y + p * g.OH * g.OW;
    const float b = j.a->bias != nullptr ? j.a->bias[p] : 0.0f;
#if EDGECONV_MICROKERNEL
    bool finite = true;  // (the tap-by-tap loop implements the padding rule for Inf/NaN weights)
    for (int64_t k = 0; k < KK; ++k) finite = finite && std::isfinite(w[k]);
    if (finite && g.OW <= kByRowMaxWidth) {
      DepthwisePlaneByRow(j, x, w, b, y);
      continue;
    }
#endif
    DepthwisePlaneByTap(j, x, w, b, y);
  }
}

// Planes per task: at least ~32K multiply-adds per task, so that the pool's per-task cost stays
// small next to the work (a 14x14 5x5 plane is only 4.9K).
constexpr int64_t kDepthwiseTaskMacs = 32 * 1024;

#if EDGECONV_MICROKERNEL
constexpr bool kLaneMasks = true;
#else
constexpr bool kLaneMasks = false;
#endif

// Owner of a new[] array, nullptr when empty or out of memory (a local type: no standard-library
// template instantiated per ISA variant, see kernels.h).
template <typename T>
struct Array {
  T* p;
  explicit Array(size_t n) : p(n > 0 ? new (std::nothrow) T[n] : nullptr) {}
  ~Array() { delete[] p; }
  Array(const Array&) = delete;
  Array& operator=(const Array&) = delete;
};

// int64 entries of the per-call tables: output ranges of the kernel rows and columns, and the
// lane masks (int32, [KW][kByRowMaxWidth]) of the AVX2 variant.
int64_t DepthwiseRangeInts(int64_t KH, int64_t KW) {
  return 2 * (KH + KW) + (kLaneMasks ? KW * kByRowMaxWidth / 2 : 0);
}

int DepthwiseConv2d(const DepthwiseArgs& a, const Runner& runner) {
  const ConvGeometry& g = a.g;
  const int64_t P = g.OH * g.OW, KK = g.KH * g.KW;
  if (g.N == 0 || g.O == 0 || P == 0) return 0;
  const bool by_row = kLaneMasks && g.OW <= kByRowMaxWidth;
  const Array<int64_t> range_table(static_cast<size_t>(2 * (g.KH + g.KW)));
  const Array<int32_t> mask_table(by_row ? static_cast<size_t>(g.KW * kByRowMaxWidth) : 0);
  int64_t* ranges = range_table.p;
  int32_t* masks = mask_table.p;
  if (ranges == nullptr || (by_row && masks == nullptr)) return 1;
  for (int64_t ky = 0; ky < g.KH; ++ky) {
    const int64_t off = ky * g.DH - g.PT;
    ranges[2 * ky] = FirstInside(off, g.SH, g.OH);
    ranges[2 * ky + 1] = EndInside(off, g.SH, g.H, g.OH, ranges[2 * ky]);
  }
  int64_t* cols = ranges + 2 * g.KH;
  for (int64_t kx = 0; kx < g.KW; ++kx) {
    const int64_t off = kx * g.DW - g.PL;
    cols[2 * kx] = FirstInside(off, g.SW, g.OW);
    cols[2 * kx + 1] = EndInside(off, g.SW, g.W, g.OW, cols[2 * kx]);
    for (int64_t ow = 0; by_row && ow < kByRowMaxWidth; ++ow)
      masks[kByRowMaxWidth * kx + ow] = ow >= cols[2 * kx] && ow < cols[2 * kx + 1] ? -1 : 0;
  }
  const int64_t T = kDepthwiseTaskMacs;  // (P * KK is only formed when both are < T: no overflow)
  DepthwiseJob j{&a, g.N * g.O, P >= T || KK >= T || P * KK >= T ? 1 : T / (P * KK), ranges, cols, masks};
  runner.Run(&DepthwiseTask, static_cast<size_t>((j.planes + j.per_task - 1) / j.per_task), &j);
  return 0;
}

}  // namespace

#define EDGECONV_STR2(x) #x
#define EDGECONV_STR(x) EDGECONV_STR2(x)
extern const KernelTable kTable = {EDGECONV_STR(EDGECONV_KERN_NS), &Conv2d, &NchwToNhwc, &PackedWeightsSize,
                                   &PackWeights, &MixWeights, &ConvScratchFloats, &PackScratchFloats,
                                   &DepthwiseConv2d, &DepthwiseRangeInts};

}  // namespace EDGECONV_KERN_NS
}  // namespace kern
}  // namespace edgeconv
