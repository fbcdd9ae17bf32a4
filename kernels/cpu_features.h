/* cpu — what the CPU running us can do, read once with cpuid (runtime dispatch picks kernels). */
#ifndef TV_CPU_FEATURES_H
#define TV_CPU_FEATURES_H

typedef struct {
    int avx2, fma, f16c;        /* the AVX2+FMA path */
    int avx512f, avx512bw, avx512vl, avx512_vnni, avx512_bf16;
    int n_cores;                /* online logical CPUs */
} cpu_features;

/* The features of this machine (computed on first call, thread-safe). Never NULL. */
const cpu_features *cpu_get_features(void);

/* Writes e.g. "avx2 fma f16c" (or "baseline") into buf; returns buf. */
char *cpu_features_str(char *buf, int len);

#endif
