// The build id (afnet_kernels/_build_id.py): the digest of the sources this
// library was built from, which setup.py passes as -DAFNET_BUILD_ID. The
// Python loader reads it from both files and loads _C_cuda only when it
// matches _C's, because CUDA kernels registered against schemas of other
// sources abort the process instead of raising.
#pragma once

#ifndef AFNET_BUILD_ID
#define AFNET_BUILD_ID unknown
#endif
#define AFNET_STRINGIFY_(x) #x
#define AFNET_STRINGIFY(x) AFNET_STRINGIFY_(x)

// One per library: `used` and default visibility keep the string in the file.
#define AFNET_DEFINE_BUILD_ID(symbol)                                                   \
  extern "C" __attribute__((used, visibility("default"))) const char symbol[] =          \
      "afnet-build-id:" AFNET_STRINGIFY(AFNET_BUILD_ID)
