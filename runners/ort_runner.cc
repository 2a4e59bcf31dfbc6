// edgeconv ort_runner: run an ONNX model with onnxruntime's C API, loading libonnxruntime.so at run
// time (dlopen) and registering custom-op libraries (e.g. libedgeconv_ort.so).
//
// Built for aarch64 (runners/CMakeLists.txt + cmake/aarch64-linux-gnu.cmake) and run under
// `qemu-aarch64 -L /usr/aarch64-linux-gnu`; builds natively too (same source).
//
// Usage:
//   ort_runner --ort-lib libonnxruntime.so --model m.onnx [--custom-op-lib lib.so]...
//              [--input x.npy]... --output-dir DIR [--threads 1] [--repeat 1] [--opt-level 99]
//   Inputs are .npy files given in the order of the model's graph inputs. Output i is written as
//   DIR/output_<i>.npy. The last stdout line is a JSON summary:
//   {"runner": "ort", "ort_version": ..., "load_ms": ..., "run_ms": [...],
//    "inputs": [...], "outputs": [{"name": ..., "file": ..., "shape": [...], "dtype": ...}]}
#include <dlfcn.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "npy.h"
#include "summary.h"
#include "onnxruntime_c_api.h"

namespace {

// The oldest API level whose functions we use (RegisterCustomOpsLibrary_V2 is 13).
constexpr uint32_t kApiLevel = 13;

const OrtApi* g_ort = nullptr;

void check(OrtStatus* st, const char* what) {
  if (st == nullptr) return;
  std::string msg = std::string(what) + ": " + g_ort->GetErrorMessage(st);
  g_ort->ReleaseStatus(st);
  throw std::runtime_error(msg);
}
#define ORT_CHECK(expr) check((expr), #expr)

struct DType {
  const char* descr;
  ONNXTensorElementDataType onnx;
};
const DType kDTypes[] = {
    {"<f4", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},   {"<f8", ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE},
    {"<f2", ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16}, {"<i8", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64},
    {"<i4", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32},   {"|i1", ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8},
    {"|u1", ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8},   {"|b1", ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL},
};
ONNXTensorElementDataType to_onnx(const std::string& descr) {
  for (const auto& d : kDTypes)
    if (descr == d.descr) return d.onnx;
  throw std::runtime_error("unsupported input dtype " + descr);
}
const char* to_descr(ONNXTensorElementDataType t) {
  for (const auto& d : kDTypes)
    if (t == d.onnx) return d.descr;
  throw std::runtime_error("unsupported output element type " + std::to_string(static_cast<int>(t)));
}

using runner::json_shape;
using runner::json_str;
using runner::ms_since;

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "ort_runner: %s\nusage: ort_runner --ort-lib LIB --model M.onnx [--custom-op-lib L]... "
               "[--input X.npy]... --output-dir DIR [--threads N] [--repeat N] [--opt-level 0|1|2|99]\n",
               msg);
  std::exit(2);
}

