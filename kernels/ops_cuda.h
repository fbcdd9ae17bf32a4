/* ops_cuda — the CUDA backend of the op table (kernels/cuda/ (*.cu)), behind ops.h.
 *
 * Every op runs on one CUDA stream of the chosen GPU, asynchronously; pointers are device
 * memory from kern_alloc / kern_const_new / kern_weight_upload (ops.h "memory"). Activations are
 * f32. Matmul: f32 weights through cuBLAS SGEMM; f16/bf16 weights through a register-dequantising
 * matrix-vector kernel for small m and cuBLAS GemmEx (f16/bf16 inputs, f32 accumulate) otherwise;
 * q8/q4 through the matrix-vector kernel for small m, and for larger m dequantised in bounded
 * chunks to f16 for cuBLAS. Scratch is allocated once at creation and bounds no size (large ops
 * are chunked). In a build without CUDA (TV_HAVE_CUDA undefined) kern_cuda_new is a stub. */
#ifndef TV_KERN_OPS_CUDA_H
#define TV_KERN_OPS_CUDA_H

#include "ops.h"

/* A backend on GPU `device` (0 = the first). Returns 0 and *out (free with kern_free), or
 * TV_EUNSUPPORTED with a message when this binary has no CUDA or the GPU is absent, or
 * TV_EINTERNAL / TV_ENOMEM when the CUDA runtime or cuBLAS fails to start. */
int kern_cuda_new(int device, kern_be **out);

#endif
