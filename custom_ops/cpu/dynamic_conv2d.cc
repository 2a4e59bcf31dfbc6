#include "dynamic_conv2d.h"

#include <string>

namespace edgeconv {
namespace {
constexpr const char* kOp = DynamicConv2dOp::kName;
}  // namespace

DynamicConv2dKernel::DynamicConv2dKernel(const OrtApi&, const OrtKernelInfo* info)
    : attrs(ReadConv2dAttrs(info, kOp, /*with_offset_group=*/false)) {
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
    if (att.shape[0] != N || att.shape[1] != K)
      Fail(kOp, "input 'attention' must have shape [N, K] = [" + std::to_string(N) + ", " + std::to_string(K) + "], got " +
                    ShapeToString(att.shape));
    if (B.present) {
      CheckRank(B, 2, kOp, "B", "[K, O]");
      if (B.shape[0] != K || B.shape[1] != O)
        Fail(kOp, "input 'B' must have shape [K, O] = [" + std::to_string(K) + ", " + std::to_string(O) + "], got " +
                      ShapeToString(B.shape));
    }
    const int64_t OH = ConvOutSize(H, KH, a.stride_h, a.pad_t, a.pad_b, a.dil_h, kOp, "height");
    const int64_t OW = ConvOutSize(Wd, KW, a.stride_w, a.pad_l, a.pad_r, a.dil_w, kOp, "width");
    const int64_t KK = KH * KW;

    const std::vector<int64_t> y_shape{N, O, OH, OW};
    float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
    if (N == 0 || O == 0) return;

    const kern::KernelTable& k = Kernels();
    const kern::Runner runner = MakeRunner(context);
    const int64_t per_sample = k.packed_weights_size(O, a.group, Cg, KK);
    FloatBuffer x_nhwc(static_cast<size_t>(X.numel), kOp);
    FloatBuffer w_mixed(static_cast<size_t>(N * per_sample), kOp);
    k.nchw_to_nhwc(X.data, x_nhwc.data(), N, C, H * Wd, runner);
    // Packing is linear: with W an initializer, the K experts are packed once and mixed per call
    // (contiguous FMAs); otherwise the experts' rows are mixed and packed in one pass.
    if (const float* experts = w_cache.Get(k, W.data, K, O, a.group, Cg, KK, kOp)) {
      k.mix_weights(experts, K, per_sample, att.data, N, w_mixed.data(), runner);
    } else if (k.pack_weights(W.data, att.data, w_mixed.data(), N, K, O, a.group, Cg, KK, runner) != 0) {
      Fail(kOp, "out of memory (weight packing)", ORT_FAIL);
    }
    FloatBuffer b_mixed(B.present ? static_cast<size_t>(N * O) : 1, kOp);
    if (B.present) {
      for (int64_t n = 0; n < N; ++n)
        for (int64_t o = 0; o < O; ++o) {
          float s = 0.0f;
          for (int64_t e = 0; e < K; ++e) s += att.data[n * K + e] * B.data[e * O + o];
          b_mixed.data()[n * O + o] = s;
        }
    }

    kern::ConvArgs args{};
    args.g = kern::ConvGeometry{N, C, H, Wd, O, KH, KW, a.stride_h, a.stride_w, a.pad_t, a.pad_l,
                                a.dil_h, a.dil_w, a.group, 1, OH, OW};
    args.x_nhwc = x_nhwc.data();
    args.w_packed = w_mixed.data();
    args.w_batch_stride = per_sample;
    args.bias = B.present ? b_mixed.data() : nullptr;
    args.bias_batch_stride = O;
    args.offset = nullptr;
    args.mask = nullptr;
    args.y = y;
    if (k.conv2d(args, runner) != 0) Fail(kOp, "out of memory (column buffer)", ORT_FAIL);
  });
}

}  // namespace edgeconv
