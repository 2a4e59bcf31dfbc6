#include "common.h"

#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <sstream>

namespace edgeconv {

// Attribute values beyond this bound are rejected (keeps every size computation far from int64
// overflow; real networks use single-digit values).
constexpr int64_t kMaxAttrValue = int64_t{1} << 24;

void Fail(const char* op, const std::string& msg, OrtErrorCode code) {
  throw Ort::Exception(std::string("edgeconv.") + op + ": " + msg, code);
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << "]";
  return s.str();
}

int64_t CheckedMul(int64_t a, int64_t b, const char* op, const std::string& what) {
  int64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r))
    Fail(op, what + " overflows int64 (" + std::to_string(a) + " * " + std::to_string(b) + ")");
  return r;
}

namespace {

std::string ListToString(const std::vector<int64_t>& v) { return ShapeToString(v); }

// Takes ownership of st: true when the call succeeded; false for a type mismatch (the attribute
// exists with another type); records a missing attribute in *missing.
bool AttrOk(OrtStatus* st, bool* missing) {
  if (st == nullptr) return true;
  const OrtApi& api = Ort::GetApi();
  const std::string msg = api.GetErrorMessage(st);
  api.ReleaseStatus(st);
  if (msg.find("No attribute") != std::string::npos || msg.find("not found") != std::string::npos) *missing = true;
  return false;
}

enum class AttrKind { kMissing, kInt, kInts, kFloat, kFloats, kString, kEmptyOrOther };

// The type of attribute `name`, found by trying every reader: onnxruntime's scalar readers check
// the type, its array readers do not (an int or float attribute reads as an empty int list).
AttrKind ProbeAttr(const OrtKernelInfo* info, const char* name) {
  const OrtApi& api = Ort::GetApi();
  bool missing = false;
  int64_t i = 0;
  if (AttrOk(api.KernelInfoGetAttribute_int64(info, name, &i), &missing)) return AttrKind::kInt;
  if (missing) return AttrKind::kMissing;
  float f = 0;
  if (AttrOk(api.KernelInfoGetAttribute_float(info, name, &f), &missing)) return AttrKind::kFloat;
  size_t n = 0;
  if (AttrOk(api.KernelInfoGetAttribute_string(info, name, nullptr, &n), &missing)) return AttrKind::kString;
  n = 0;
  if (AttrOk(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &n), &missing) && n > 0) return AttrKind::kInts;
  n = 0;
  if (AttrOk(api.KernelInfoGetAttributeArray_float(info, name, nullptr, &n), &missing) && n > 0) return AttrKind::kFloats;
  return AttrKind::kEmptyOrOther;
}

const char* KindName(AttrKind k) {
  switch (k) {
    case AttrKind::kInt: return "an int";
    case AttrKind::kInts: return "ints";
    case AttrKind::kFloat: return "a float";
    case AttrKind::kFloats: return "floats";
    case AttrKind::kString: return "a string";
    case AttrKind::kEmptyOrOther: return "an empty list or a tensor/graph/strings attribute";
    default: return "missing";
  }
}

}  // namespace

std::vector<int64_t> GetIntsAttr(const OrtKernelInfo* info, const char* op, const char* name,
                                 const std::vector<int64_t>& def, bool* present) {
  if (present) *present = false;
  const AttrKind kind = ProbeAttr(info, name);
  if (kind == AttrKind::kMissing) return def;
  if (kind != AttrKind::kInts)
    Fail(op, std::string("attribute '") + name + "' must be ints (a list of int64), got " + KindName(kind));
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  Ort::ThrowOnError(api.KernelInfoGetAttributeArray_int64(info, name, nullptr, &size));
  std::vector<int64_t> out(size);
  Ort::ThrowOnError(api.KernelInfoGetAttributeArray_int64(info, name, out.data(), &size));
  out.resize(size);
  if (present) *present = true;
  return out;
}

int64_t GetIntAttr(const OrtKernelInfo* info, const char* op, const char* name, int64_t def) {
  const AttrKind kind = ProbeAttr(info, name);
  if (kind == AttrKind::kMissing) return def;
  if (kind != AttrKind::kInt)
    Fail(op, std::string("attribute '") + name + "' must be an int (int64), got " + KindName(kind));
  int64_t v = def;
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v));
  return v;
}

