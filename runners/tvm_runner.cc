// edgeconv tvm_runner: run a TVM (Relax VM) compiled library through the tvm-ffi C API.
//
// Links libtvm_ffi.so (C API) and libtvm_runtime.so (relax VM, the "relax.VMExecutable" loader,
// TVMBackend* symbols used by the compiled kernels) from the aarch64 PyPI wheels; built for
// aarch64 and run under `qemu-aarch64 -L /usr/aarch64-linux-gnu`.
//
// Flow (what tvm.relax.VirtualMachine does in Python):
//   mod  = ffi.ModuleLoadFromFile(path)
//   exec = mod["vm_load_executable"]()
//   exec["vm_initialization"](kDLCPU, 0, POOLED_ALLOCATOR=2)
//   out  = exec[func](*inputs)         # Tensor or Array of Tensors
//
// Usage:
//   tvm_runner --module lib.so [--input x.npy]... --output-dir DIR [--func main] [--repeat 1]
//   Output i (flattened tuple order) is written to DIR/output_<i>.npy. The last stdout line is a
//   JSON summary: {"runner": "tvm", "tvm_ffi_version": ..., "load_ms": ..., "run_ms": [...],
//                  "outputs": [{"file": ..., "shape": [...], "dtype": ...}]}
#include <limits.h>
#include <stdlib.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "dlpack/dlpack.h"
#include "npy.h"
#include "summary.h"
#include "tvm/ffi/c_api.h"

