// Registration of all edgeconv onnxruntime custom ops (domain "edgeconv", since_version 1).
//
// Load with SessionOptions.register_custom_ops_library(path) (Python) or
// RegisterCustomOpsLibrary; onnxruntime then calls RegisterCustomOps. The library is built with
// ORT_API_MANUAL_INIT and is not linked to libonnxruntime: the API table comes from api_base.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cpu/common.h"
#include "cpu/deform_conv2d.h"
#include "cpu/dynamic_conv2d.h"

#if defined(_WIN32)
#define EDGECONV_EXPORT __declspec(dllexport)
#else
#define EDGECONV_EXPORT __attribute__((visibility("default")))
#endif

namespace {

constexpr const char* kDomain = "edgeconv";

// onnxruntime "1.X.Y" exposes C API version X.
uint32_t ApiVersionFromString(const char* s) {
  if (s == nullptr) return 0;
  unsigned major = 0, minor = 0;
  if (std::sscanf(s, "%u.%u", &major, &minor) != 2 || major != 1) return 0;
  return minor;
}

// The ops and their domain for one OpConfig (the session config entries read at registration).
// Registering again with the same settings reuses them: nothing is allocated per registration.
struct Registration {
  edgeconv::OpConfig config;
  // The single op list: every op of the library is listed here.
  edgeconv::DeformConv2dOp deform_conv2d;
  edgeconv::DynamicConv2dOp dynamic_conv2d;
  OrtCustomOpDomain* domain = nullptr;

  explicit Registration(const edgeconv::OpConfig& c) : config(c), deform_conv2d(c), dynamic_conv2d(c) {}
  std::vector<OrtCustomOp*> Ops() { return {&deform_conv2d, &dynamic_conv2d}; }
};

struct Registry {
  std::mutex mu;
  bool version_set = false;
  // Domains must outlive every session that uses them: kept until process exit (one per distinct
  // config).
  std::vector<std::unique_ptr<Registration>> registrations;
};

Registry& GetRegistry() {
  static Registry* r = new Registry();  // never destroyed: sessions may outlive static destructors
  return *r;
}

// The registration for `config`, creating its ops and domain on first use.
OrtStatus* FindOrCreate(const OrtApi* api, Registry& reg, const edgeconv::OpConfig& config, Registration** out) {
  for (auto& r : reg.registrations)
    if (r->config == config) {
      *out = r.get();
      return nullptr;
    }
  auto r = std::make_unique<Registration>(config);
  if (OrtStatus* st = api->CreateCustomOpDomain(kDomain, &r->domain)) return st;
  for (OrtCustomOp* op : r->Ops()) {
    if (OrtStatus* st = api->CustomOpDomain_Add(r->domain, op)) {
      api->ReleaseCustomOpDomain(r->domain);
      return st;
    }
  }
  *out = r.get();
  reg.registrations.push_back(std::move(r));
  return nullptr;
}

}  // namespace

extern "C" EDGECONV_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                     const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // cannot even report an error
  const OrtApi* api = api_base->GetApi(edgeconv::kMinOrtApiVersion);
  if (api == nullptr) {
    // Runtime older than 1.17: report through API version 1 (CreateStatus exists in every version).
    const std::string msg = std::string("edgeconv: onnxruntime ") + api_base->GetVersionString() +
                            " is too old; libedgeconv_ort needs onnxruntime >= 1." +
                            std::to_string(edgeconv::kMinOrtApiVersion) + " (C API version " +
                            std::to_string(edgeconv::kMinOrtApiVersion) + ")";
    const OrtApi* api1 = api_base->GetApi(1);
    return api1 ? api1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  Registry& reg = GetRegistry();
  std::lock_guard<std::mutex> lock(reg.mu);
  if (!reg.version_set) {
    uint32_t runtime = ApiVersionFromString(api_base->GetVersionString());
    if (runtime < edgeconv::kMinOrtApiVersion) runtime = edgeconv::kMinOrtApiVersion;
    edgeconv::SetRuntimeApiVersion(runtime);
    reg.version_set = true;
  }
  edgeconv::OpConfig config;
  try {
    config = edgeconv::ReadOpConfig(api_base, options);
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  }
  Registration* r = nullptr;
  if (OrtStatus* st = FindOrCreate(api, reg, config, &r)) return st;
  return api->AddCustomOpDomain(options, r->domain);
}