void RejectAttrs(const OrtKernelInfo* info, const char* op, std::initializer_list<const char*> names,
                 const char* supported) {
  for (const char* name : names)
    if (ProbeAttr(info, name) != AttrKind::kMissing)
      Fail(op, std::string("attribute '") + name + "' is not supported (supported: " + supported + ")");
}

Conv2dAttrs ReadConv2dAttrs(const OrtKernelInfo* info, const char* op, bool with_offset_group) {
  Conv2dAttrs a;
  auto strides = GetIntsAttr(info, op, "strides", {1, 1});
  auto pads = GetIntsAttr(info, op, "pads", {0, 0, 0, 0});
  auto dils = GetIntsAttr(info, op, "dilations", {1, 1});
  bool has_ks = false;
  a.kernel_shape = GetIntsAttr(info, op, "kernel_shape", {}, &has_ks);
  if (strides.size() != 2)
    Fail(op, "attribute 'strides' must have 2 values (stride_h, stride_w), got " + ListToString(strides));
  if (pads.size() != 4)
    Fail(op, "attribute 'pads' must have 4 values (top, left, bottom, right), got " + ListToString(pads));
  if (dils.size() != 2)
    Fail(op, "attribute 'dilations' must have 2 values (dilation_h, dilation_w), got " + ListToString(dils));
  if (has_ks && a.kernel_shape.size() != 2)
    Fail(op, "attribute 'kernel_shape' must have 2 values, got " + ListToString(a.kernel_shape));
  for (int64_t v : strides)
    if (v < 1 || v > kMaxAttrValue) Fail(op, "attribute 'strides' values must be in [1, 2^24], got " + ListToString(strides));
  for (int64_t v : dils)
    if (v < 1 || v > kMaxAttrValue)
      Fail(op, "attribute 'dilations' values must be in [1, 2^24], got " + ListToString(dils));
  for (int64_t v : pads)
    if (v < 0 || v > kMaxAttrValue) Fail(op, "attribute 'pads' values must be in [0, 2^24], got " + ListToString(pads));
  a.stride_h = strides[0];
  a.stride_w = strides[1];
  a.pad_t = pads[0];
  a.pad_l = pads[1];
  a.pad_b = pads[2];
  a.pad_r = pads[3];
  a.dil_h = dils[0];
  a.dil_w = dils[1];
  a.group = GetIntAttr(info, op, "group", 1);
  if (a.group < 1 || a.group > kMaxAttrValue)
    Fail(op, "attribute 'group' must be >= 1, got " + std::to_string(a.group));
  if (with_offset_group) {
    a.offset_group = GetIntAttr(info, op, "offset_group", 1);
    if (a.offset_group < 1 || a.offset_group > kMaxAttrValue)
      Fail(op, "attribute 'offset_group' must be >= 1, got " + std::to_string(a.offset_group));
  }
  return a;
}

