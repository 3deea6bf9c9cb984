// The kernels' bodies, included twice by kernels.c: once under an AVX2+FMA target attribute
// and once for the baseline ISA, with K(name) naming each copy. Loops are written so that
// clang vectorises them without -ffast-math: element-wise work in plain loops, reductions
// as LANES independent partial sums combined in a fixed order.

// exp(x) for x ≤ 88.7 (Cephes expf: range reduction by ln 2, degree-6 polynomial, 2^n by
// exponent bits). Inputs below -87.3 are clamped (result ~1e-38 instead of a denormal).
static inline float K(vexp)(float x) {
    x = x > 88.7f ? 88.7f : x;
    x = x < -87.3f ? -87.3f : x;
    // n = round(x / ln 2) by the 1.5·2^23 trick (vectorises on every ISA, unlike floorf).
    float t = x * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    union { int32_t i; float f; } scale;
    scale.i = ((int32_t)n + 127) << 23;
    return y * scale.f;
}

static inline float K(lane_sum)(const float *acc) {
    float s = 0;
    for (int j = 0; j < LANES; j++) s += acc[j];
    return s;
}

// Σ x[0..<n]
static inline float K(sum)(const float *x, long n) {
    float acc[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += x[i + j];
    float s = K(lane_sum)(acc);
    for (; i < n; i++) s += x[i];
    return s;
}

// max x[0..<n], n ≥ 1
static inline float K(max)(const float *x, long n) {
    float acc[LANES];
    for (int j = 0; j < LANES; j++) acc[j] = x[0];
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] = x[i + j] > acc[j] ? x[i + j] : acc[j];
    float m = acc[0];
    for (int j = 1; j < LANES; j++) m = acc[j] > m ? acc[j] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// y[i] = exp(x[i] − m); returns Σ y (y may alias x)
static inline float K(exp_shifted)(const float *x, float *y, long n, float m) {
    for (long i = 0; i < n; i++) y[i] = K(vexp)(x[i] - m);
    return K(sum)(y, n);
}

// Σ exp(x[i] − m), nothing stored
static inline float K(sum_exp_shifted)(const float *x, long n, float m) {
    float acc[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += K(vexp)(x[i + j] - m);
    float s = K(lane_sum)(acc);
    for (; i < n; i++) s += K(vexp)(x[i] - m);
    return s;
}

// Σ a[i]·b[i]
static inline float K(dot)(const float *a, const float *b, long n) {
    float acc[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += a[i + j] * b[i + j];
    float s = K(lane_sum)(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static void K(softmax_causal)(float *scores, long blocks, long t) {
    for (long b = 0; b < blocks; b++) {
        for (long i = 0; i < t; i++) {
            float *row = scores + (b * t + i) * t;
            long n = i + 1;
            float m = K(max)(row, n);
            float inv = 1.0f / K(exp_shifted)(row, row, n, m);
            for (long j = 0; j < n; j++) row[j] *= inv;
            for (long j = n; j < t; j++) row[j] = 0;
        }
    }
}

static void K(softmax_causal_backward)(const float *a, float *da, long blocks, long t, float scale) {
    for (long b = 0; b < blocks; b++) {
        for (long i = 0; i < t; i++) {
            const float *ar = a + (b * t + i) * t;
            float *dr = da + (b * t + i) * t;
            long n = i + 1;
            float d = K(dot)(ar, dr, n);
            for (long j = 0; j < n; j++) dr[j] = ar[j] * (dr[j] - d) * scale;
            for (long j = n; j < t; j++) dr[j] = 0;
        }
    }
}

static void K(layernorm_forward)(const float *x, const float *gamma, const float *beta, float *y,
                                 float *mean, float *rstd, long rows, long c, float eps) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * c;
        float *yr = y + r * c;
        float m = K(sum)(xr, c) / (float)c;
        float acc[LANES] = {0};
        long i = 0;
        for (; i + LANES <= c; i += LANES)
            for (int j = 0; j < LANES; j++) { float d = xr[i + j] - m; acc[j] += d * d; }
        float v = K(lane_sum)(acc);
        for (; i < c; i++) { float d = xr[i] - m; v += d * d; }
        v /= (float)c;
        float s = 1.0f / sqrtf(v + eps);
        for (long k = 0; k < c; k++) yr[k] = (xr[k] - m) * s * gamma[k] + beta[k];
        mean[r] = m;
        rstd[r] = s;
    }
}

static void K(layernorm_backward)(const float *x, const float *mean, const float *rstd, const float *gamma,
                                  const float *dy, float *dx, float *dgamma, float *dbeta, long rows, long c) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * c, *dyr = dy + r * c;
        float *dxr = dx + r * c;
        float m = mean[r], s = rstd[r];
        float ga[LANES] = {0}, gna[LANES] = {0};
        long i = 0;
        for (; i + LANES <= c; i += LANES)
            for (int j = 0; j < LANES; j++) {
                float n = (xr[i + j] - m) * s, g = dyr[i + j] * gamma[i + j];
                ga[j] += g;
                gna[j] += g * n;
            }
        float gMean = K(lane_sum)(ga), gnMean = K(lane_sum)(gna);
        for (; i < c; i++) {
            float n = (xr[i] - m) * s, g = dyr[i] * gamma[i];
            gMean += g;
            gnMean += g * n;
        }
        gMean /= (float)c;
        gnMean /= (float)c;
        for (long k = 0; k < c; k++) {
            float n = (xr[k] - m) * s, g = dyr[k] * gamma[k];
            dbeta[k] += dyr[k];
            dgamma[k] += n * dyr[k];
            dxr[k] = (g - gMean - n * gnMean) * s;
        }
    }
}

#define GELU_SCALE 0.7978845608028654f  // √(2/π)
#define GELU_CUBIC 0.044715f

// tanh(u) = 1 − 2/(exp(2u) + 1)
static inline float K(vtanh)(float u) { return 1.0f - 2.0f / (K(vexp)(2.0f * u) + 1.0f); }

static void K(gelu_forward)(const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_SCALE * (v + GELU_CUBIC * v * v * v);
        y[i] = 0.5f * v * (1.0f + K(vtanh)(u));
    }
}

static void K(gelu_backward)(const float *x, const float *dy, float *dx, long n) {
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float u = GELU_SCALE * (v + GELU_CUBIC * v * v * v);
        float th = K(vtanh)(u);
        float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * v * v);
        dx[i] = dy[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du);
    }
}

static double K(cross_entropy_forward)(const float *logits, const int32_t *targets, long rows, long k) {
    double total = 0;
    for (long r = 0; r < rows; r++) {
        const float *z = logits + r * k;
        float m = K(max)(z, k);
        float s = K(sum_exp_shifted)(z, k, m);
        total += (double)(m + logf(s) - z[targets[r]]);
    }
    return total;
}

static void K(cross_entropy_backward)(const float *logits, const int32_t *targets, float *dlogits,
                                      long rows, long k, float scale) {
    for (long r = 0; r < rows; r++) {
        const float *z = logits + r * k;
        float *dz = dlogits + r * k;
        float m = K(max)(z, k);
        float f = scale / K(exp_shifted)(z, dz, k, m);
        for (long j = 0; j < k; j++) dz[j] *= f;
        dz[targets[r]] -= scale;
    }
}

static void K(column_sum_add)(const float *x, float *acc, long rows, long n) {
    for (long r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        for (long j = 0; j < n; j++) acc[j] += xr[j];
    }
}

static void K(add)(float *a, const float *b, long n) {
    for (long i = 0; i < n; i++) a[i] += b[i];
}
