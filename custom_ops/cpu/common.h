// Shared helpers of the edgeconv onnxruntime kernels: attribute parsing, input access and
// validation (errors are thrown as Ort::Exception and turned into an OrtStatus by ComputeV2),
// the thread-pool runner and the ISA dispatch of the compute kernels.
#pragma once

#ifndef ORT_API_MANUAL_INIT
#define ORT_API_MANUAL_INIT
#endif
#include "onnxruntime_cxx_api.h"

#include <cstdint>
#include <exception>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <utility>
#include <new>
#include <string>
#include <vector>

#include "kernels.h"

namespace edgeconv {

// Oldest onnxruntime C API version the library needs (KernelContext_ParallelFor: API 17, 1.17).
constexpr uint32_t kMinOrtApiVersion = 17;

// Throws Ort::Exception("edgeconv.<op>: <msg>", code).
[[noreturn]] void Fail(const char* op, const std::string& msg, OrtErrorCode code = ORT_INVALID_ARGUMENT);

// a * b for a, b >= 0; ORT_INVALID_ARGUMENT "<what> overflows int64 (a * b)" when it does not fit.
// Every size computed from model data goes through it (or is bounded before multiplying).
int64_t CheckedMul(int64_t a, int64_t b, const char* op, const std::string& what);

// Settings of one library registration, read from the session config entries of the
// SessionOptions passed to RegisterCustomOps (add them before register_custom_ops_library).
constexpr const char* kIsaConfigKey = "edgeconv.isa";                    // auto | generic | avx2
constexpr const char* kMemoryLimitConfigKey = "edgeconv.max_memory_bytes";  // 0: no limit
constexpr int64_t kDefaultMemoryLimitBytes = int64_t{2} << 30;           // 2 GiB per op call
struct OpConfig {
  const kern::KernelTable* kernels = nullptr;  // ISA variant used by every kernel of the session
  int64_t memory_limit_bytes = kDefaultMemoryLimitBytes;
  bool operator==(const OpConfig& o) const {
    return kernels == o.kernels && memory_limit_bytes == o.memory_limit_bytes;
  }
};
// Reads the config entries of `options` (defaults where absent); throws ORT_INVALID_ARGUMENT
// naming the entry for a malformed value.
OpConfig ReadOpConfig(const OrtApiBase* api_base, const OrtSessionOptions* options);

// Memory one op call requests: its output, the buffers it allocates itself and one thread's
// column tile, checked against OpConfig::memory_limit_bytes before anything is allocated (a small
// model can ask for a huge output or scratch: a clear error instead of an OOM kill).
class MemoryBudget {
 public:
  MemoryBudget(const char* op, int64_t limit_bytes) : op_(op), limit_(limit_bytes) {}
  // Adds `floats` floats for `what`; fails (ORT_FAIL, naming the limit's config entry) above it.
  void Add(int64_t floats, const char* what);

