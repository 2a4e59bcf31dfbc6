// edgeconv.DynamicConv2d(X, W, attention, B?) -> Y   (dynamic convolution, Chen et al. 2020)
//
// X [N, C, H, W], W [K, O, C/group, kh, kw], attention [N, K], B [K, O] (optional).
// Per sample n: W~ = sum_k a[n, k] W[k], b~ = sum_k a[n, k] B[k], Y[n] = conv2d(X[n], W~) + b~.
// Attributes: strides[2], pads[4] (top, left, bottom, right), dilations[2], group.
#pragma once

#include "common.h"

namespace edgeconv {

struct DynamicConv2dKernel {
  DynamicConv2dKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

  Conv2dAttrs attrs;
  PackedWeightCache w_cache;  // packed expert weights when W is an initializer
};

struct DynamicConv2dOp : Ort::CustomOpBase<DynamicConv2dOp, DynamicConv2dKernel, true> {
  DynamicConv2dOp();
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "DynamicConv2d"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < 3 ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace edgeconv
