// ISA-neutral interface of the compute kernels.
//
// kernels_impl.cc is compiled once per instruction-set variant (generic x86-64 / aarch64 baseline,
// and on x86-64 also AVX2+FMA) into its own namespace, with Eigen renamed per variant, so that no
// inline function compiled for one ISA can be picked by the linker for another. This header must
// therefore stay free of onnxruntime and standard-library templates: plain structs and pointers.
#pragma once

#include <cstddef>
#include <cstdint>

namespace edgeconv {
namespace kern {

// Runs fn(user, i) for i in [0, total), possibly in parallel (onnxruntime's intra-op pool).
typedef void (*TaskFn)(void* user, size_t i);
struct Runner {
  void (*parallel_for)(void* ctx, TaskFn fn, size_t total, void* user);
  void* ctx;
  void Run(TaskFn fn, size_t total, void* user) const { parallel_for(ctx, fn, total, user); }
};

// Geometry of a 2-D convolution, all validated by the caller (positive sizes, divisibility).
struct ConvGeometry {
  int64_t N, C, H, W;   // input
  int64_t O;            // output channels
  int64_t KH, KW;       // kernel
  int64_t SH, SW;       // strides
  int64_t PT, PL;       // top/left pads (bottom/right only enter OH/OW)
  int64_t DH, DW;       // dilations
  int64_t G;            // groups
  int64_t OG;           // offset groups (deformable only, else 1)
  int64_t OH, OW;       // output spatial size
};

// One convolution call. The weights must already be packed by the same table's pack_weights
// (layout private to the ISA variant; reduction index d = tap * C/G + channel, matching the
// column layout built from the NHWC input).
struct ConvArgs {
  ConvGeometry g;
  const float* x_nhwc;       // [N, H, W, C]
  const float* w_packed;     // packed weights (+ n * w_batch_stride)
  int64_t w_batch_stride;    // 0: shared by the batch; else per-sample weights
  const float* bias;         // [O] (+ n * bias_batch_stride) or nullptr
  int64_t bias_batch_stride;
  const float* offset;       // [N, OG*2*KH*KW, OH, OW] or nullptr (plain convolution)
  const float* mask;         // [N, OG*KH*KW, OH, OW] or nullptr
  float* y;                  // [N, O, OH, OW]
};

// One depthwise convolution call (C/G == 1: output channel o reads input channel o / (O/G)),
// computed directly on the NCHW planes: no packing, no column buffer, no scratch.
struct DepthwiseArgs {
  ConvGeometry g;
  const float* x;     // [N, C, H, W]
  const float* w;     // [N, O, KH*KW]: per-sample weights
  const float* bias;  // [N, O] or nullptr
  float* y;           // [N, O, OH, OW]
};

// Kernel table of one ISA variant.
struct KernelTable {
  const char* isa;
  // Y = conv(X, W) (+ bias); deformable when args.offset != nullptr. Returns 0 on success,
  // nonzero when scratch memory could not be allocated.
  int (*conv2d)(const ConvArgs& args, const Runner& runner);
  // [N, C, H, W] -> [N, H, W, C]
  void (*nchw_to_nhwc)(const float* x, float* out, int64_t N, int64_t C, int64_t HW, const Runner& runner);
  // Number of floats of one packed weight.
  int64_t (*packed_weights_size)(int64_t O, int64_t G, int64_t Cg, int64_t KK);
  // a == nullptr: packs N independent weights W [N, O, Cg, KH*KW] into out [N, packed size];
  // else out[n] = pack(sum_e a[n, e] * W[e]) for W [K, O, Cg, KH*KW], a [N, K].
  // Returns nonzero when scratch memory could not be allocated.
  int (*pack_weights)(const float* w, const float* a, float* out, int64_t N, int64_t K, int64_t O, int64_t G,
                      int64_t Cg, int64_t KK, const Runner& runner);
  // out[n, i] = sum_e a[n, e] * packed[e, i] for n < N, e < K, i < size (dynamic convolution:
  // packing is linear, so mixing packed expert weights gives the packed mixed weight).
  void (*mix_weights)(const float* packed, int64_t K, int64_t size, const float* a, int64_t N, float* out,
                      const Runner& runner);
  // Floats of thread scratch one conv2d task (column tile + GEMM tile) / one pack_weights task
  // needs, so that the caller can check them against its scratch limit before running.
  int64_t (*conv_scratch_floats)(const ConvGeometry& g);
  int64_t (*pack_scratch_floats)(int64_t O, int64_t G, int64_t Cg, int64_t KK);
  // Y = depthwise conv(X, W) (+ bias), C/G == 1 (any O/G): one direct loop per (sample, output
  // channel) plane, the same IEEE semantics as conv2d (an Inf/NaN weight times the padding zeros
  // gives NaN). Returns nonzero when its per-call tables could not be allocated.
  int (*depthwise_conv2d)(const DepthwiseArgs& args, const Runner& runner);
  // int64 entries of its per-call tables (checked by the caller against its memory limit).
  int64_t (*depthwise_range_ints)(int64_t KH, int64_t KW);
};

// Scratch memory owned by the calling thread (grown on demand, 64-byte aligned); nullptr on
// allocation failure. Implemented in common.cc (ISA-neutral code).
float* ThreadScratch(size_t floats);
// Releases the calling thread's scratch when it is larger than kRetainedScratchBytes (called at
// the end of every task: one large call must not pin its peak scratch on every pool thread).
constexpr size_t kRetainedScratchBytes = size_t{8} << 20;
void TrimThreadScratch();

}  // namespace kern
}  // namespace edgeconv

// Declarations of the per-ISA tables (defined in kernels_impl.cc instances).
namespace edgeconv { namespace kern { namespace generic { extern const KernelTable kTable; } } }
#if defined(EDGECONV_HAVE_AVX2)
namespace edgeconv { namespace kern { namespace avx2 { extern const KernelTable kTable; } } }
#endif