Input GetInput(Ort::KernelContext& ctx, size_t index, const char* op, const char* name, bool optional) {
  Input in;
  if (index >= ctx.GetInputCount()) {
    if (optional) return in;
    Fail(op, std::string("input '") + name + "' is missing");
  }
  Ort::ConstValue v = ctx.GetInput(index);
  if (static_cast<const OrtValue*>(v) == nullptr) {
    if (optional) return in;
    Fail(op, std::string("input '") + name + "' is missing");
  }
  if (!v.IsTensor()) Fail(op, std::string("input '") + name + "' must be a tensor");
  auto info = v.GetTensorTypeAndShapeInfo();
  if (info.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
    Fail(op, std::string("input '") + name + "' must be float32");
  in.present = true;
  in.shape = info.GetShape();
  bool empty = false;
  for (int64_t d : in.shape) {
    if (d < 0) Fail(op, std::string("input '") + name + "' has a negative dimension");
    empty = empty || d == 0;
  }
  // A zero-size tensor may have any other dims: its element count is 0, not their product.
  in.numel = empty ? 0 : 1;
  for (int64_t d : in.shape)
    if (!empty) in.numel = CheckedMul(in.numel, d, op, std::string("element count of input '") + name + "'");
  in.data = in.numel > 0 ? v.GetTensorData<float>() : nullptr;
  return in;
}

void CheckRank(const Input& t, size_t rank, const char* op, const char* name, const char* what) {
  if (t.shape.size() != rank)
    Fail(op, std::string("input '") + name + "' must have rank " + std::to_string(rank) + " " + what + ", got shape " +
                 ShapeToString(t.shape));
}

namespace {

// Output size along one axis. The dilated kernel extent (k-1)*dil + 1 is bounded by the padded
// input before it is computed, so nothing here can overflow (in <= 2^30, pads and dil <= 2^24).
int64_t ConvOutSize(int64_t in, int64_t k, int64_t stride, int64_t pad0, int64_t pad1, int64_t dil, const char* op,
                    const char* axis) {
  const int64_t padded = in + pad0 + pad1;
  if (k - 1 > (padded - 1) / dil)
    Fail(op, std::string("input 'W' kernel ") + axis + " " + std::to_string(k) + " (dilation " + std::to_string(dil) +
                 ") is larger than the padded input 'X' " + axis + " " + std::to_string(in) + " + pads " +
                 std::to_string(pad0) + "+" + std::to_string(pad1) + ": output " + axis + " would be <= 0");
  return (padded - ((k - 1) * dil + 1)) / stride + 1;
}

}  // namespace

ConvShapes CheckConvShapes(const Input& X, const Input& W, size_t w_lead, const Conv2dAttrs& a, const char* op) {
  constexpr int64_t kMaxSpatial = int64_t{1} << 30;
  ConvShapes s{X.shape[0], X.shape[1], X.shape[2], X.shape[3],
               W.shape[w_lead], W.shape[w_lead + 1], W.shape[w_lead + 2], W.shape[w_lead + 3], 0, 0, 0};
  const std::string out_dim = std::to_string(w_lead), in_dim = std::to_string(w_lead + 1);
  if (s.C == 0) Fail(op, "input 'X' must have at least one channel, got shape " + ShapeToString(X.shape));
  if (s.H == 0 || s.W == 0) Fail(op, "input 'X' has an empty spatial dimension, shape " + ShapeToString(X.shape));
  if (s.H > kMaxSpatial || s.W > kMaxSpatial) Fail(op, "input 'X' spatial size is too large (> 2^30)");
  if (s.KH == 0 || s.KW == 0) Fail(op, "input 'W' has an empty kernel, shape " + ShapeToString(W.shape));
  if (!a.kernel_shape.empty() && (a.kernel_shape[0] != s.KH || a.kernel_shape[1] != s.KW))
    Fail(op, "attribute 'kernel_shape' " + ShapeToString(a.kernel_shape) + " does not match input 'W' shape " +
                 ShapeToString(W.shape));
  if (s.C % a.group != 0)
    Fail(op, "input 'X' channels (" + std::to_string(s.C) + ") must be divisible by group (" + std::to_string(a.group) + ")");
  if (s.Cg != s.C / a.group)  // (not Cg * group != C: Cg comes from the model and may be huge)
    Fail(op, "input 'W' must have C/group = " + std::to_string(s.C / a.group) + " input channels (dim " + in_dim +
                 "), got shape " + ShapeToString(W.shape));
  if (s.O % a.group != 0)
    Fail(op, "input 'W' output channels (dim " + out_dim + ", " + std::to_string(s.O) + ") must be divisible by group (" +
                 std::to_string(a.group) + ")");
  s.OH = ConvOutSize(s.H, s.KH, a.stride_h, a.pad_t, a.pad_b, a.dil_h, op, "height");
  s.OW = ConvOutSize(s.W, s.KW, a.stride_w, a.pad_l, a.pad_r, a.dil_w, op, "width");
  s.KK = CheckedMul(s.KH, s.KW, op, "input 'W' kernel size kh*kw");
  CheckedMul(s.KK, s.Cg, op, "input 'W' reduction size C/group*kh*kw");
  CheckedMul(CheckedMul(CheckedMul(s.N, s.O, op, "output 'Y' size"), s.OH, op, "output 'Y' size"), s.OW, op,
             "output 'Y' size");
  return s;
}

namespace {
void OrtParallelFor(void* ctx, kern::TaskFn fn, size_t total, void* user) {
  if (total == 0) return;
  if (total == 1) {
    fn(user, 0);
    return;
  }
  Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(static_cast<const OrtKernelContext*>(ctx), fn, total, 0, user));
}

bool CpuHasAvx2Fma() {
#if defined(EDGECONV_HAVE_AVX2)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return false;
#endif
}

}  // namespace