namespace {

std::string take_error() {
  TVMFFIObjectHandle err = nullptr;
  TVMFFIErrorMoveFromRaised(&err);
  if (!err) return "unknown error";
  auto* cell = reinterpret_cast<TVMFFIErrorCell*>(static_cast<char*>(err) + sizeof(TVMFFIObject));
  std::string msg = std::string(cell->kind.data, cell->kind.size) + ": " +
                    std::string(cell->message.data, cell->message.size);
  TVMFFIObjectDecRef(err);
  return msg;
}

void check(int rc, const std::string& what) {
  if (rc != 0) throw std::runtime_error(what + " failed: " + take_error());
}

// An owned reference to an object (released on destruction).
struct Obj {
  TVMFFIObjectHandle h = nullptr;
  Obj() = default;
  explicit Obj(TVMFFIObjectHandle x) : h(x) {}
  Obj(const Obj&) = delete;
  Obj& operator=(const Obj&) = delete;
  Obj(Obj&& o) noexcept : h(o.h) { o.h = nullptr; }
  Obj& operator=(Obj&& o) noexcept {
    std::swap(h, o.h);
    return *this;
  }
  ~Obj() {
    if (h) TVMFFIObjectDecRef(h);
  }
  int32_t type_index() const { return static_cast<TVMFFIObject*>(h)->type_index; }
};

TVMFFIAny none_any() {
  TVMFFIAny a;
  std::memset(&a, 0, sizeof a);
  a.type_index = kTVMFFINone;
  return a;
}
TVMFFIAny int_arg(int64_t v) {
  TVMFFIAny a = none_any();
  a.type_index = kTVMFFIInt;
  a.v_int64 = v;
  return a;
}
TVMFFIAny bool_arg(bool v) {
  TVMFFIAny a = none_any();
  a.type_index = kTVMFFIBool;
  a.v_int64 = v ? 1 : 0;
  return a;
}
TVMFFIAny str_arg(const char* s) {
  TVMFFIAny a = none_any();
  a.type_index = kTVMFFIRawStr;
  a.v_c_str = s;
  return a;
}
TVMFFIAny obj_arg(const Obj& o) {
  TVMFFIAny a = none_any();
  a.type_index = o.type_index();
  a.v_obj = static_cast<TVMFFIObject*>(o.h);
  return a;
}

// Call a function; returns the owned result.
TVMFFIAny call(TVMFFIObjectHandle f, std::vector<TVMFFIAny> args, const std::string& what) {
  TVMFFIAny res = none_any();
  check(TVMFFIFunctionCall(f, args.data(), static_cast<int32_t>(args.size()), &res), what);
  return res;
}
// Wrap an owned object result (throws if it is not an object).
Obj as_obj(const TVMFFIAny& a, const std::string& what) {
  if (a.type_index < kTVMFFIStaticObjectBegin)
    throw std::runtime_error(what + " returned a non-object (type index " +
                             std::to_string(a.type_index) + ")");
  return Obj(a.v_obj);
}

Obj global(const char* name) {
  TVMFFIByteArray n{name, std::strlen(name)};
  TVMFFIObjectHandle h = nullptr;
  check(TVMFFIFunctionGetGlobal(&n, &h), std::string("get global ") + name);
  if (!h) throw std::runtime_error(std::string("global function not found: ") + name);
  return Obj(h);
}

Obj module_function(const Obj& get_function, const Obj& mod, const char* name) {
  TVMFFIAny r = call(get_function.h, {obj_arg(mod), str_arg(name), bool_arg(true)},
                     std::string("ModuleGetFunction(") + name + ")");
  if (r.type_index == kTVMFFINone)
    throw std::runtime_error(std::string("module has no function '") + name + "'");
  return as_obj(r, name);
}

// DLPack dtype <-> numpy descr.
struct DT {
  const char* descr;
  uint8_t code, bits;
};
const DT kDTs[] = {{"<f4", kDLFloat, 32}, {"<f8", kDLFloat, 64}, {"<f2", kDLFloat, 16},
                   {"<i8", kDLInt, 64},   {"<i4", kDLInt, 32},   {"|i1", kDLInt, 8},
                   {"|u1", kDLUInt, 8},   {"|b1", kDLBool, 8}};
DLDataType to_dl(const std::string& descr) {
  for (const auto& d : kDTs)
    if (descr == d.descr) return DLDataType{d.code, d.bits, 1};
  throw std::runtime_error("unsupported input dtype " + descr);
}
const char* to_descr(DLDataType t) {
  for (const auto& d : kDTs)
    if (t.code == d.code && t.bits == d.bits && t.lanes == 1) return d.descr;
  if (t.code == kDLUInt && t.bits == 1) return "|b1";
  throw std::runtime_error("unsupported output dtype code=" + std::to_string(t.code) +
                           " bits=" + std::to_string(t.bits));
}

// Input tensors: npy arrays handed over to tvm-ffi as DLPack tensors (the deleter frees them).
// The data is copied into a 64-byte aligned buffer (TVM kernels assume aligned buffers).
struct Holder {
  npy::Array arr;
  DLManagedTensor mt;
  void* buf = nullptr;
  ~Holder() { std::free(buf); }
};
void holder_deleter(DLManagedTensor* self) { delete static_cast<Holder*>(self->manager_ctx); }

Obj make_tensor(npy::Array arr) {
  auto* h = new Holder{std::move(arr), {}};
  size_t bytes = h->arr.data.size();
  h->buf = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (!h->buf) {
    delete h;
    throw std::bad_alloc();
  }
  if (bytes) std::memcpy(h->buf, h->arr.data.data(), bytes);
  std::vector<char>().swap(h->arr.data);
  h->mt.dl_tensor.data = h->buf;
  h->mt.dl_tensor.device = DLDevice{kDLCPU, 0};
  h->mt.dl_tensor.ndim = static_cast<int32_t>(h->arr.shape.size());
  h->mt.dl_tensor.dtype = to_dl(h->arr.descr);
  h->mt.dl_tensor.shape = h->arr.shape.data();
  h->mt.dl_tensor.strides = nullptr;
  h->mt.dl_tensor.byte_offset = 0;
  h->mt.manager_ctx = h;
  h->mt.deleter = holder_deleter;
  TVMFFIObjectHandle out = nullptr;
  if (TVMFFITensorFromDLPack(&h->mt, 0, 1, &out) != 0) {
    std::string e = take_error();
    delete h;
    throw std::runtime_error("TVMFFITensorFromDLPack failed: " + e);
  }
  return Obj(out);
}

using runner::json_shape;
using runner::json_str;
using runner::ms_since;

struct Ctx {
  Obj array_size, array_get;
  std::string out_dir;
  std::string outs_json;
  int n = 0;
};

void write_tensor(Ctx& c, const Obj& t) {
  const DLTensor* dl =
      reinterpret_cast<const DLTensor*>(static_cast<char*>(t.h) + sizeof(TVMFFIObject));
  if (dl->device.device_type != kDLCPU) throw std::runtime_error("output is not on the CPU");
  std::vector<int64_t> shape(dl->shape, dl->shape + dl->ndim);
  int64_t numel = 1;
  for (int64_t d : shape) numel *= d;
  if (dl->strides) {  // only compact row-major strides are supported
    int64_t expect = 1;
    for (int i = dl->ndim - 1; i >= 0; --i) {
      if (shape[i] != 1 && dl->strides[i] != expect)
        throw std::runtime_error("non-contiguous output tensor");
      expect *= shape[i];
    }
  }
  const char* descr = to_descr(dl->dtype);
  std::string file = c.out_dir + "/output_" + std::to_string(c.n) + ".npy";
  npy::save(file, descr, shape, static_cast<const char*>(dl->data) + dl->byte_offset,
            static_cast<size_t>(numel) * npy::itemsize(descr));
  c.outs_json += std::string(c.n ? ", " : "") + "{\"file\": " + json_str(file) +
                 ", \"shape\": " + json_shape(shape) + ", \"dtype\": " + json_str(descr) + "}";
  ++c.n;
}

void write_outputs(Ctx& c, const TVMFFIAny& r) {
  if (r.type_index == kTVMFFITensor) {
    Obj t(r.v_obj);
    write_tensor(c, t);
    return;
  }
  if (r.type_index == kTVMFFIArray) {
    Obj arr(r.v_obj);
    TVMFFIAny n = call(c.array_size.h, {obj_arg(arr)}, "ffi.ArraySize");
    for (int64_t i = 0; i < n.v_int64; ++i) {
      TVMFFIAny item = call(c.array_get.h, {obj_arg(arr), int_arg(i)}, "ffi.ArrayGetItem");
      write_outputs(c, item);
    }
    return;
  }
  if (r.type_index >= kTVMFFIStaticObjectBegin) TVMFFIObjectDecRef(r.v_obj);
  throw std::runtime_error("unsupported output type index " + std::to_string(r.type_index));
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "tvm_runner: %s\nusage: tvm_runner --module LIB.so [--input X.npy]... --output-dir DIR "
               "[--func main] [--repeat N]\n",
               msg);
  std::exit(2);
}