int run(int argc, char** argv) {
  std::string ort_lib, model, out_dir;
  std::vector<std::string> custom_libs, inputs;
  int threads = 1, repeat = 1, opt_level = 99;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--ort-lib") ort_lib = next();
    else if (a == "--model") model = next();
    else if (a == "--custom-op-lib") custom_libs.push_back(next());
    else if (a == "--input") inputs.push_back(next());
    else if (a == "--output-dir") out_dir = next();
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--repeat") repeat = std::atoi(next().c_str());
    else if (a == "--opt-level") opt_level = std::atoi(next().c_str());
    else if (a == "-h" || a == "--help") usage("help");
    else usage(("unknown argument " + a).c_str());
  }
  if (ort_lib.empty() || model.empty() || out_dir.empty())
    usage("--ort-lib, --model and --output-dir are required");
  if (repeat < 1) repeat = 1;

  auto t_load = std::chrono::steady_clock::now();
  void* h = dlopen(ort_lib.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!h) throw std::runtime_error(std::string("dlopen failed: ") + dlerror());
  using GetApiBaseFn = const OrtApiBase* (*)();
  auto get_api_base = reinterpret_cast<GetApiBaseFn>(dlsym(h, "OrtGetApiBase"));
  if (!get_api_base) throw std::runtime_error("OrtGetApiBase not exported by " + ort_lib);
  const OrtApiBase* base = get_api_base();
  const std::string ort_version = base->GetVersionString();
  g_ort = base->GetApi(kApiLevel);
  if (!g_ort)
    throw std::runtime_error("onnxruntime " + ort_version + " does not provide ORT API " +
                             std::to_string(kApiLevel));

  OrtEnv* env = nullptr;
  ORT_CHECK(g_ort->CreateEnv(ORT_LOGGING_LEVEL_WARNING, "edgeconv-ort-runner", &env));
  OrtSessionOptions* so = nullptr;
  ORT_CHECK(g_ort->CreateSessionOptions(&so));
  ORT_CHECK(g_ort->SetIntraOpNumThreads(so, threads));
  ORT_CHECK(g_ort->SetInterOpNumThreads(so, 1));
  GraphOptimizationLevel lvl = opt_level == 0   ? ORT_DISABLE_ALL
                               : opt_level == 1 ? ORT_ENABLE_BASIC
                               : opt_level == 2 ? ORT_ENABLE_EXTENDED
                                                : ORT_ENABLE_ALL;
  ORT_CHECK(g_ort->SetSessionGraphOptimizationLevel(so, lvl));
  for (const auto& lib : custom_libs)
    check(g_ort->RegisterCustomOpsLibrary_V2(so, lib.c_str()),
          ("RegisterCustomOpsLibrary_V2(" + lib + ")").c_str());
  OrtSession* sess = nullptr;
  ORT_CHECK(g_ort->CreateSession(env, model.c_str(), so, &sess));
  double load_ms = ms_since(t_load);

  OrtAllocator* alloc = nullptr;
  ORT_CHECK(g_ort->GetAllocatorWithDefaultOptions(&alloc));
  size_t n_in = 0, n_out = 0;
  ORT_CHECK(g_ort->SessionGetInputCount(sess, &n_in));
  ORT_CHECK(g_ort->SessionGetOutputCount(sess, &n_out));
  if (inputs.size() != n_in)
    throw std::runtime_error("model has " + std::to_string(n_in) + " inputs, got " +
                             std::to_string(inputs.size()) + " --input files");
  std::vector<std::string> in_names(n_in), out_names(n_out);
  for (size_t i = 0; i < n_in; ++i) {
    char* nm = nullptr;
    ORT_CHECK(g_ort->SessionGetInputName(sess, i, alloc, &nm));
    in_names[i] = nm;
    ORT_CHECK(g_ort->AllocatorFree(alloc, nm));
  }
  for (size_t i = 0; i < n_out; ++i) {
    char* nm = nullptr;
    ORT_CHECK(g_ort->SessionGetOutputName(sess, i, alloc, &nm));
    out_names[i] = nm;
    ORT_CHECK(g_ort->AllocatorFree(alloc, nm));
  }

  OrtMemoryInfo* mem = nullptr;
  ORT_CHECK(g_ort->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &mem));
  std::vector<npy::Array> arrays;
  arrays.reserve(n_in);
  std::vector<OrtValue*> in_vals(n_in, nullptr);
  for (size_t i = 0; i < n_in; ++i) {
    arrays.push_back(npy::load(inputs[i]));
    npy::Array& a = arrays.back();
    ORT_CHECK(g_ort->CreateTensorWithDataAsOrtValue(mem, a.data.data(), a.data.size(),
                                                    a.shape.data(), a.shape.size(),
                                                    to_onnx(a.descr), &in_vals[i]));
  }
  std::vector<const char*> in_c, out_c;
  for (auto& s : in_names) in_c.push_back(s.c_str());
  for (auto& s : out_names) out_c.push_back(s.c_str());

  std::vector<double> run_ms;
  std::vector<OrtValue*> out_vals(n_out, nullptr);
  for (int r = 0; r < repeat; ++r) {
    for (auto& v : out_vals)
      if (v) { g_ort->ReleaseValue(v); v = nullptr; }
    auto t0 = std::chrono::steady_clock::now();
    ORT_CHECK(g_ort->Run(sess, nullptr, in_c.data(), in_vals.data(), n_in, out_c.data(), n_out,
                         out_vals.data()));
    run_ms.push_back(ms_since(t0));
  }

  std::string outs_json;
  for (size_t i = 0; i < n_out; ++i) {
    int is_tensor = 0;
    ORT_CHECK(g_ort->IsTensor(out_vals[i], &is_tensor));
    if (!is_tensor) throw std::runtime_error("output " + out_names[i] + " is not a tensor");
    OrtTensorTypeAndShapeInfo* info = nullptr;
    ORT_CHECK(g_ort->GetTensorTypeAndShape(out_vals[i], &info));
    ONNXTensorElementDataType et;
    ORT_CHECK(g_ort->GetTensorElementType(info, &et));
    size_t rank = 0, count = 0;
    ORT_CHECK(g_ort->GetDimensionsCount(info, &rank));
    std::vector<int64_t> shape(rank);
    ORT_CHECK(g_ort->GetDimensions(info, shape.data(), rank));
    ORT_CHECK(g_ort->GetTensorShapeElementCount(info, &count));
    g_ort->ReleaseTensorTypeAndShapeInfo(info);
    void* data = nullptr;
    ORT_CHECK(g_ort->GetTensorMutableData(out_vals[i], &data));
    const char* descr = to_descr(et);
    std::string file = out_dir + "/output_" + std::to_string(i) + ".npy";
    npy::save(file, descr, shape, data, count * npy::itemsize(descr));
    outs_json += std::string(i ? ", " : "") + "{\"name\": " + json_str(out_names[i]) +
                 ", \"file\": " + json_str(file) + ", \"shape\": " + json_shape(shape) +
                 ", \"dtype\": " + json_str(descr) + "}";
  }
  std::string ins_json;
  for (size_t i = 0; i < n_in; ++i)
    ins_json += std::string(i ? ", " : "") + "{\"name\": " + json_str(in_names[i]) +
                ", \"file\": " + json_str(inputs[i]) + ", \"shape\": " +
                json_shape(arrays[i].shape) + "}";
  std::string runs;
  for (size_t i = 0; i < run_ms.size(); ++i)
    runs += (i ? ", " : "") + std::to_string(run_ms[i]);
  std::printf(
      "{\"runner\": \"ort\", \"ort_version\": %s, \"threads\": %d, \"load_ms\": %f, "
      "\"run_ms\": [%s], \"inputs\": [%s], \"outputs\": [%s]}\n",
      json_str(ort_version).c_str(), threads, load_ms, runs.c_str(), ins_json.c_str(),
      outs_json.c_str());
  std::fflush(stdout);

  for (auto v : out_vals) g_ort->ReleaseValue(v);
  for (auto v : in_vals) g_ort->ReleaseValue(v);
  g_ort->ReleaseMemoryInfo(mem);
  g_ort->ReleaseSession(sess);
  g_ort->ReleaseSessionOptions(so);
  g_ort->ReleaseEnv(env);
  // The library stays loaded (unloading onnxruntime at exit is not worth the risk).
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ort_runner: error: %s\n", e.what());
    return 1;
  }
}