const kern::KernelTable& DefaultKernels() {
  static const kern::KernelTable* table = [] {
#if defined(EDGECONV_HAVE_AVX2)
    const char* force = std::getenv("EDGECONV_ISA");
    const bool want_generic = force != nullptr && std::strcmp(force, "generic") == 0;
    if (CpuHasAvx2Fma() && !want_generic) return &kern::avx2::kTable;
#endif
    return &kern::generic::kTable;
  }();
  return *table;
}

namespace {

// Value of session config entry `key`, or "" when absent (runtimes before API 18 cannot read them).
std::string ConfigEntry(const OrtApiBase* api_base, const OrtSessionOptions* options, const char* key) {
  const OrtApi* api = api_base->GetApi(18);  // HasSessionConfigEntry / GetSessionConfigEntry
  if (api == nullptr || options == nullptr) return "";
  int has = 0;
  Ort::ThrowOnError(api->HasSessionConfigEntry(options, key, &has));
  if (!has) return "";
  size_t size = 0;
  Ort::ThrowOnError(api->GetSessionConfigEntry(options, key, nullptr, &size));
  std::string v(size, '\0');
  Ort::ThrowOnError(api->GetSessionConfigEntry(options, key, &v[0], &size));
  v.resize(std::strlen(v.c_str()));
  return v;
}

[[noreturn]] void BadConfig(const char* key, const std::string& value, const char* expected) {
  throw Ort::Exception(std::string("edgeconv: session config entry '") + key + "' must be " + expected + ", got '" +
                           value + "'",
                       ORT_INVALID_ARGUMENT);
}

}  // namespace

OpConfig ReadOpConfig(const OrtApiBase* api_base, const OrtSessionOptions* options) {
  OpConfig c;
  c.kernels = &DefaultKernels();
  const std::string isa = ConfigEntry(api_base, options, kIsaConfigKey);
  if (isa == "generic") {
    c.kernels = &kern::generic::kTable;
  } else if (isa == "avx2") {
#if defined(EDGECONV_HAVE_AVX2)
    if (!CpuHasAvx2Fma()) BadConfig(kIsaConfigKey, isa, "auto or generic on this CPU (no AVX2+FMA)");
    c.kernels = &kern::avx2::kTable;
#else
    BadConfig(kIsaConfigKey, isa, "auto or generic (library built without the AVX2 variant)");
#endif
  } else if (!isa.empty() && isa != "auto") {
    BadConfig(kIsaConfigKey, isa, "auto, generic or avx2");
  }
  const std::string limit = ConfigEntry(api_base, options, kMemoryLimitConfigKey);
  if (!limit.empty()) {
    int64_t v = 0;
    for (char ch : limit)
      if (ch < '0' || ch > '9' || __builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, ch - '0', &v))
        BadConfig(kMemoryLimitConfigKey, limit, "a number of bytes (decimal int64; 0 = no limit)");
    c.memory_limit_bytes = v;
  }
  return c;
}

void MemoryBudget::Add(int64_t floats, const char* what) {
  int64_t b = 0, total = 0;
  const bool overflow = floats < 0 || __builtin_mul_overflow(floats, int64_t{sizeof(float)}, &b) ||
                        __builtin_add_overflow(bytes_, b, &total);
  if (overflow || (limit_ > 0 && total > limit_))
    Fail(op_, std::string("needs ") + (overflow ? std::string("more than 2^63") : std::to_string(total)) +
                  " bytes of memory (output and scratch, with the " + what + "), above the limit of " +
                  std::to_string(limit_) + " bytes set by session config entry '" + kMemoryLimitConfigKey + "'",
         ORT_FAIL);
  bytes_ = total;
}

