#include "cpu_features.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

static cpu_features cpu_feat;
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;

static void cpu_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    unsigned a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        cpu_feat.fma = (c >> 12) & 1;
        cpu_feat.f16c = (c >> 29) & 1;
        int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
        unsigned xcr0 = 0;
        if (osxsave) {
            unsigned lo, hi;
            __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            xcr0 = lo;
        }
        int os_avx = avx && (xcr0 & 6) == 6, os_avx512 = os_avx && (xcr0 & 0xe0) == 0xe0;
        if (!os_avx) cpu_feat.fma = cpu_feat.f16c = 0;
        if (os_avx && __get_cpuid_count(7, 0, &a, &b, &c, &d)) {
            cpu_feat.avx2 = (b >> 5) & 1;
            if (os_avx512) {
                cpu_feat.avx512f = (b >> 16) & 1;
                cpu_feat.avx512bw = (b >> 30) & 1;
                cpu_feat.avx512vl = (b >> 31) & 1;
                cpu_feat.avx512_vnni = (c >> 11) & 1;
                if (__get_cpuid_count(7, 1, &a, &b, &c, &d)) cpu_feat.avx512_bf16 = (a >> 5) & 1;
            }
        }
    }
#endif
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_feat.n_cores = n > 0 ? (int)n : 1;
}

const cpu_features *cpu_get_features(void) {
    pthread_once(&cpu_once, cpu_detect);
    return &cpu_feat;
}

char *cpu_features_str(char *buf, int len) {
    const cpu_features *f = cpu_get_features();
    const struct { int on; const char *name; } all[] = {
        {f->avx2, "avx2"}, {f->fma, "fma"}, {f->f16c, "f16c"}, {f->avx512f, "avx512f"},
        {f->avx512bw, "avx512bw"}, {f->avx512vl, "avx512vl"}, {f->avx512_vnni, "avx512_vnni"},
        {f->avx512_bf16, "avx512_bf16"},
    };
    int off = 0;
    buf[0] = 0;
    for (size_t i = 0; i < sizeof all / sizeof all[0] && off < len; i++)
        if (all[i].on) off += snprintf(buf + off, (size_t)(len - off), "%s%s", off ? " " : "", all[i].name);
    if (!buf[0]) snprintf(buf, (size_t)len, "baseline");
    return buf;
}
