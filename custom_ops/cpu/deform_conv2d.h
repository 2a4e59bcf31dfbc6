// edgeconv.DeformConv2d(X, W, offset, mask?, B?) -> Y   (deformable convolution v1 / v2)
//
// Semantics of ONNX DeformConv (opset 19) for 2-D float32 input, but with the input order
// (X, W, offset, mask, B). Attributes: strides[2], pads[4] (top, left, bottom, right),
// dilations[2], group, offset_group, optional kernel_shape[2] (checked against W).
#pragma once

#include "common.h"

namespace edgeconv {

struct DeformConv2dKernel {
  DeformConv2dKernel(const OrtApi& api, const OrtKernelInfo* info, const OpConfig& config);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

  Conv2dAttrs attrs;
  OpConfig config;
  PackedWeightCache w_cache;  // W is usually an initializer: packed once
};

struct DeformConv2dOp : FloatCpuOp<DeformConv2dOp, DeformConv2dKernel> {
  using FloatCpuOp::FloatCpuOp;
  static constexpr const char* kName = "DeformConv2d";
  static constexpr size_t kInputs = 5, kRequired = 3;
};

}  // namespace edgeconv
