#include "dynamic_conv2d.h"

#include <algorithm>
#include <string>

namespace edgeconv {
namespace {
constexpr const char* kOp = DynamicConv2dOp::kName;
// Per-sample mixed weights are built for a chunk of samples at a time, at most this many bytes
// (at least one sample): memory stays bounded whatever N, and the conv still has N*G*tiles tasks
// of the chunk to spread over the pool.
constexpr int64_t kMixChunkBytes = int64_t{64} << 20;

// Mixed bias of nc samples: out[n, o] = sum_e att[n, e] * B[e, o].
void MixBias(const float* att, int64_t nc, int64_t K, int64_t O, const float* B, float* out) {
  for (int64_t n = 0; n < nc; ++n)
    for (int64_t o = 0; o < O; ++o) {
      float acc = 0.0f;
      for (int64_t e = 0; e < K; ++e) acc += att[n * K + e] * B[e * O + o];
      out[n * O + o] = acc;
    }
}

// Samples per chunk of mixed weights (per_sample floats each): at most kMixChunkBytes, at least 1.
int64_t ChunkSamples(int64_t N, int64_t per_sample) {
  return std::min(N, std::max<int64_t>(1, kMixChunkBytes / int64_t{sizeof(float)} / per_sample));
}

}  // namespace

// Depthwise (C/group == 1): the experts are mixed as stored, W~[n] = sum_e a[n, e] W[e] ([O, kh*kw],
// tiny), and convolved by a direct loop per (sample, channel) plane on the NCHW input.
void DynamicConv2dKernel::RunDepthwise(Ort::KernelContext& ctx, const kern::KernelTable& k, const kern::Runner& runner,
                                       const kern::ConvGeometry& geom, int64_t K, const Input& W, const Input& att,
                                       const Input& B, const std::vector<int64_t>& y_shape, MemoryBudget& budget,
                                       const Input& X) {
  const int64_t N = geom.N, O = geom.O;
  const int64_t per_sample = CheckedMul(O, geom.KH * geom.KW, kOp, "mixed weights");
  const int64_t chunk = ChunkSamples(N, per_sample);
  budget.Add(CheckedMul(chunk, per_sample, kOp, "mixed weights"), "mixed weights of a chunk of samples");
  budget.Add(B.present ? chunk * O : 0, "mixed bias");
  // (KH, KW <= the padded input size <= 2^31: no overflow)
  budget.Add(2 * k.depthwise_range_ints(geom.KH, geom.KW), "per-tap output ranges and lane masks");

  float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
  FloatBuffer w_mixed(static_cast<size_t>(chunk * per_sample), kOp);
  FloatBuffer b_mixed(B.present ? static_cast<size_t>(chunk * O) : 1, kOp);
  kern::DepthwiseArgs args{geom, nullptr, w_mixed.data(), B.present ? b_mixed.data() : nullptr, nullptr};
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nc = std::min(chunk, N - n0);
    const float* att_c = att.data + n0 * K;
    k.mix_weights(W.data, K, per_sample, att_c, nc, w_mixed.data(), runner);
    if (B.present) MixBias(att_c, nc, K, O, B.data, b_mixed.data());
    args.g.N = nc;
    args.x = X.data + n0 * geom.C * geom.H * geom.W;
    args.y = y + n0 * O * geom.OH * geom.OW;
    if (k.depthwise_conv2d(args, runner) != 0) Fail(kOp, "out of memory (tap ranges)", ORT_FAIL);
  }
}

