// CUDA side of cuda_info.h: asks the runtime how many devices there are. A missing driver or
// GPU is not an error here: it means zero devices, and the caller falls back to the CPU.
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" {
#include "cuda_info.h"

int cuda_info_built(void) { return 1; }

int cuda_info_devices(char *name, int len) {
    int n = 0;
    if (name && len > 0) name[0] = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();  // clear the sticky "no driver" error
        return 0;
    }
    if (n > 0 && name && len > 0) {
        cudaDeviceProp p;
        if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) snprintf(name, (size_t)len, "%s", p.name);
    }
    return n;
}
}