int run(int argc, char** argv) {
  std::string module_path, func = "main";
  Ctx c;
  std::vector<std::string> inputs;
  int repeat = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--module") module_path = next();
    else if (a == "--input") inputs.push_back(next());
    else if (a == "--output-dir") c.out_dir = next();
    else if (a == "--func") func = next();
    else if (a == "--repeat") repeat = std::atoi(next().c_str());
    else if (a == "-h" || a == "--help") usage("help");
    else usage(("unknown argument " + a).c_str());
  }
  if (module_path.empty() || c.out_dir.empty()) usage("--module and --output-dir are required");
  if (repeat < 1) repeat = 1;
  // dlopen() searches the library path for names without a slash: use an absolute path.
  if (char* abs = realpath(module_path.c_str(), nullptr)) {
    module_path = abs;
    std::free(abs);
  } else {
    throw std::runtime_error("cannot open module " + module_path);
  }

  TVMFFIVersion ver;
  TVMFFIGetVersion(&ver);
  std::string ver_s = std::to_string(ver.major) + "." + std::to_string(ver.minor) + "." +
                      std::to_string(ver.patch);

  auto t_load = std::chrono::steady_clock::now();
  Obj load = global("ffi.ModuleLoadFromFile");
  Obj get_function = global("ffi.ModuleGetFunction");
  c.array_size = global("ffi.ArraySize");
  c.array_get = global("ffi.ArrayGetItem");
  Obj mod = as_obj(call(load.h, {str_arg(module_path.c_str())}, "ModuleLoadFromFile"),
                   "ModuleLoadFromFile");
  Obj vm_load = module_function(get_function, mod, "vm_load_executable");
  Obj vm = as_obj(call(vm_load.h, {}, "vm_load_executable"), "vm_load_executable");
  Obj vm_init = module_function(get_function, vm, "vm_initialization");
  TVMFFIAny r0 = call(vm_init.h, {int_arg(kDLCPU), int_arg(0), int_arg(2 /* pooled */)},
                      "vm_initialization");
  if (r0.type_index >= kTVMFFIStaticObjectBegin) TVMFFIObjectDecRef(r0.v_obj);
  Obj fn = module_function(get_function, vm, func.c_str());
  double load_ms = ms_since(t_load);

  std::vector<Obj> tensors;
  std::string ins_json;
  for (size_t i = 0; i < inputs.size(); ++i) {
    npy::Array a = npy::load(inputs[i]);
    ins_json += std::string(i ? ", " : "") + "{\"file\": " + json_str(inputs[i]) +
                ", \"shape\": " + json_shape(a.shape) + "}";
    tensors.push_back(make_tensor(std::move(a)));
  }
  std::vector<TVMFFIAny> args;
  for (const auto& t : tensors) args.push_back(obj_arg(t));

  std::vector<double> run_ms;
  TVMFFIAny result = none_any();
  for (int r = 0; r < repeat; ++r) {
    if (result.type_index >= kTVMFFIStaticObjectBegin) TVMFFIObjectDecRef(result.v_obj);
    auto t0 = std::chrono::steady_clock::now();
    result = call(fn.h, args, func);
    run_ms.push_back(ms_since(t0));
  }
  write_outputs(c, result);

  std::string runs;
  for (size_t i = 0; i < run_ms.size(); ++i) runs += (i ? ", " : "") + std::to_string(run_ms[i]);
  std::printf(
      "{\"runner\": \"tvm\", \"tvm_ffi_version\": %s, \"load_ms\": %f, \"run_ms\": [%s], "
      "\"inputs\": [%s], \"outputs\": [%s]}\n",
      json_str(ver_s).c_str(), load_ms, runs.c_str(), ins_json.c_str(), c.outs_json.c_str());
  std::fflush(stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tvm_runner: error: %s\n", e.what());
    return 1;
  }
}
