// Dispatch for the kernels of vpipe_kernels.h: kernels_body.h compiled for AVX2+FMA and for
// the baseline ISA; the first call checks the CPU once and every later call goes straight
// to the chosen copy through a function pointer table.
#include "vpipe_kernels.h"

#include <math.h>
#include <stdatomic.h>

// Lane count of the partial sums: 8 floats = one AVX2 register, two SSE registers. The same
// on both paths, so they sum in the same order (only FMA contraction differs).
#define LANES 8

#if defined(__x86_64__) && defined(__clang__)
#define VPK_HAVE_AVX2 1
#define K(name) avx2_##name
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#include "kernels_body.h"
#pragma clang attribute pop
#undef K
#endif

#define K(name) base_##name
#include "kernels_body.h"
#undef K

typedef struct {
    const char *isa;
    void (*softmax_causal)(float *, long, long);
    void (*softmax_causal_backward)(const float *, float *, long, long, float);
    void (*layernorm_forward)(const float *, const float *, const float *, float *, float *, float *, long, long, float);
    void (*layernorm_backward)(const float *, const float *, const float *, const float *, const float *, float *,
                               float *, float *, long, long);
    void (*gelu_forward)(const float *, float *, long);
    void (*gelu_backward)(const float *, const float *, float *, long);
    double (*cross_entropy_forward)(const float *, const int32_t *, long, long);
    void (*cross_entropy_backward)(const float *, const int32_t *, float *, long, long, float);
    void (*column_sum_add)(const float *, float *, long, long);
    void (*add)(float *, const float *, long);
} vpk_table;

#define TABLE(prefix, name) {name, prefix##softmax_causal, prefix##softmax_causal_backward, prefix##layernorm_forward, \
    prefix##layernorm_backward, prefix##gelu_forward, prefix##gelu_backward, prefix##cross_entropy_forward,           \
    prefix##cross_entropy_backward, prefix##column_sum_add, prefix##add}

static const vpk_table base_table = TABLE(base_, "baseline");
#ifdef VPK_HAVE_AVX2
static const vpk_table avx2_table = TABLE(avx2_, "avx2+fma");
#endif

static _Atomic(const vpk_table *) chosen;
// Set by vpk_force_baseline on the calling thread only, so a test of the baseline path does
// not change what other threads (other tests, running in parallel) compute.
static _Thread_local const vpk_table *forced;

// Benign race: two threads may both choose, and both choose the same table.
static const vpk_table *table(void) {
    if (forced) return forced;
    const vpk_table *t = atomic_load_explicit(&chosen, memory_order_acquire);
    if (t) return t;
    t = &base_table;
#ifdef VPK_HAVE_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) t = &avx2_table;
#endif
    atomic_store_explicit(&chosen, t, memory_order_release);
    return t;
}

const char *vpk_isa(void) { return table()->isa; }

void vpk_force_baseline(int on) { forced = on ? &base_table : NULL; }

void vpk_softmax_causal(float *scores, long blocks, long t) { table()->softmax_causal(scores, blocks, t); }

void vpk_softmax_causal_backward(const float *a, float *da, long blocks, long t, float scale) {
    table()->softmax_causal_backward(a, da, blocks, t, scale);
}

void vpk_layernorm_forward(const float *x, const float *gamma, const float *beta, float *y, float *mean, float *rstd,
                           long rows, long c, float eps) {
    table()->layernorm_forward(x, gamma, beta, y, mean, rstd, rows, c, eps);
}

void vpk_layernorm_backward(const float *x, const float *mean, const float *rstd, const float *gamma, const float *dy,
                            float *dx, float *dgamma, float *dbeta, long rows, long c) {
    table()->layernorm_backward(x, mean, rstd, gamma, dy, dx, dgamma, dbeta, rows, c);
}

void vpk_gelu_forward(const float *x, float *y, long n) { table()->gelu_forward(x, y, n); }

void vpk_gelu_backward(const float *x, const float *dy, float *dx, long n) { table()->gelu_backward(x, dy, dx, n); }

double vpk_cross_entropy_forward(const float *logits, const int32_t *targets, long rows, long k) {
    return table()->cross_entropy_forward(logits, targets, rows, k);
}

void vpk_cross_entropy_backward(const float *logits, const int32_t *targets, float *dlogits, long rows, long k,
                                float scale) {
    table()->cross_entropy_backward(logits, targets, dlogits, rows, k, scale);
}

void vpk_column_sum_add(const float *x, float *acc, long rows, long n) { table()->column_sum_add(x, acc, rows, n); }

void vpk_add(float *a, const float *b, long n) { table()->add(a, b, n); }
