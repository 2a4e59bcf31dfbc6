// edgeconv.DynamicConv2d(X, W, attention, B?) -> Y   (dynamic convolution, Chen et al. 2020)
//
// X [N, C, H, W], W [K, O, C/group, kh, kw], attention [N, K], B [K, O] (optional).
// Per sample n: W~ = sum_k a[n, k] W[k], b~ = sum_k a[n, k] B[k], Y[n] = conv2d(X[n], W~) + b~.
// Attributes: strides[2], pads[4] (top, left, bottom, right), dilations[2], group.
// C/group == 1 (depthwise, any channel multiplier O/group) runs a direct loop per plane instead of
// the column + GEMM path.
#pragma once

#include "common.h"

namespace edgeconv {

struct DynamicConv2dKernel {
  DynamicConv2dKernel(const OrtApi& api, const OrtKernelInfo* info, const OpConfig& config);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);
  // The two compute paths (inputs validated, output size in `budget`): C/group == 1 and general.
  void RunDepthwise(Ort::KernelContext& ctx, const kern::KernelTable& k, const kern::Runner& runner,
                    const kern::ConvGeometry& geom, int64_t K, const Input& W, const Input& att, const Input& B,
                    const std::vector<int64_t>& y_shape, MemoryBudget& budget, const Input& X);
  void RunGemm(Ort::KernelContext& ctx, const kern::KernelTable& k, const kern::Runner& runner,
               const kern::ConvGeometry& geom, int64_t K, const Input& W, const Input& att, const Input& B,
               const std::vector<int64_t>& y_shape, MemoryBudget& budget, const Input& X);

  Conv2dAttrs attrs;
  OpConfig config;
  PackedWeightCache w_cache;  // packed expert weights when W is an initializer
};

struct DynamicConv2dOp : FloatCpuOp<DynamicConv2dOp, DynamicConv2dKernel> {
  using FloatCpuOp::FloatCpuOp;
  static constexpr const char* kName = "DynamicConv2d";
  static constexpr size_t kInputs = 4, kRequired = 3;
};

}  // namespace edgeconv
