// edgeconv.DeformConv2d(X, W, offset, mask?, B?) -> Y   (deformable convolution v1 / v2)
//
// Semantics of ONNX DeformConv (opset 19) for 2-D float32 input, but with the input order
// (X, W, offset, mask, B). Attributes: strides[2], pads[4] (top, left, bottom, right),
// dilations[2], group, offset_group, optional kernel_shape[2] (checked against W).
#pragma once

#include "common.h"

namespace edgeconv {

struct DeformConv2dKernel {
  DeformConv2dKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

  Conv2dAttrs attrs;
  PackedWeightCache w_cache;  // W is usually an initializer: packed once
};

struct DeformConv2dOp : Ort::CustomOpBase<DeformConv2dOp, DeformConv2dKernel, true> {
  DeformConv2dOp();
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "DeformConv2d"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < 3 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace edgeconv