// General case: NHWC input, packed weights, column buffer + GEMM per (sample, group, pixel tile).
void DynamicConv2dKernel::RunGemm(Ort::KernelContext& ctx, const kern::KernelTable& k, const kern::Runner& runner,
                                  const kern::ConvGeometry& geom, int64_t K, const Input& W, const Input& att,
                                  const Input& B, const std::vector<int64_t>& y_shape, MemoryBudget& budget,
                                  const Input& X) {
  const int64_t N = geom.N, C = geom.C, O = geom.O, G = geom.G, Cg = C / G, KK = geom.KH * geom.KW;
  // One expert's packed size <= 16 (panel padding) * its element count: bounded first.
  CheckedMul(W.numel / K, 16, kOp, "packed size of input 'W'");
  const int64_t per_sample = k.packed_weights_size(O, G, Cg, KK);
  const int64_t chunk = ChunkSamples(N, per_sample);
  const bool cached = w_cache.IsConstant(W.data);
  budget.Add(X.numel, "NHWC copy of input 'X'");
  if (cached) budget.Add(CheckedMul(K, per_sample, kOp, "packed size of input 'W'"), "packed expert weights");
  budget.Add(CheckedMul(chunk, per_sample, kOp, "mixed weights"), "mixed weights of a chunk of samples");
  budget.Add(B.present ? chunk * O : 0, "mixed bias");
  kern::ConvArgs args{};
  args.g = geom;
  args.g.N = chunk;
  budget.Add(std::max(k.conv_scratch_floats(args.g), k.pack_scratch_floats(O, G, Cg, KK)),
             "column buffer of one thread");

  float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
  FloatBuffer x_nhwc(static_cast<size_t>(X.numel), kOp);
  k.nchw_to_nhwc(X.data, x_nhwc.data(), N, C, geom.H * geom.W, runner);
  // Packing is linear: with W an initializer, the K experts are packed once and mixed per call
  // (contiguous FMAs); otherwise the experts' rows are mixed and packed in one pass.
  const float* experts = cached ? w_cache.Get(k, W.data, K, O, G, Cg, KK, kOp) : nullptr;
  FloatBuffer w_mixed(static_cast<size_t>(chunk * per_sample), kOp);
  FloatBuffer b_mixed(B.present ? static_cast<size_t>(chunk * O) : 1, kOp);
  args.w_packed = w_mixed.data();
  args.w_batch_stride = per_sample;
  args.bias = B.present ? b_mixed.data() : nullptr;
  args.bias_batch_stride = O;
  args.offset = nullptr;
  args.mask = nullptr;
  for (int64_t n0 = 0; n0 < N; n0 += chunk) {
    const int64_t nc = std::min(chunk, N - n0);
    const float* att_c = att.data + n0 * K;
    if (experts != nullptr) {
      k.mix_weights(experts, K, per_sample, att_c, nc, w_mixed.data(), runner);
    } else if (k.pack_weights(W.data, att_c, w_mixed.data(), nc, K, O, G, Cg, KK, runner) != 0) {
      Fail(kOp, "out of memory (weight packing)", ORT_FAIL);
    }
    if (B.present) MixBias(att_c, nc, K, O, B.data, b_mixed.data());
    args.g.N = nc;
    args.x_nhwc = x_nhwc.data() + n0 * C * geom.H * geom.W;
    args.y = y + n0 * O * geom.OH * geom.OW;
    if (k.conv2d(args, runner) != 0) Fail(kOp, "out of memory (column buffer)", ORT_FAIL);
  }
}

DynamicConv2dKernel::DynamicConv2dKernel(const OrtApi&, const OrtKernelInfo* info, const OpConfig& cfg)
    : attrs(ReadConv2dAttrs(info, kOp, /*with_offset_group=*/false)), config(cfg) {
  RejectAttrs(info, kOp, {"auto_pad", "offset_group"}, "strides, pads, dilations, group, kernel_shape");
  w_cache.Init(info, 1);
}

OrtStatusPtr DynamicConv2dKernel::ComputeV2(OrtKernelContext* context) {
  return StatusGuard(kOp, [&] {
    Ort::KernelContext ctx(context);
    const Input X = GetInput(ctx, 0, kOp, "X", false);
    const Input W = GetInput(ctx, 1, kOp, "W", false);
    const Input att = GetInput(ctx, 2, kOp, "attention", false);
    const Input B = GetInput(ctx, 3, kOp, "B", true);
    const Conv2dAttrs& a = attrs;

    CheckRank(X, 4, kOp, "X", "[N, C, H, W]");
    CheckRank(W, 5, kOp, "W", "[K, O, C/group, kh, kw]");
    CheckRank(att, 2, kOp, "attention", "[N, K]");
    const int64_t K = W.shape[0];
    if (K == 0) Fail(kOp, "input 'W' must have at least one expert kernel (dim 0), got shape " + ShapeToString(W.shape));
    const ConvShapes s = CheckConvShapes(X, W, 1, a, kOp);
    const int64_t N = s.N, C = s.C, H = s.H, Wd = s.W, O = s.O, Cg = s.Cg, KH = s.KH, KW = s.KW;
    const int64_t OH = s.OH, OW = s.OW;
    if (att.shape[0] != N || att.shape[1] != K)
      Fail(kOp, "input 'attention' must have shape [N, K] = [" + std::to_string(N) + ", " + std::to_string(K) + "], got " +
                    ShapeToString(att.shape));
    if (B.present) {
      CheckRank(B, 2, kOp, "B", "[K, O]");
      if (B.shape[0] != K || B.shape[1] != O)
        Fail(kOp, "input 'B' must have shape [K, O] = [" + std::to_string(K) + ", " + std::to_string(O) + "], got " +
                      ShapeToString(B.shape));
    }

    const std::vector<int64_t> y_shape{N, O, OH, OW};
    if (N == 0 || O == 0) {
      ctx.GetOutput(0, y_shape);
      return;
    }

    const kern::KernelTable& k = *config.kernels;
    const kern::Runner runner = MakeRunner(context);
    const kern::ConvGeometry geom{N, C, H, Wd, O, KH, KW, a.stride_h, a.stride_w, a.pad_t, a.pad_l,
                                  a.dil_h, a.dil_w, a.group, 1, OH, OW};
    MemoryBudget budget(kOp, config.memory_limit_bytes);
    budget.Add(N * O * OH * OW, "output 'Y'");  // (product checked by CheckConvShapes)
    if (Cg == 1) {
      RunDepthwise(ctx, k, runner, geom, K, W, att, B, y_shape, budget, X);
    } else {
      RunGemm(ctx, k, runner, geom, K, W, att, B, y_shape, budget, X);
    }
  });
}

}  // namespace edgeconv
