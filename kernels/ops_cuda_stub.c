/* kern_cuda_new in a build without the CUDA backend: a clear refusal, so CPU-only builds link. */
#include "err.h"
#include "ops_cuda.h"

#ifndef TV_HAVE_CUDA
int kern_cuda_new(int device, kern_be **out) {
    (void)device;
    *out = NULL;
    return err_set(TV_EUNSUPPORTED, "cuda: this binary was built without the CUDA backend "
                   "(configure with nvcc present, or -DTV_CUDA=ON)");
}
#endif
