#include "deform_conv2d.h"

#include <algorithm>
#include <string>

namespace edgeconv {
namespace {
constexpr const char* kOp = DeformConv2dOp::kName;
}  // namespace

DeformConv2dKernel::DeformConv2dKernel(const OrtApi&, const OrtKernelInfo* info, const OpConfig& cfg)
    : attrs(ReadConv2dAttrs(info, kOp, /*with_offset_group=*/true)), config(cfg) {
  RejectAttrs(info, kOp, {"auto_pad"}, "strides, pads, dilations, group, offset_group, kernel_shape");
  w_cache.Init(info, 1);
}

OrtStatusPtr DeformConv2dKernel::ComputeV2(OrtKernelContext* context) {
  return StatusGuard(kOp, [&] {
    Ort::KernelContext ctx(context);
    const Input X = GetInput(ctx, 0, kOp, "X", false);
    const Input W = GetInput(ctx, 1, kOp, "W", false);
    const Input off = GetInput(ctx, 2, kOp, "offset", false);
    const Input mask = GetInput(ctx, 3, kOp, "mask", true);
    const Input B = GetInput(ctx, 4, kOp, "B", true);
    const Conv2dAttrs& a = attrs;

    CheckRank(X, 4, kOp, "X", "[N, C, H, W]");
    CheckRank(W, 4, kOp, "W", "[O, C/group, kh, kw]");
    CheckRank(off, 4, kOp, "offset", "[N, offset_group*2*kh*kw, oh, ow]");
    const ConvShapes s = CheckConvShapes(X, W, 0, a, kOp);
    const int64_t N = s.N, C = s.C, H = s.H, Wd = s.W, O = s.O, Cg = s.Cg, KH = s.KH, KW = s.KW;
    const int64_t OH = s.OH, OW = s.OW, KK = s.KK;
    if (C % a.offset_group != 0)
      Fail(kOp, "input 'X' channels (" + std::to_string(C) + ") must be divisible by offset_group (" +
                    std::to_string(a.offset_group) + ")");
    const int64_t mask_c = CheckedMul(a.offset_group, KK, kOp, "input 'offset' channels offset_group*2*kh*kw");
    const int64_t off_c = CheckedMul(mask_c, 2, kOp, "input 'offset' channels offset_group*2*kh*kw");
    if (off.shape[0] != N)
      Fail(kOp, "input 'offset' batch (dim 0) must equal N = " + std::to_string(N) + ", got shape " + ShapeToString(off.shape));
    if (off.shape[1] != off_c)
      Fail(kOp, "input 'offset' must have " + std::to_string(off_c) + " channels (offset_group*2*kh*kw), got " +
                    std::to_string(off.shape[1]));
    if (off.shape[2] != OH || off.shape[3] != OW)
      Fail(kOp, "input 'offset' spatial size must equal the output size [" + std::to_string(OH) + ", " + std::to_string(OW) +
                    "], got shape " + ShapeToString(off.shape));
    if (mask.present) {
      CheckRank(mask, 4, kOp, "mask", "[N, offset_group*kh*kw, oh, ow]");
      if (mask.shape[0] != N)
        Fail(kOp, "input 'mask' batch (dim 0) must equal N = " + std::to_string(N) + ", got shape " + ShapeToString(mask.shape));
      if (mask.shape[1] != mask_c)
        Fail(kOp, "input 'mask' must have " + std::to_string(mask_c) + " channels (offset_group*kh*kw), got " +
                      std::to_string(mask.shape[1]));
      if (mask.shape[2] != OH || mask.shape[3] != OW)
        Fail(kOp, "input 'mask' spatial size must equal the output size [" + std::to_string(OH) + ", " + std::to_string(OW) +
                      "], got shape " + ShapeToString(mask.shape));
    }
    if (B.present) {
      CheckRank(B, 1, kOp, "B", "[O]");
      if (B.shape[0] != O)
        Fail(kOp, "input 'B' must have shape [" + std::to_string(O) + "] (one bias per output channel), got " +
                      ShapeToString(B.shape));
    }

    const std::vector<int64_t> y_shape{N, O, OH, OW};
    if (N == 0 || O == 0) {
      ctx.GetOutput(0, y_shape);
      return;
    }

    const kern::KernelTable& k = *config.kernels;
    const kern::Runner runner = MakeRunner(context);
    kern::ConvArgs args{};
    args.g = kern::ConvGeometry{N, C, H, Wd, O, KH, KW, a.stride_h, a.stride_w, a.pad_t, a.pad_l,
                                a.dil_h, a.dil_w, a.group, a.offset_group, OH, OW};
    MemoryBudget budget(kOp, config.memory_limit_bytes);
    budget.Add(N * O * OH * OW, "output 'Y'");  // (product checked by CheckConvShapes)
    budget.Add(X.numel, "NHWC copy of input 'X'");
    // Packed size <= 16 (panel padding) * W's element count: bounded before the table computes it.
    CheckedMul(W.numel, 16, kOp, "packed size of input 'W'");
    const int64_t packed = k.packed_weights_size(O, a.group, Cg, KK);
    budget.Add(packed, "packed weights");
    budget.Add(std::max(k.conv_scratch_floats(args.g), k.pack_scratch_floats(O, a.group, Cg, KK)),
               "column buffer of one thread");
    float* y = ctx.GetOutput(0, y_shape).GetTensorMutableData<float>();
    FloatBuffer x_nhwc(static_cast<size_t>(X.numel), kOp);
    k.nchw_to_nhwc(X.data, x_nhwc.data(), N, C, H * Wd, runner);
    const float* w_packed = w_cache.Get(k, W.data, 1, O, a.group, Cg, KK, kOp);
    std::unique_ptr<FloatBuffer> w_buf;
    if (w_packed == nullptr) {
      w_buf = std::make_unique<FloatBuffer>(static_cast<size_t>(packed), kOp);
      if (k.pack_weights(W.data, nullptr, w_buf->data(), 1, 1, O, a.group, Cg, KK, runner) != 0)
        Fail(kOp, "out of memory (weight packing)", ORT_FAIL);
      w_packed = w_buf->data();
    }

    args.x_nhwc = x_nhwc.data();
    args.w_packed = w_packed;
    args.w_batch_stride = 0;
    args.bias = B.present ? B.data : nullptr;
    args.bias_batch_stride = 0;
    args.offset = off.data;
    args.mask = mask.present ? mask.data : nullptr;
    args.y = y;
    if (k.conv2d(args, runner) != 0) Fail(kOp, "out of memory (column buffer)", ORT_FAIL);
  });
}

}  // namespace edgeconv
