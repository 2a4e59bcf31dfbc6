# CMake toolchain file: cross-compile for aarch64 Linux (glibc) with Debian's GNU cross toolchain
# (packages g++-aarch64-linux-gnu, gcc-aarch64-linux-gnu, binutils-aarch64-linux-gnu).
#   cmake -S custom_ops -B build/aarch64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
# Run the results with `qemu-aarch64 -L /usr/aarch64-linux-gnu` (package qemu-user).
#
# Knobs (cache variables / environment):
#   EDGECONV_AARCH64_TRIPLE  toolchain prefix (default aarch64-linux-gnu)
#   EDGECONV_AARCH64_CPU     -mcpu value (default: generic armv8-a; NEON/ASIMD is baseline on
#                            aarch64, so Eigen and GCC auto-vectorization use it without flags)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(NOT DEFINED EDGECONV_AARCH64_TRIPLE)
  if(DEFINED ENV{EDGECONV_AARCH64_TRIPLE})
    set(EDGECONV_AARCH64_TRIPLE "$ENV{EDGECONV_AARCH64_TRIPLE}")
  else()
    set(EDGECONV_AARCH64_TRIPLE aarch64-linux-gnu)
  endif()
endif()
set(EDGECONV_AARCH64_TRIPLE "${EDGECONV_AARCH64_TRIPLE}" CACHE STRING "aarch64 toolchain prefix")
# try_compile projects re-read this file: forward the knobs.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES EDGECONV_AARCH64_TRIPLE EDGECONV_AARCH64_CPU)

find_program(CMAKE_C_COMPILER NAMES ${EDGECONV_AARCH64_TRIPLE}-gcc)
find_program(CMAKE_CXX_COMPILER NAMES ${EDGECONV_AARCH64_TRIPLE}-g++)
if(NOT CMAKE_CXX_COMPILER)
  message(FATAL_ERROR "${EDGECONV_AARCH64_TRIPLE}-g++ not found: install the Debian packages "
                      "g++-aarch64-linux-gnu gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu")
endif()

# Debian's multiarch-less cross sysroot.
set(EDGECONV_AARCH64_SYSROOT /usr/${EDGECONV_AARCH64_TRIPLE})
set(CMAKE_FIND_ROOT_PATH ${EDGECONV_AARCH64_SYSROOT})
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
# Headers: target ones first, but host header-only libraries (Eigen in /usr/include/eigen3) and
# explicitly given include dirs (onnxruntime headers in the cache) must stay findable.
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

if(NOT DEFINED EDGECONV_AARCH64_CPU AND DEFINED ENV{EDGECONV_AARCH64_CPU})
  set(EDGECONV_AARCH64_CPU "$ENV{EDGECONV_AARCH64_CPU}")
endif()
if(EDGECONV_AARCH64_CPU)
  set(CMAKE_C_FLAGS_INIT "-mcpu=${EDGECONV_AARCH64_CPU}")
  set(CMAKE_CXX_FLAGS_INIT "-mcpu=${EDGECONV_AARCH64_CPU}")
endif()

# Emulator for try_run / ctest.
find_program(EDGECONV_QEMU_AARCH64 qemu-aarch64)
if(EDGECONV_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${EDGECONV_QEMU_AARCH64} -L ${EDGECONV_AARCH64_SYSROOT})
endif()
