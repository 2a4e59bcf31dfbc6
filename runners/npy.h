// Minimal .npy (NumPy format 1.0/2.0/3.0) reader and writer for the edgeconv ARM runners.
// Supports C-order little-endian arrays of: float32, float64, float16 (raw), int64, int32,
// int8, uint8, bool. That is all the runners need: numpy.save() writes these headers.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace npy {

struct Array {
  std::string descr;           // numpy dtype string, e.g. "<f4"
  std::vector<int64_t> shape;  // empty: scalar
  std::vector<char> data;      // raw bytes, C order

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// Size in bytes of one element of a supported dtype; throws otherwise.
inline size_t itemsize(const std::string& descr) {
  static const struct { const char* d; size_t s; } kTypes[] = {
      {"<f4", 4}, {"<f8", 8}, {"<f2", 2}, {"<i8", 8}, {"<i4", 4},
      {"|i1", 1}, {"|u1", 1}, {"|b1", 1}};
  for (const auto& t : kTypes)
    if (descr == t.d) return t.s;
  throw std::runtime_error("npy: unsupported dtype '" + descr +
                           "' (supported: <f4 <f8 <f2 <i8 <i4 |i1 |u1 |b1)");
}

namespace detail {
inline std::string dict_value(const std::string& header, const std::string& key) {
  size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw std::runtime_error("npy: header has no '" + key + "'");
  size_t colon = header.find(':', k);
  if (colon == std::string::npos) throw std::runtime_error("npy: malformed header");
  size_t p = colon + 1;
  while (p < header.size() && header[p] == ' ') ++p;
  if (p < header.size() && header[p] == '(') {
    size_t e = header.find(')', p);
    return header.substr(p, e - p + 1);
  }
  if (p < header.size() && header[p] == '\'') {
    size_t e = header.find('\'', p + 1);
    return header.substr(p + 1, e - p - 1);
  }
  size_t e = header.find_first_of(",}", p);
  return header.substr(p, e - p);
}
}  // namespace detail

inline Array load(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("npy: cannot open " + path);
  char magic[6];
  f.read(magic, 6);
  if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    throw std::runtime_error("npy: " + path + " is not a .npy file");
  unsigned char ver[2];
  f.read(reinterpret_cast<char*>(ver), 2);
  uint32_t hlen = 0;
  if (ver[0] == 1) {
    unsigned char b[2];
    f.read(reinterpret_cast<char*>(b), 2);
    hlen = b[0] | (b[1] << 8);
  } else {
    unsigned char b[4];
    f.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  }
  std::string header(hlen, '\0');
  f.read(&header[0], hlen);
  if (!f) throw std::runtime_error("npy: truncated header in " + path);

  Array a;
  a.descr = detail::dict_value(header, "descr");
  if (a.descr == "<b1") a.descr = "|b1";
  if (detail::dict_value(header, "fortran_order").find("True") != std::string::npos)
    throw std::runtime_error("npy: fortran_order arrays are not supported (" + path + ")");
  std::string shp = detail::dict_value(header, "shape");
  for (char& c : shp)
    if (c == '(' || c == ')' || c == ',') c = ' ';
  std::istringstream ss(shp);
  int64_t d;
  while (ss >> d) a.shape.push_back(d);
  size_t bytes = static_cast<size_t>(a.numel()) * itemsize(a.descr);
  a.data.resize(bytes);
  if (bytes) f.read(a.data.data(), static_cast<std::streamsize>(bytes));
  if (!f) throw std::runtime_error("npy: truncated data in " + path);
  return a;
}

inline void save(const std::string& path, const std::string& descr,
                 const std::vector<int64_t>& shape, const void* data, size_t bytes) {
  std::string shp = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    shp += std::to_string(shape[i]);
    if (shape.size() == 1 || i + 1 < shape.size()) shp += ",";
    if (i + 1 < shape.size()) shp += " ";
  }
  shp += ")";
  std::string header =
      "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shp + ", }";
  size_t total = 10 + header.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  header += std::string(pad, ' ') + "\n";
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("npy: cannot write " + path);
  f.write("\x93NUMPY\x01\x00", 8);
  unsigned char hl[2] = {static_cast<unsigned char>(header.size() & 0xff),
                         static_cast<unsigned char>(header.size() >> 8)};
  f.write(reinterpret_cast<char*>(hl), 2);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  if (bytes) f.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!f) throw std::runtime_error("npy: write failed for " + path);
}

}  // namespace npy
