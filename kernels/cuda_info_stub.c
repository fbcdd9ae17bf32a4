/* The CPU-only answers of cuda_info.h; the CUDA build replaces them from cuda/cuda_info.cu. */
#include "cuda_info.h"

#ifndef TV_HAVE_CUDA
int cuda_info_built(void) { return 0; }

int cuda_info_devices(char *name, int len) {
    if (name && len > 0) name[0] = 0;
    return 0;
}
#endif