namespace {
uint32_t g_runtime_api = ORT_API_VERSION;
}  // namespace

kern::Runner MakeRunner(OrtKernelContext* ctx) { return kern::Runner{&OrtParallelFor, ctx}; }

uint32_t CustomOpVersion() { return g_runtime_api < ORT_API_VERSION ? g_runtime_api : ORT_API_VERSION; }
void SetRuntimeApiVersion(uint32_t v) { g_runtime_api = v; }

namespace {
void SerialFor(void*, kern::TaskFn fn, size_t total, void* user) {
  for (size_t i = 0; i < total; ++i) fn(user, i);
}
}  // namespace

void PackedWeightCache::Init(const OrtKernelInfo* info, size_t index) {
  int is_constant = 0;
  const OrtValue* value = nullptr;
  OrtStatus* st = Ort::GetApi().KernelInfoGetConstantInput_tensor(info, index, &is_constant, &value);
  if (st != nullptr) {
    Ort::GetApi().ReleaseStatus(st);
    return;
  }
  if (!is_constant || value == nullptr) return;
  Ort::ConstValue v(value);
  if (!v.IsTensor()) return;
  auto ti = v.GetTensorTypeAndShapeInfo();
  if (ti.GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT || ti.GetElementCount() == 0) return;
  const_data_ = v.GetTensorData<float>();
}

const float* PackedWeightCache::Get(const kern::KernelTable& k, const float* w, int64_t N, int64_t O, int64_t G,
                                    int64_t Cg, int64_t KK, const char* op) {
  if (const_data_ == nullptr || w != const_data_) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& e : entries_)
    if (e.first == &k) return e.second->data();
  // First use: pack serially (one-time cost; no pool use while holding the lock).
  const int64_t size = CheckedMul(N, k.packed_weights_size(O, G, Cg, KK), op, "packed size of input 'W'");
  auto buf = std::make_unique<FloatBuffer>(static_cast<size_t>(size), op);
  const kern::Runner serial{&SerialFor, nullptr};
  if (k.pack_weights(w, nullptr, buf->data(), N, 1, O, G, Cg, KK, serial) != 0) Fail(op, "out of memory (weight packing)", ORT_FAIL);
  entries_.emplace_back(&k, std::move(buf));
  return entries_.back().second->data();
}

FloatBuffer::FloatBuffer(size_t n, const char* op) {
  if (n == 0) n = 1;
  if (n > std::numeric_limits<size_t>::max() / sizeof(float) - 64) Fail(op, "buffer size overflow", ORT_FAIL);
  p_ = static_cast<float*>(::operator new(n * sizeof(float), std::align_val_t(64), std::nothrow));
  if (p_ == nullptr) Fail(op, "out of memory allocating " + std::to_string(n * sizeof(float)) + " bytes", ORT_FAIL);
}

FloatBuffer::~FloatBuffer() {
  if (p_) ::operator delete(p_, std::align_val_t(64), std::nothrow);
}

}  // namespace edgeconv

// ---- thread-local scratch used by the kernels (ISA-neutral) ----
namespace edgeconv {
namespace kern {
namespace {
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() {
    if (p) ::operator delete(p, std::align_val_t(64), std::nothrow);
  }
};
thread_local Scratch t_scratch;
}  // namespace

float* ThreadScratch(size_t floats) {
  if (floats == 0) floats = 1;
  Scratch& s = t_scratch;
  if (s.n >= floats && s.p != nullptr) return s.p;
  if (s.p) ::operator delete(s.p, std::align_val_t(64), std::nothrow);
  s.p = static_cast<float*>(::operator new(floats * sizeof(float), std::align_val_t(64), std::nothrow));
  s.n = s.p ? floats : 0;
  return s.p;
}

}  // namespace kern
}  // namespace edgeconv

namespace edgeconv {
namespace kern {

void TrimThreadScratch() {
  Scratch& s = t_scratch;
  if (s.n * sizeof(float) <= kRetainedScratchBytes) return;
  ::operator delete(s.p, std::align_val_t(64), std::nothrow);
  s.p = nullptr;
  s.n = 0;
}

}  // namespace kern
}  // namespace edgeconv