 private:
  const char* op_;
  int64_t limit_;
  int64_t bytes_ = 0;
};

std::string ShapeToString(const std::vector<int64_t>& shape);

// Attribute readers: a missing attribute gives the default; any other type than the expected
// one (ints / int) is an error naming the attribute, the expected and the actual type.
std::vector<int64_t> GetIntsAttr(const OrtKernelInfo* info, const char* op, const char* name,
                                 const std::vector<int64_t>& def, bool* present = nullptr);
int64_t GetIntAttr(const OrtKernelInfo* info, const char* op, const char* name, int64_t def);

// The custom-op C API cannot list a node's attributes, only read them by name: the attributes of
// the related ONNX operators (Conv, DeformConv) that an op does not support are rejected by name.
void RejectAttrs(const OrtKernelInfo* info, const char* op, std::initializer_list<const char*> names,
                 const char* supported);

// Common 2-D convolution attributes: strides, pads (top, left, bottom, right), dilations, group
// (+ offset_group for deformable convolution, kernel_shape checked against W when given).
struct Conv2dAttrs {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_t = 0, pad_l = 0, pad_b = 0, pad_r = 0;
  int64_t dil_h = 1, dil_w = 1;
  int64_t group = 1;
  int64_t offset_group = 1;
  std::vector<int64_t> kernel_shape;  // empty: not given
};
Conv2dAttrs ReadConv2dAttrs(const OrtKernelInfo* info, const char* op, bool with_offset_group);

// A float32 input; data == nullptr and present == false for an absent optional input.
struct Input {
  bool present = false;
  const float* data = nullptr;
  std::vector<int64_t> shape;
  int64_t numel = 0;
};
Input GetInput(Ort::KernelContext& ctx, size_t index, const char* op, const char* name, bool optional);

// Checks rank; message "edgeconv.<op>: input '<name>' must have rank R <what>, got shape [..]".
void CheckRank(const Input& t, size_t rank, const char* op, const char* name, const char* what);

// Shapes of a convolution's X [N, C, H, W] and W [lead..., O, C/group, kh, kw] (`w_lead` leading
// dims before O: 0 for a plain weight, 1 for a kernel bank), checked against each other and the
// attributes (both ranks already checked): the dilated kernel fits in the padded input, and
// KK = kh*kw, Kd = C/group*kh*kw and the output size N*O*OH*OW fit in int64.
struct ConvShapes {
  int64_t N, C, H, W, O, Cg, KH, KW;
  int64_t OH, OW, KK;
};
ConvShapes CheckConvShapes(const Input& X, const Input& W, size_t w_lead, const Conv2dAttrs& a, const char* op);

// onnxruntime intra-op thread pool runner for the kernels.
kern::Runner MakeRunner(OrtKernelContext* ctx);

// Kernel table of the best ISA variant for this CPU; env EDGECONV_ISA=generic forces the baseline
// variant (read once, at the first registration; the session config entry edgeconv.isa overrides it).
const kern::KernelTable& DefaultKernels();

// Runtime API version to announce in OrtCustomOp::version (min of the headers' and runtime's).
uint32_t CustomOpVersion();
void SetRuntimeApiVersion(uint32_t v);

// Uninitialised, 64-byte aligned float buffer owned by a kernel call; throws an Ort::Exception
// (ORT_FAIL) naming the op when the allocation fails.
class FloatBuffer {
 public:
  FloatBuffer(size_t n, const char* op);
  ~FloatBuffer();
  FloatBuffer(const FloatBuffer&) = delete;
  FloatBuffer& operator=(const FloatBuffer&) = delete;
  float* data() { return p_; }

 private:
  float* p_ = nullptr;
};

// Packed form of a constant weight input (an initializer), computed once per ISA variant on first
// use and reused by every later call (and concurrent calls: guarded by a mutex).
class PackedWeightCache {
 public:
  // Remembers input `index` when it is a constant initializer (KernelInfoGetConstantInput_tensor).
  void Init(const OrtKernelInfo* info, size_t index);
  // Packed copy of W (N weights of [O, Cg, KK]) for table k, or nullptr when W is not the constant
  // initializer seen at kernel creation (then the caller packs per call).
  const float* Get(const kern::KernelTable& k, const float* w, int64_t N, int64_t O, int64_t G, int64_t Cg, int64_t KK,
                   const char* op);
  // True when Get(w, ...) will return the cached (or to be cached) packed constant.
  bool IsConstant(const float* w) const { return const_data_ != nullptr && w == const_data_; }

 private:
  const float* const_data_ = nullptr;
  std::mutex mu_;
  std::vector<std::pair<const kern::KernelTable*, std::unique_ptr<FloatBuffer>>> entries_;
};

// Runs f() and converts any exception into an OrtStatus (nullptr on success): no C++ exception
// ever crosses the C ABI into onnxruntime.
template <typename F>
OrtStatusPtr StatusGuard(const char* op, F&& f) noexcept {
  const OrtApi& api = Ort::GetApi();
  try {
    f();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return api.CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, (std::string("edgeconv.") + op + ": out of memory").c_str());
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, (std::string("edgeconv.") + op + ": " + e.what()).c_str());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, (std::string("edgeconv.") + op + ": unknown error").c_str());
  }
}

// The onnxruntime custom-op class of a float32 CPU kernel: Derived names the op (kName) and its
// inputs (kInputs, of which the first kRequired are required); one float32 output.
// Kernels are built as Kernel(api, info, config) with the registration's OpConfig.
template <typename Derived, typename Kernel>
struct FloatCpuOp : Ort::CustomOpBase<Derived, Kernel, true> {
  explicit FloatCpuOp(const OpConfig& config) : config_(config) { this->version = CustomOpVersion(); }
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
    *kernel = nullptr;
    return StatusGuard(Derived::kName, [&] { *kernel = new Kernel(api, info, config_); });
  }
  const char* GetName() const { return Derived::kName; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return Derived::kInputs; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index < Derived::kRequired ? INPUT_OUTPUT_REQUIRED : INPUT_OUTPUT_OPTIONAL;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }

 private:
  OpConfig config_;
};

}  // namespace edgeconv
