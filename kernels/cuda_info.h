/* cuda_info — whether this binary has the CUDA backend and how many GPUs it sees. */
#ifndef TV_CUDA_INFO_H
#define TV_CUDA_INFO_H

/* 1 if built with CUDA (TV_CUDA=ON), else 0. */
int cuda_info_built(void);

/* Number of usable CUDA devices (0 without a driver/GPU, or when not built). Writes the first
 * device's name into name (may be NULL) when there is one. */
int cuda_info_devices(char *name, int len);

#endif
