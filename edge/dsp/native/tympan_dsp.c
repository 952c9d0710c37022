/*
 * Tympan native DSP kernels: the hot loops around the FFT, fused where it pays.
 *
 * The numpy reference (edge/dsp/frontend.py, gcc_phat.py, srp_phat.py, level.py) is the definition;
 * every kernel here is tested against it (tests/test_backends.py; the NEON build under qemu-aarch64).
 * FFTs are not done here: the Python side uses pocketfft (scipy.fft / numpy.fft).
 *
 * One source, three instruction sets, chosen at compile time by the compiler's target macros:
 *   TP_PORTABLE (forced scalar), __AVX2__ (x86-64 built with -mavx2 -mfma; loaded only on CPUs that have it), __SSE2__ (x86-64
 *   baseline), __ARM_NEON with __aarch64__ (every aarch64 CPU), and portable C otherwise.
 * Complex numbers are interleaved float32 pairs (numpy complex64). Arrays are C-contiguous.
 *
 * Scalar tails use SFMA exactly where the vector code uses VFMA, and the build passes
 * -ffp-contract=off, so a frame's result does not depend on whether it fell in a vector lane or a
 * tail: any block size gives bit-identical frames (the pipeline's streaming invariant).
 * No allocation, no global state: every kernel is reentrant.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TP_ABI_VERSION 19
#define SQRT_HALF_BITS 0x3f3504f3 /* the bits of sqrt(1/2) as a float */
#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#if defined(TP_PORTABLE)
/* forced portable build (tests compile it to check the scalar path on any machine) */
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define TP_SIMD "avx2"
#define W 8
typedef __m256 vf;
#define VLOAD(p) _mm256_loadu_ps(p)
#define VSTORE(p, v) _mm256_storeu_ps((p), (v))
#define VSET1(x) _mm256_set1_ps(x)
#define VZERO() _mm256_setzero_ps()
#define VADD(a, b) _mm256_add_ps((a), (b))
#define VMAX(a, b) _mm256_max_ps((a), (b))
#define VMUL(a, b) _mm256_mul_ps((a), (b))
#define VSUB(a, b) _mm256_sub_ps((a), (b))
#define VFMA(a, b, c) _mm256_fmadd_ps((a), (b), (c))
#define SFMA(a, b, c) fmaf((a), (b), (c))
#define VSQRT(a) _mm256_sqrt_ps(a)
#define VDIV(a, b) _mm256_div_ps((a), (b))
#define VSELGT(a, b, x, y) _mm256_blendv_ps((y), (x), _mm256_cmp_ps((a), (b), _CMP_GT_OQ)) /* a > b ? x : y */
/* 8 complex at p -> re, im in element order */
static inline void vload_c(const float *p, vf *re, vf *im) {
    __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8);
    __m256 r = _mm256_shuffle_ps(a, b, 0x88), i = _mm256_shuffle_ps(a, b, 0xDD);
    *re = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(r), 0xD8));
    *im = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(i), 0xD8));
}
/* x = m 2^e with m in [sqrt(1/2), sqrt(2)): integer arithmetic on the bits (x > 0, normal) */
static inline void vsplit(vf x, vf *e, vf *m) {
    const __m256i k = _mm256_sub_epi32(_mm256_castps_si256(x), _mm256_set1_epi32(SQRT_HALF_BITS));
    *e = _mm256_cvtepi32_ps(_mm256_srai_epi32(k, 23));
    *m = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_and_si256(k, _mm256_set1_epi32(0x7fffff)),
                                              _mm256_set1_epi32(SQRT_HALF_BITS)));
}
/* r[k] = row k of an 8x8 block -> r[k] = column k */
static inline void vtranspose(vf *r) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
    __m256 s6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
    __m256 s7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}
static inline void vstore_c(float *p, vf re, vf im) {
    __m256 r = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(re), 0xD8));
    __m256 i = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(im), 0xD8));
    _mm256_storeu_ps(p, _mm256_unpacklo_ps(r, i));
    _mm256_storeu_ps(p + 8, _mm256_unpackhi_ps(r, i));
}
#elif defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#define TP_SIMD "sse2"
#define W 4
typedef __m128 vf;
#define VLOAD(p) _mm_loadu_ps(p)
#define VSTORE(p, v) _mm_storeu_ps((p), (v))
#define VSET1(x) _mm_set1_ps(x)
#define VZERO() _mm_setzero_ps()
#define VADD(a, b) _mm_add_ps((a), (b))
#define VMAX(a, b) _mm_max_ps((a), (b))
#define VMUL(a, b) _mm_mul_ps((a), (b))
#define VSUB(a, b) _mm_sub_ps((a), (b))
#define VFMA(a, b, c) _mm_add_ps(_mm_mul_ps((a), (b)), (c))
#define SFMA(a, b, c) ((a) * (b) + (c))
#define VSQRT(a) _mm_sqrt_ps(a)
#define VDIV(a, b) _mm_div_ps((a), (b))
#define VSELGT(a, b, x, y) _mm_or_ps(_mm_and_ps(_mm_cmpgt_ps((a), (b)), (x)), _mm_andnot_ps(_mm_cmpgt_ps((a), (b)), (y)))
static inline void vload_c(const float *p, vf *re, vf *im) {
    __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + 4);
    *re = _mm_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
    *im = _mm_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
}
static inline void vtranspose(vf *r) { _MM_TRANSPOSE4_PS(r[0], r[1], r[2], r[3]); }
static inline void vsplit(vf x, vf *e, vf *m) {
    const __m128i k = _mm_sub_epi32(_mm_castps_si128(x), _mm_set1_epi32(SQRT_HALF_BITS));
    *e = _mm_cvtepi32_ps(_mm_srai_epi32(k, 23));
    *m = _mm_castsi128_ps(_mm_add_epi32(_mm_and_si128(k, _mm_set1_epi32(0x7fffff)), _mm_set1_epi32(SQRT_HALF_BITS)));
}
static inline void vstore_c(float *p, vf re, vf im) {
    _mm_storeu_ps(p, _mm_unpacklo_ps(re, im));
    _mm_storeu_ps(p + 4, _mm_unpackhi_ps(re, im));
}
#elif defined(__ARM_NEON) && defined(__aarch64__)
#include <arm_neon.h>
#define TP_SIMD "neon"
#define W 4
typedef float32x4_t vf;
#define VLOAD(p) vld1q_f32(p)
#define VSTORE(p, v) vst1q_f32((p), (v))
#define VSET1(x) vdupq_n_f32(x)
#define VZERO() vdupq_n_f32(0.0f)
#define VADD(a, b) vaddq_f32((a), (b))
#define VMAX(a, b) vmaxq_f32((a), (b))
#define VMUL(a, b) vmulq_f32((a), (b))
#define VSUB(a, b) vsubq_f32((a), (b))
#define VFMA(a, b, c) vfmaq_f32((c), (a), (b))
#define SFMA(a, b, c) fmaf((a), (b), (c))
#define VSQRT(a) vsqrtq_f32(a)
#define VDIV(a, b) vdivq_f32((a), (b))
#define VSELGT(a, b, x, y) vbslq_f32(vcgtq_f32((a), (b)), (x), (y))
static inline void vload_c(const float *p, vf *re, vf *im) {
    float32x4x2_t v = vld2q_f32(p);
    *re = v.val[0];
    *im = v.val[1];
}
static inline void vsplit(vf x, vf *e, vf *m) {
    const int32x4_t k = vsubq_s32(vreinterpretq_s32_f32(x), vdupq_n_s32(SQRT_HALF_BITS));
    *e = vcvtq_f32_s32(vshrq_n_s32(k, 23));
    *m = vreinterpretq_f32_s32(vaddq_s32(vandq_s32(k, vdupq_n_s32(0x7fffff)), vdupq_n_s32(SQRT_HALF_BITS)));
}
static inline void vtranspose(vf *r) {
    float32x4x2_t a = vtrnq_f32(r[0], r[1]), b = vtrnq_f32(r[2], r[3]);
    r[0] = vcombine_f32(vget_low_f32(a.val[0]), vget_low_f32(b.val[0]));
    r[1] = vcombine_f32(vget_low_f32(a.val[1]), vget_low_f32(b.val[1]));
    r[2] = vcombine_f32(vget_high_f32(a.val[0]), vget_high_f32(b.val[0]));
    r[3] = vcombine_f32(vget_high_f32(a.val[1]), vget_high_f32(b.val[1]));
}
static inline void vstore_c(float *p, vf re, vf im) {
    float32x4x2_t v;
    v.val[0] = re;
    v.val[1] = im;
    vst2q_f32(p, v);
}
#endif

#if !defined(TP_SIMD)
#define TP_SIMD "portable"
#define W 1
typedef float vf;
#define VLOAD(p) (*(p))
#define VSTORE(p, v) (*(p) = (v))
#define VSET1(x) (x)
#define VZERO() 0.0f
#define VADD(a, b) ((a) + (b))
#define VMAX(a, b) ((a) > (b) ? (a) : (b))
#define VMUL(a, b) ((a) * (b))
#define VSUB(a, b) ((a) - (b))
#define VFMA(a, b, c) ((a) * (b) + (c))
#define SFMA(a, b, c) ((a) * (b) + (c))
#define VSQRT(a) sqrtf(a)
#define VDIV(a, b) ((a) / (b))
#define VSELGT(a, b, x, y) ((a) > (b) ? (x) : (y))
static inline void vload_c(const float *p, vf *re, vf *im) {
    *re = p[0];
    *im = p[1];
}
static inline void vtranspose(vf *r) { (void)r; }
#define TP_SCALAR_SPLIT 1
static inline void vstore_c(float *p, vf re, vf im) {
    p[0] = re;
    p[1] = im;
}
#endif

/* The scalar twin of vsplit (same integer arithmetic). */
static inline void ssplit(float x, float *e, float *m) {
    int32_t i, k;
    memcpy(&i, &x, sizeof i);
    k = i - SQRT_HALF_BITS;
    *e = (float)(k >> 23); /* arithmetic shift: GCC and Clang on every target we build for */
    i = (k & 0x7fffff) + SQRT_HALF_BITS;
    memcpy(m, &i, sizeof i);
}
#if defined(TP_SCALAR_SPLIT)
static inline void vsplit(vf x, vf *e, vf *m) { ssplit(x, e, m); }
#endif

/*
 * Natural log for x > 0 (normal floats): log x = e ln 2 + 2 atanh(s), s = (m - 1) / (m + 1), with the
 * atanh series to s^9 (|s| <= 0.1716: truncation below 1e-9 relative). A NaN or infinite input gives
 * NaN (x - x). vlog works on W lanes, slog is its scalar twin with the same operations in the same
 * order, so a value does not depend on whether it fell in a lane or a tail.
 */
#define LOG_LN2 0.693147180559945309f
#define LOG_C1 2.0f
#define LOG_C3 0.666666666666666667f
#define LOG_C5 0.4f
#define LOG_C7 0.285714285714285714f
#define LOG_C9 0.222222222222222222f
static inline vf vlog(vf x) {
    vf e, m;
    vsplit(x, &e, &m);
    const vf sv = VDIV(VSUB(m, VSET1(1.0f)), VADD(m, VSET1(1.0f)));
    const vf z = VMUL(sv, sv);
    vf p = VFMA(VSET1(LOG_C9), z, VSET1(LOG_C7));
    p = VFMA(p, z, VSET1(LOG_C5));
    p = VFMA(p, z, VSET1(LOG_C3));
    p = VFMA(p, z, VSET1(LOG_C1));
    return VADD(VFMA(e, VSET1(LOG_LN2), VMUL(p, sv)), VSUB(x, x));
}
static inline float slog(float x) {
    float e, m;
    ssplit(x, &e, &m);
    const float sv = (m - 1.0f) / (m + 1.0f);
    const float z = sv * sv;
    float p = SFMA(LOG_C9, z, LOG_C7);
    p = SFMA(p, z, LOG_C5);
    p = SFMA(p, z, LOG_C3);
    p = SFMA(p, z, LOG_C1);
    return SFMA(e, LOG_LN2, p * sv) + (x - x);
}

#if defined(_WIN32)
#define TP_API __declspec(dllexport)
#else
#define TP_API __attribute__((visibility("default")))
#endif

static const float LANE_IOTA[8] = {0.0f, 1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f, 7.0f};

/* Frames processed together by the spectral kernels (a multiple of every W). */
#define TCHUNK 32
#ifndef LM_TCHUNK
#define LM_TCHUNK 32 /* frames per chunk of tp_logmel */
#endif

TP_API int tp_abi_version(void) { return TP_ABI_VERSION; }

TP_API const char *tp_simd(void) { return TP_SIMD; }

/* 1 when this CPU can run the AVX2+FMA build (x86-64 only; 0 elsewhere). */
TP_API int tp_cpu_has_avx2(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

/* Frames per block in the framing kernels: the block's samples stay in L1/L2 across the window. */
#define TBLK 64

/*
 * float32 audio -> windowed, zero-padded frames, sample-major: out[c, n, t] = x[c, t*hop + n] * win[n]
 * for n < wlen, 0 for wlen <= n < nfft. x: [C, xs] (row stride xs samples); out: [C, nfft, T].
 * The FFT then runs along axis 1 and yields [C, n_bins, T], the Spectra layout, with no transpose.
 */
TP_API void tp_frame_f32(const float *x, int64_t C, int64_t xs, int64_t T, int64_t hop, const float *win,
                         int64_t wlen, int64_t nfft, float *out) {
    for (int64_t c = 0; c < C; c++) {
        const float *xc = x + c * xs;
        float *oc = out + c * nfft * T;
        for (int64_t t0 = 0; t0 < T; t0 += TBLK) {
            const int64_t nt = T - t0 < TBLK ? T - t0 : TBLK;
            const int64_t ntv = nt - nt % W; /* frames done as W x W blocks: contiguous loads, a transpose */
            int64_t n0 = 0;
            for (; n0 + W <= wlen; n0 += W) {
                const vf wv = VLOAD(win + n0);
                for (int64_t t = 0; t < ntv; t += W) {
                    vf r[W];
                    for (int k = 0; k < W; k++) r[k] = VMUL(VLOAD(xc + (t0 + t + k) * hop + n0), wv);
                    vtranspose(r);
                    for (int k = 0; k < W; k++) VSTORE(oc + (n0 + k) * T + t0 + t, r[k]);
                }
            }
            for (int64_t n = 0; n < wlen; n++) { /* the frames past the last block, and samples past n0 */
                const float wn = win[n];
                for (int64_t t = (n < n0 ? ntv : 0); t < nt; t++) oc[n * T + t0 + t] = xc[(t0 + t) * hop + n] * wn;
            }
        }
        memset(oc + wlen * T, 0, (size_t)((nfft - wlen) * T) * sizeof(float));
    }
}

/*
 * Fused STFT: audio -> frames -> window -> real FFT of n_fft = 2M points (M a power of two), W frames
 * at a time with one frame per SIMD lane, so every butterfly works on W frames and the spectra come out
 * directly in the Spectra layout. The real FFT is a complex FFT of M points on z[k] = x[2k] + i x[2k+1]
 * (iterative radix-2, bit-reversed input) followed by the usual split into the M + 1 bins.
 * x: [C, xs]; win: [wlen] (wlen <= 2M; samples past it are zero); tw: M/2 complex exp(-2 pi i k / M);
 * rot: M + 1 complex exp(-2 pi i k / 2M); rev: [M] bit reversal; work: 2 * M * W + 2 * W floats;
 * out: [C, M + 1, T] complex64. Every lane does the same operations, so a frame's spectrum does not
 * depend on which lane or block it fell in.
 */
TP_API int tp_simd_width(void) { return W; }

/* One group of the fused STFT: lane l's frame starts at src[l] (lanes l >= nt are zero), windowed,
 * zero-padded to 2M points and transformed: the M-point complex FFT of z[k] = x[2k] + i x[2k+1] in zr, zi
 * ([M][W] each, natural order); the caller splits it into the real signal's bins (stft_bin). */
static inline __attribute__((always_inline)) void stft_group(const float *const *src, int64_t nt, const float *win,
                                                            int64_t wlen, int64_t M, const float *tw,
                                                            const int32_t *rev, float *zr, float *zi) {
    /* load: sample n of lane l -> (n even ? zr : zi)[rev[n / 2]][l] */
    /* lanes past the last frame (nt < W) hold zeros; lanes never mix, so a frame's values do
     * not depend on which lane it fell in */
    int64_t n0 = 0;
    for (; n0 + W <= wlen; n0 += W) {
        const vf wv = VLOAD(win + n0);
        vf r[W];
        for (int k = 0; k < W; k++) r[k] = k < nt ? VMUL(VLOAD(src[k] + n0), wv) : VZERO();
        vtranspose(r);
        for (int k = 0; k < W; k++) {
            const int64_t n = n0 + k;
            VSTORE(((n & 1) ? zi : zr) + rev[n >> 1] * W, r[k]);
        }
    }
    for (int64_t n = n0; n < 2 * M; n++) {
        float *dst = ((n & 1) ? zi : zr) + rev[n >> 1] * W;
        if (n >= wlen) {
            VSTORE(dst, VZERO());
            continue;
        }
        for (int64_t l = 0; l < W; l++) dst[l] = l < nt ? src[l][n] * win[n] : 0.0f;
    }
    /* complex FFT of M points, in place, natural-order output; the first two stages have the
     * twiddles 1 and -i, so they are done without multiplications (the same values as with) */
    for (int64_t i = 0; i + 4 <= M; i += 4) {
        float *r0 = zr + i * W, *i0 = zi + i * W;
        const vf ar = VLOAD(r0), ai = VLOAD(i0), br = VLOAD(r0 + W), bi = VLOAD(i0 + W);
        const vf cr = VLOAD(r0 + 2 * W), ci = VLOAD(i0 + 2 * W), dr = VLOAD(r0 + 3 * W), di = VLOAD(i0 + 3 * W);
        const vf s0r = VADD(ar, br), s0i = VADD(ai, bi), s1r = VSUB(ar, br), s1i = VSUB(ai, bi);
        const vf s2r = VADD(cr, dr), s2i = VADD(ci, di), s3r = VSUB(cr, dr), s3i = VSUB(ci, di);
        /* len 4: (s0, s2) with twiddle 1, (s1, s3) with twiddle -i: s3 * -i = (s3i, -s3r) */
        VSTORE(r0, VADD(s0r, s2r));
        VSTORE(i0, VADD(s0i, s2i));
        VSTORE(r0 + 2 * W, VSUB(s0r, s2r));
        VSTORE(i0 + 2 * W, VSUB(s0i, s2i));
        VSTORE(r0 + W, VADD(s1r, s3i));
        VSTORE(i0 + W, VSUB(s1i, s3r));
        VSTORE(r0 + 3 * W, VSUB(s1r, s3i));
        VSTORE(i0 + 3 * W, VADD(s1i, s3r));
    }
    /* the next stages two at a time (len and 2 len): each group of four points a, a + len / 2,
     * a + len, a + 3 len / 2 is closed under both, so it stays in registers between them; every
     * butterfly is the same operations as one stage at a time would do */
    int64_t len = 8;
    for (; 2 * len <= M; len <<= 2) {
        const int64_t q = len >> 1, s1 = M / len, s2 = M / (2 * len);
        for (int64_t j = 0; j < q; j++) {
            const vf w1r = VSET1(tw[2 * j * s1]), w1i = VSET1(tw[2 * j * s1 + 1]);
            const vf w2r = VSET1(tw[2 * j * s2]), w2i = VSET1(tw[2 * j * s2 + 1]);
            const vf w3r = VSET1(tw[2 * (j + q) * s2]), w3i = VSET1(tw[2 * (j + q) * s2 + 1]);
            for (int64_t i = 0; i < M; i += 2 * len) {
                float *ar_ = zr + (i + j) * W, *ai_ = zi + (i + j) * W;
                float *br_ = ar_ + q * W, *bi_ = ai_ + q * W;
                float *cr_ = ar_ + len * W, *ci_ = ai_ + len * W;
                float *dr_ = cr_ + q * W, *di_ = ci_ + q * W;
                const vf ar = VLOAD(ar_), ai = VLOAD(ai_), br = VLOAD(br_), bi = VLOAD(bi_);
                const vf cr = VLOAD(cr_), ci = VLOAD(ci_), dr = VLOAD(dr_), di = VLOAD(di_);
                /* stage len: (a, b) and (c, d), twiddle w1 */
                const vf v1r = VSUB(VMUL(br, w1r), VMUL(bi, w1i)), v1i = VADD(VMUL(br, w1i), VMUL(bi, w1r));
                const vf v2r = VSUB(VMUL(dr, w1r), VMUL(di, w1i)), v2i = VADD(VMUL(dr, w1i), VMUL(di, w1r));
                const vf a1r = VADD(ar, v1r), a1i = VADD(ai, v1i), b1r = VSUB(ar, v1r), b1i = VSUB(ai, v1i);
                const vf c1r = VADD(cr, v2r), c1i = VADD(ci, v2i), d1r = VSUB(cr, v2r), d1i = VSUB(ci, v2i);
                /* stage 2 len: (a, c) with twiddle w2, (b, d) with w3 */
                const vf v3r = VSUB(VMUL(c1r, w2r), VMUL(c1i, w2i)), v3i = VADD(VMUL(c1r, w2i), VMUL(c1i, w2r));
                const vf v4r = VSUB(VMUL(d1r, w3r), VMUL(d1i, w3i)), v4i = VADD(VMUL(d1r, w3i), VMUL(d1i, w3r));
                VSTORE(ar_, VADD(a1r, v3r));
                VSTORE(ai_, VADD(a1i, v3i));
                VSTORE(cr_, VSUB(a1r, v3r));
                VSTORE(ci_, VSUB(a1i, v3i));
                VSTORE(br_, VADD(b1r, v4r));
                VSTORE(bi_, VADD(b1i, v4i));
                VSTORE(dr_, VSUB(b1r, v4r));
                VSTORE(di_, VSUB(b1i, v4i));
            }
        }
    }
    for (; len <= M; len <<= 1) { /* a last single stage */
        const int64_t half = len >> 1, step = M / len;
        for (int64_t j = 0; j < half; j++) { /* one twiddle, all the butterflies that use it */
            const vf wr = VSET1(tw[2 * j * step]), wi = VSET1(tw[2 * j * step + 1]);
            for (int64_t i = 0; i < M; i += len) {
                float *pr = zr + (i + j) * W, *pi = zi + (i + j) * W;
                float *qr = pr + half * W, *qi = pi + half * W;
                const vf ur = VLOAD(pr), ui = VLOAD(pi), xr = VLOAD(qr), xi = VLOAD(qi);
                const vf vr = VSUB(VMUL(xr, wr), VMUL(xi, wi));
                const vf vi = VADD(VMUL(xr, wi), VMUL(xi, wr));
                VSTORE(pr, VADD(ur, vr));
                VSTORE(pi, VADD(ui, vi));
                VSTORE(qr, VSUB(ur, vr));
                VSTORE(qi, VSUB(ui, vi));
            }
        }
    }
}

/* Bin k (0 <= k <= M) of the real signal of W lanes from their complex FFT (stft_group):
 * X[k] = E[k] + exp(-2 pi i k / 2M) O[k]. */
static inline __attribute__((always_inline)) void stft_bin(const float *zr, const float *zi, int64_t M, const float *rot,
                                                          int64_t k, vf *xr_out, vf *xi_out) {
    const vf halfv = VSET1(0.5f);
    const int64_t kk = k == M ? 0 : k, mk = k == 0 ? 0 : M - k;
    const vf a = VLOAD(zr + kk * W), b = VLOAD(zi + kk * W);
    const vf cc = VLOAD(zr + mk * W), d = VLOAD(zi + mk * W);
    const vf er = VMUL(VADD(a, cc), halfv), ei = VMUL(VSUB(b, d), halfv);
    const vf orr = VMUL(VADD(b, d), halfv), oi = VMUL(VSUB(cc, a), halfv);
    const vf wr = VSET1(rot[2 * k]), wi = VSET1(rot[2 * k + 1]);
    *xr_out = VADD(er, VSUB(VMUL(wr, orr), VMUL(wi, oi)));
    *xi_out = VADD(ei, VADD(VMUL(wr, oi), VMUL(wi, orr)));
}

TP_API void tp_stft_f32(const float *x, int64_t C, int64_t xs, int64_t T, int64_t hop, const float *win,
                        int64_t wlen, int64_t M, const float *tw, const float *rot, const int32_t *rev, float *work,
                        float *out) {
    float *zr = work, *zi = work + M * W, *tmp = work + 2 * M * W;
    const int64_t F = M + 1;
    /* The C * T frames of all channels, W at a time, one per lane (channel-major, frame order): a short
     * block's frames of every channel fill the lanes together (10 frames x 4 channels: 5 groups, not
     * 8 with the lanes of each channel apart). */
    for (int64_t g0 = 0; g0 < C * T; g0 += W) {
        const int64_t nt = C * T - g0 < W ? C * T - g0 : W;
        const float *src[W]; /* each lane's first sample */
        int64_t lc[W], lt[W];  /* each lane's channel and frame */
        for (int64_t l = 0; l < W; l++) {
            const int64_t f = g0 + (l < nt ? l : 0);
            lc[l] = f / T, lt[l] = f % T;
            src[l] = x + lc[l] * xs + lt[l] * hop;
        }
        stft_group(src, nt, win, wlen, M, tw, rev, zr, zi);
        for (int64_t k = 0; k <= M; k++) {
            vf xr, xi;
            stft_bin(zr, zi, M, rot, k, &xr, &xi);
            if (nt == W && lc[0] == lc[W - 1]) { /* one channel, consecutive frames */
                vstore_c(out + 2 * ((lc[0] * F + k) * T + lt[0]), xr, xi);
            } else {
                vstore_c(tmp, xr, xi);
                for (int64_t l0 = 0; l0 < nt;) { /* each channel's run of lanes */
                    int64_t l1 = l0 + 1;
                    while (l1 < nt && lc[l1] == lc[l0]) l1++;
                    memcpy(out + 2 * ((lc[l0] * F + k) * T + lt[l0]), tmp + 2 * l0,
                           (size_t)(2 * (l1 - l0)) * sizeof(float));
                    l0 = l1;
                }
            }
        }
    }
}

/*
 * Log-mel of each channel straight from audio (the fused STFT, then per lane the magnitude, the sparse
 * mel filterbank and log(mel + log_offset)), without writing the spectra: the same values as
 * tp_stft_f32 then tp_logmel of each channel alone, bit for bit (the same operations in the same
 * order). Arguments as tp_stft_f32, the mel tables as tp_logmel (M mel bands: NM); work: 2 * M * W +
 * (M + 1) * W + W floats; out: [C, T, NM] float32.
 */
TP_API void tp_logmel_f32(const float *x, int64_t C, int64_t xs, int64_t T, int64_t hop, const float *win,
                          int64_t wlen, int64_t M, const float *tw, const float *rot, const int32_t *rev, int64_t NM,
                          const int32_t *bstart, const int32_t *blen, const int32_t *wofs, const float *wts,
                          float log_offset, float *work, float *out) {
    float *zr = work, *zi = work + M * W, *mag = work + 2 * M * W, *acc = mag + (M + 1) * W;
    int64_t flo = M + 1, fhi = 0; /* bins any band uses */
    for (int64_t m = 0; m < NM; m++) {
        if (blen[m] <= 0) continue;
        if (bstart[m] < flo) flo = bstart[m];
        if (bstart[m] + blen[m] > fhi) fhi = bstart[m] + blen[m];
    }
    for (int64_t g0 = 0; g0 < C * T; g0 += W) {
        const int64_t nt = C * T - g0 < W ? C * T - g0 : W;
        const float *src[W];
        int64_t row[W]; /* each lane's output row: channel * T + frame */
        for (int64_t l = 0; l < W; l++) {
            const int64_t f = g0 + (l < nt ? l : 0);
            row[l] = f;
            src[l] = x + (f / T) * xs + (f % T) * hop;
        }
        stft_group(src, nt, win, wlen, M, tw, rev, zr, zi);
        for (int64_t k = flo; k < fhi; k++) { /* |X| as tp_logmel takes it from one channel's spectra */
            vf re, im;
            stft_bin(zr, zi, M, rot, k, &re, &im);
            re = VMUL(re, VSET1(1.0f));
            im = VMUL(im, VSET1(1.0f));
            VSTORE(mag + k * W, VSQRT(VFMA(re, re, VMUL(im, im))));
        }
        for (int64_t m = 0; m < NM; m++) {
            vf a = VZERO();
            for (int32_t k = 0; k < blen[m]; k++) a = VFMA(VSET1(wts[wofs[m] + k]), VLOAD(mag + (bstart[m] + k) * W), a);
            VSTORE(acc, vlog(VADD(a, VSET1(log_offset))));
            for (int64_t l = 0; l < nt; l++) out[row[l] * NM + m] = acc[l];
        }
    }
}

/*
 * Interleaved int16 audio as a sound card delivers it -> windowed, zero-padded float frames.
 * x: [N, C] int16 (frame-major); the sample value is x / 32768 (full scale = 1.0).
 * out: [C, nfft, T] as tp_frame_f32. Conversion, de-interleaving and windowing in one pass.
 */
TP_API void tp_frame_i16(const int16_t *x, int64_t C, int64_t T, int64_t hop, const float *win, int64_t wlen,
                         int64_t nfft, float *out) {
    const float scale = 1.0f / 32768.0f;
    for (int64_t c = 0; c < C; c++) {
        float *oc = out + c * nfft * T;
        for (int64_t t0 = 0; t0 < T; t0 += TBLK) {
            const int64_t nt = T - t0 < TBLK ? T - t0 : TBLK;
            for (int64_t n = 0; n < wlen; n++) {
                const float wn = win[n];
                const int16_t *src = x + (t0 * hop + n) * C + c;
                float *dst = oc + n * T + t0;
                for (int64_t t = 0; t < nt; t++) dst[t] = ((float)src[t * hop * C] * scale) * wn;
            }
        }
        memset(oc + wlen * T, 0, (size_t)((nfft - wlen) * T) * sizeof(float));
    }
}

/* complex [C, T, F] -> [C, F, T], blocked (for callers whose FFT output is frame-major). */
TP_API void tp_transpose_c64(const float *in, int64_t C, int64_t T, int64_t F, float *out) {
    const int64_t B = 16;
    for (int64_t c = 0; c < C; c++) {
        const uint64_t *src = (const uint64_t *)(const void *)(in) + c * T * F;
        uint64_t *dst = (uint64_t *)(void *)(out) + c * T * F;
        for (int64_t t0 = 0; t0 < T; t0 += B) {
            int64_t t1 = t0 + B < T ? t0 + B : T;
            for (int64_t f0 = 0; f0 < F; f0 += B) {
                int64_t f1 = f0 + B < F ? f0 + B : F;
                for (int64_t f = f0; f < f1; f++)
                    for (int64_t t = t0; t < t1; t++) dst[f * T + t] = src[t * F + f];
            }
        }
    }
}

/*
 * Spectra -> log-mel of the channel mean, fused: complex mean over channels, magnitude, sparse mel
 * filterbank, log(mel + log_offset).
 * spec: [C, F, T] complex64. Mel band m has weights wts[wofs[m] .. wofs[m] + blen[m]) for the bins
 * bstart[m] .. bstart[m] + blen[m]. mag: scratch of F * LM_TCHUNK floats. out: [T, M] float32.
 * LM_TCHUNK frames at a time: longer runs of each bin's row (the spectra are [C, F, T]) stream better.
 */
TP_API void tp_logmel(const float *spec, int64_t C, int64_t F, int64_t T, int64_t M, const int32_t *bstart,
                      const int32_t *blen, const int32_t *wofs, const float *wts, float log_offset, float *mag,
                      float *out) {
    int64_t flo = F, fhi = 0; /* bins any band uses */
    for (int64_t m = 0; m < M; m++) {
        if (blen[m] <= 0) continue;
        if (bstart[m] < flo) flo = bstart[m];
        if (bstart[m] + blen[m] > fhi) fhi = bstart[m] + blen[m];
    }
    const float inv_c = 1.0f / (float)C;
    float acc[LM_TCHUNK];
    for (int64_t t0 = 0; t0 < T; t0 += LM_TCHUNK) {
        const int64_t nt = T - t0 < LM_TCHUNK ? T - t0 : LM_TCHUNK;
        /* |mean_c X[c, f, t]| for the used bins of this chunk -> mag[f][0..nt) */
        for (int64_t f = flo; f < fhi; f++) {
            float *mf = mag + f * LM_TCHUNK;
#if defined(__GNUC__) || defined(__clang__)
            if (t0 + LM_TCHUNK < T) { /* fetch the next chunk of this bin's row (every channel) early */
                for (int64_t c = 0; c < C; c++) {
                    const char *nx = (const char *)(spec + 2 * ((c * F + f) * T + t0 + LM_TCHUNK));
                    for (int64_t o = 0; o < (int64_t)(2 * LM_TCHUNK * sizeof(float)); o += 64) __builtin_prefetch(nx + o);
                }
            }
#endif
            int64_t t = 0;
            for (; t + W <= nt; t += W) {
                vf re, im, r2, i2;
                vload_c(spec + 2 * (f * T + t0 + t), &re, &im);
                for (int64_t c = 1; c < C; c++) {
                    vload_c(spec + 2 * ((c * F + f) * T + t0 + t), &r2, &i2);
                    re = VADD(re, r2);
                    im = VADD(im, i2);
                }
                re = VMUL(re, VSET1(inv_c));
                im = VMUL(im, VSET1(inv_c));
                VSTORE(mf + t, VSQRT(VFMA(re, re, VMUL(im, im))));
            }
            for (; t < nt; t++) {
                float re = 0.0f, im = 0.0f;
                for (int64_t c = 0; c < C; c++) {
                    const float *p = spec + 2 * ((c * F + f) * T + t0 + t);
                    re += p[0];
                    im += p[1];
                }
                re *= inv_c;
                im *= inv_c;
                mf[t] = sqrtf(SFMA(re, re, im * im));
            }
        }
        /* sparse filterbank, vectorised over frames */
        for (int64_t m = 0; m < M; m++) {
            int64_t t = 0;
            for (; t + W <= nt; t += W) {
                vf a = VZERO();
                for (int32_t k = 0; k < blen[m]; k++)
                    a = VFMA(VSET1(wts[wofs[m] + k]), VLOAD(mag + (bstart[m] + k) * LM_TCHUNK + t), a);
                VSTORE(acc + t, a);
            }
            for (; t < nt; t++) {
                float a = 0.0f;
                for (int32_t k = 0; k < blen[m]; k++) a = SFMA(wts[wofs[m] + k], mag[(bstart[m] + k) * LM_TCHUNK + t], a);
                acc[t] = a;
            }
            for (t = 0; t + W <= nt; t += W) VSTORE(acc + t, vlog(VADD(VLOAD(acc + t), VSET1(log_offset))));
            for (; t < nt; t++) acc[t] = slog(acc[t] + log_offset);
            for (t = 0; t < nt; t++) out[(t0 + t) * M + m] = acc[t];
        }
    }
}

/* The PHAT-normalised cross-spectrum x_i conj(x_j) / (|x_i conj(x_j)| + eps) of W cells (vphat) or
 * one (sphat), from interleaved complex floats; the one arithmetic of tp_phat_cross and tp_cross_blocks. */
static inline __attribute__((always_inline)) void vphat(const float *xi, const float *xj, float eps, vf *ur, vf *ui) {
    vf ar, ai, br, bi;
    vload_c(xi, &ar, &ai);
    vload_c(xj, &br, &bi);
    /* (ar + i ai)(br - i bi) */
    const vf re = VFMA(ar, br, VMUL(ai, bi));
    const vf im = VSUB(VMUL(ai, br), VMUL(ar, bi));
    const vf den = VADD(VSQRT(VFMA(re, re, VMUL(im, im))), VSET1(eps));
    *ur = VDIV(re, den);
    *ui = VDIV(im, den);
}

static inline __attribute__((always_inline)) void sphat(const float *xi, const float *xj, float eps, float *ur,
                                                       float *ui) {
    const float ar = xi[0], ai = xi[1], br = xj[0], bi = xj[1];
    const float re = SFMA(ar, br, ai * bi), im = ai * br - ar * bi;
    const float den = sqrtf(SFMA(re, re, im * im)) + eps;
    *ur = re / den;
    *ui = im / den;
}

/*
 * Spectra -> PHAT-normalised cross-spectra, per frame, for microphone pairs in bins [b0, b1).
 * spec: [C, F, T] complex64; pairs: [P, 2] (i, j): cross = X_i conj(X_j) / (|X_i conj(X_j)| + eps).
 * w: NULL, or per-cell weights [B, T] (bin-major: contiguous in t) multiplying each normalised cell.
 * out: [T, P, B] complex64 (B = b1 - b0). tmp: scratch of 2 * TCHUNK floats.
 * Returns 0, or -1 (nothing written) when a pair names a channel outside [0, C).
 */
TP_API int tp_phat_cross(const float *spec, int64_t C, int64_t F, int64_t T, const int64_t *pairs, int64_t P,
                         int64_t b0, int64_t b1, float eps, const float *w, float *tmp, float *out) {
    for (int64_t p = 0; p < 2 * P; p++) {
        if (pairs[p] < 0 || pairs[p] >= C) return -1;
    }
    const int64_t B = b1 - b0;
    for (int64_t t0 = 0; t0 < T; t0 += TCHUNK) {
        const int64_t nt = T - t0 < TCHUNK ? T - t0 : TCHUNK;
        for (int64_t p = 0; p < P; p++) {
            const int64_t ci = pairs[2 * p], cj = pairs[2 * p + 1];
            for (int64_t b = 0; b < B; b++) {
                const float *xi = spec + 2 * ((ci * F + b0 + b) * T + t0);
                const float *xj = spec + 2 * ((cj * F + b0 + b) * T + t0);
                const float *wb = w ? w + b * T + t0 : NULL; /* this bin's weights, contiguous in t */
                int64_t t = 0;
                for (; t + W <= nt; t += W) {
                    vf ur, ui;
                    vphat(xi + 2 * t, xj + 2 * t, eps, &ur, &ui);
                    if (wb) {
                        const vf wv = VLOAD(wb + t);
                        ur = VMUL(ur, wv);
                        ui = VMUL(ui, wv);
                    }
                    vstore_c(tmp + 2 * t, ur, ui);
                }
                for (; t < nt; t++) {
                    float ur, ui;
                    sphat(xi + 2 * t, xj + 2 * t, eps, &ur, &ui);
                    if (wb) {
                        ur *= wb[t];
                        ui *= wb[t];
                    }
                    tmp[2 * t] = ur;
                    tmp[2 * t + 1] = ui;
                }
                uint64_t *dst = (uint64_t *)(void *)out + ((t0 * P + p) * B + b);
                const uint64_t *src = (const uint64_t *)(const void *)tmp;
                for (t = 0; t < nt; t++) dst[t * P * B] = src[t];
            }
        }
    }
    return 0;
}

/* One bin's cell powers summed over the channels, in channel order (re * re + im * im per channel):
 * p[t] for the T frames of bin f. */
static inline void bin_power(const float *spec, int64_t C, int64_t F, int64_t T, int64_t f, float *p) {
    for (int64_t t = 0; t < T; t++) p[t] = 0.0f;
    for (int64_t c = 0; c < C; c++) {
        const float *x = spec + 2 * ((c * F + f) * T);
        int64_t t = 0;
        for (; t + W <= T; t += W) {
            vf re, im;
            vload_c(x + 2 * t, &re, &im);
            VSTORE(p + t, VADD(VLOAD(p + t), VADD(VMUL(re, re), VMUL(im, im))));
        }
        for (; t < T; t++) {
            const float e = x[2 * t] * x[2 * t];
            const float g = x[2 * t + 1] * x[2 * t + 1];
            p[t] += e + g;
        }
    }
}

/* One bin's onset weights (edge.dsp.gcc_phat.onset_weights_of_power): p[-K .. T) holds the K powers
 * before the T frames, then theirs; w[t] = floor + (1 - floor) * v * v, v = ((p - max of the K previous
 * powers) / max(p, 1e-30)) clipped to [0, 1] (with floor 0: v * v). */
static inline void bin_onset(const float *p, int64_t K, int64_t T, float floor, float *w) {
    for (int64_t t = 0; t < T; t++) {
        float prev = K > 0 ? p[t - 1] : 0.0f;
        for (int64_t j = 2; j <= K; j++) prev = p[t - j] > prev ? p[t - j] : prev;
        float v = (p[t] - prev) / (p[t] > 1e-30f ? p[t] : 1e-30f);
        v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        v = v * v;
        if (floor != 0.0f) {
            v = v * (1.0f - floor);
            v = v + floor;
        }
        w[t] = v;
    }
}

/*
 * A recording's DOA input in one call (edge.dsp.gcc_phat.cross_blocks), bin by bin (each bin's rows
 * of the C channels are read once from memory and then from cache):
 *   with K > 0, the onset weights of the bin's cells from a zero history of K frames (the arithmetic
 *   of tp_onset_weights, so the same weights), else weight 1;
 *   each used frame's weight added to fw[t] (double), divided by B at the end: the mean over the bins;
 *   the PHAT cross-spectra of the P pairs times the weights, summed over the frames of each block.
 * blk: [T] the block of each frame (-1: not used; a block's frames ascending, blocks in frame order);
 * out: [NB, P, B] complex64 and fw: [T] float64, overwritten (fw 0 on unused frames). One block: each
 * (pair, bin) summed in SIMD lanes, then across the lanes; more blocks: each block's frames added one
 * after another. work: scratch of 4 T + K floats. Returns 0, or -1 (nothing written) when a pair
 * names a channel outside [0, C) or a block index is >= NB.
 */
TP_API int tp_cross_blocks(const float *spec, int64_t C, int64_t F, int64_t T, const int64_t *pairs, int64_t P,
                           int64_t b0, int64_t b1, float eps, int64_t K, float floor, const int64_t *blk, int64_t NB,
                           float *work, double *fw, float *out) {
    for (int64_t p = 0; p < 2 * P; p++) {
        if (pairs[p] < 0 || pairs[p] >= C) return -1;
    }
    int64_t lo = T, hi = 0; /* the used frames lie in [lo, hi) */
    for (int64_t t = 0; t < T; t++) {
        if (blk[t] >= NB) return -1;
        if (blk[t] >= 0) {
            lo = t < lo ? t : lo;
            hi = t + 1;
        }
    }
    const int64_t B = b1 - b0;
    memset(out, 0, (size_t)(2 * NB * P * B) * sizeof(float));
    for (int64_t t = 0; t < T; t++) fw[t] = 0.0;
    if (lo >= hi || B <= 0) return 0;
    float *wt = work, *pw = work + T, *tmp = work + 2 * T + K;
    for (int64_t b = 0; b < B; b++) {
        if (K > 0) {
            for (int64_t k = 0; k < K; k++) pw[k] = 0.0f; /* a zero history */
            bin_power(spec, C, F, T, b0 + b, pw + K);
            bin_onset(pw + K, K, T, floor, wt);
            for (int64_t t = 0; t < T; t++) {
                const int used = blk[t] >= 0;
                fw[t] += used ? (double)wt[t] : 0.0;
                wt[t] = used ? wt[t] : 0.0f;
            }
        } else {
            for (int64_t t = 0; t < T; t++) {
                wt[t] = blk[t] >= 0 ? 1.0f : 0.0f;
                fw[t] += (double)wt[t];
            }
        }
        for (int64_t q = 0; q < P; q++) {
            const int64_t ci = pairs[2 * q], cj = pairs[2 * q + 1];
            const float *xi = spec + 2 * ((ci * F + b0 + b) * T);
            const float *xj = spec + 2 * ((cj * F + b0 + b) * T);
            float *dst = out + 2 * (q * B + b);
            vf accr = VSET1(0.0f), acci = VSET1(0.0f);
            int64_t t = lo;
            for (; t + W <= hi; t += W) {
                vf ur, ui;
                vphat(xi + 2 * t, xj + 2 * t, eps, &ur, &ui);
                const vf wv = VLOAD(wt + t);
                ur = VMUL(ur, wv);
                ui = VMUL(ui, wv);
                if (NB == 1) {
                    accr = VADD(accr, ur);
                    acci = VADD(acci, ui);
                } else {
                    vstore_c(tmp + 2 * t, ur, ui);
                }
            }
            float sr = 0.0f, si = 0.0f;
            for (; t < hi; t++) {
                float ur, ui;
                sphat(xi + 2 * t, xj + 2 * t, eps, &ur, &ui);
                ur *= wt[t];
                ui *= wt[t];
                if (NB == 1) {
                    sr += ur;
                    si += ui;
                } else {
                    tmp[2 * t] = ur;
                    tmp[2 * t + 1] = ui;
                }
            }
            if (NB == 1) {
                float lr[W], li[W];
                VSTORE(lr, accr);
                VSTORE(li, acci);
                for (int i = 0; i < W; i++) {
                    sr += lr[i];
                    si += li[i];
                }
                dst[0] = sr;
                dst[1] = si;
                continue;
            }
            int64_t k = -1;
            for (t = lo; t < hi; t++) {
                const int64_t kt = blk[t];
                if (kt < 0) continue;
                if (kt != k) {
                    if (k >= 0) {
                        dst[2 * k * P * B] = sr;
                        dst[2 * k * P * B + 1] = si;
                    }
                    k = kt;
                    sr = tmp[2 * t];
                    si = tmp[2 * t + 1];
                } else {
                    sr += tmp[2 * t];
                    si += tmp[2 * t + 1];
                }
            }
            dst[2 * k * P * B] = sr;
            dst[2 * k * P * B + 1] = si;
        }
    }
    const double inv_b = 1.0 / (double)B;
    for (int64_t t = 0; t < T; t++) fw[t] *= inv_b;
    return 0;
}

/*
 * Onset weights (edge.dsp.gcc_phat.onset_weights): for each bin b0 <= b < b1 and frame t, the power
 * of the cell summed over the channels (in channel order, re*re + im*im), and the weight
 * floor + (1 - floor) * v * v, v = ((p - max of the K previous powers) / max(p, 1e-30)) clipped to
 * [0, 1] (with floor 0: v * v). hist [K, B]
 * holds the K frames before this call (oldest first) and is updated in place to the last K frames;
 * pw is scratch of K + T floats; out [B, T] (bin-major: the layout tp_phat_cross reads weights in).
 */
TP_API void tp_onset_weights(const float *spec, int64_t C, int64_t F, int64_t T, int64_t b0, int64_t b1, int64_t K,
                             float floor, float *hist, float *pw, float *out) {
    const int64_t B = b1 - b0;
    for (int64_t b = 0; b < B; b++) {
        for (int64_t k = 0; k < K; k++) pw[k] = hist[k * B + b];
        bin_power(spec, C, F, T, b0 + b, pw + K);
        bin_onset(pw + K, K, T, floor, out + b * T);
        for (int64_t k = 0; k < K; k++) hist[k * B + b] = pw[T + k];
    }
}

/* One direction's steered response: sum over pairs of the linearly interpolated cc at the pair's
 * fractional lag (clipped to [0, L - 1.000001]); shared by tp_srp_map and tp_srp_refine. */
static inline float srp_at(const float *cc, int64_t P, int64_t L, const double *lg) {
    const double hi = (double)L - 1.000001;
    float s = 0.0f;
    for (int64_t p = 0; p < P; p++) {
        double k = lg[p];
        k = k < 0.0 ? 0.0 : (k > hi ? hi : k);
        const int64_t k0 = (int64_t)k;
        const float frac = (float)(k - (double)k0);
        const float *row = cc + p * L;
        s += row[k0] * (1.0f - frac) + row[k0 + 1] * frac;
    }
    return s;
}

/*
 * GCC -> SRP-PHAT map: for each grid direction g, the sum over pairs of the cross-correlation at the
 * pair's fractional lag, linearly interpolated (lags clipped to [0, L - 1.000001]).
 * cc: [P, L] float32; lag: [G, P] float64; out: [G] float32.
 */
TP_API void tp_srp_map(const float *cc, int64_t P, int64_t L, const double *lag, int64_t G, float *out) {
    for (int64_t g = 0; g < G; g++) out[g] = srp_at(cc, P, L, lag + g * P);
}

/*
 * Coarse-to-fine SRP-PHAT peak search (the localiser's refinement, edge.dsp.srp_phat.srp_refine): at
 * each level n the candidates are (az + daz[i], clip(el + del[i], el_min, 90)) for the level's run of
 * offsets; each candidate's pair lags are ((-(u . d_p)) / c * rate) * up + lag0 with u the unit vector
 * (cos el cos az, cos el sin az, sin el) of the angles in radians and u . d_p = fma(u2, d2p,
 * fma(u1, d1p, u0 d0p)) (what the numpy reference's BLAS product gives on FMA hardware); the first
 * candidate of the largest response (tp_srp_map's) becomes the next centre.
 * cc: [P, L] float32; diff: [3, P] float64; daz, del: [N] float64 (all levels' offsets in order);
 * sizes: [n_levels] int64; azel: [2] float64 in (the grid peak) and out; lag: [P] float64 scratch.
 */
static void srp_refine_core(const float *cc, int64_t P, int64_t L, const double *diff, double c, double rate,
                            double up, double lag0, const double *daz, const double *del, const int64_t *sizes,
                            int64_t n_levels, double el_min, double *azel, double *lag) {
    const double rad = M_PI / 180.0;
    double az = azel[0], el = azel[1];
    int64_t off = 0;
    for (int64_t n = 0; n < n_levels; n++) {
        float best = -INFINITY;
        double baz = az, bel = el;
        int found = 0;
        for (int64_t i = off; i < off + sizes[n]; i++) {
            const double a = az + daz[i];
            double e = el + del[i];
            e = e > el_min ? e : el_min;
            e = e < 90.0 ? e : 90.0;
            const double ar = a * rad, er = e * rad;
            const double ce = cos(er);
            const double u0 = ce * cos(ar), u1 = ce * sin(ar), u2 = sin(er);
            for (int64_t p = 0; p < P; p++) {
                const double dot = fma(u2, diff[2 * P + p], fma(u1, diff[P + p], u0 * diff[p]));
                lag[p] = -dot / c * rate * up + lag0;
            }
            const float s = srp_at(cc, P, L, lag);
            if (!found || s > best) {
                best = s, baz = a, bel = e, found = 1;
            }
        }
        off += sizes[n];
        az = baz, el = bel;
    }
    azel[0] = az, azel[1] = el;
}

TP_API void tp_srp_refine(const float *cc, int64_t P, int64_t L, const double *diff, double c, double rate, double up,
                          double lag0, const double *daz, const double *del, const int64_t *sizes, int64_t n_levels,
                          double el_min, double *azel, double *lag) {
    srp_refine_core(cc, P, L, diff, c, rate, up, lag0, daz, del, sizes, n_levels, el_min, azel, lag);
}

/* Python's (a + 180) % 360 - 180 with -180 -> 180 (edge.dsp.srp_phat.wrap1): float % takes the sign of
 * the divisor. */
static double wrap1(double a) {
    double m = fmod(a + 180.0, 360.0);
    if (m != 0.0) {
        if (m < 0.0) m += 360.0;
    } else {
        m = 0.0;
    }
    const double w = m - 180.0;
    return w == -180.0 ? 180.0 : w;
}

/* edge.dsp.srp_phat.half_width: half the width (degrees) of the peak at k above half its height. */
static double half_width(const double *v, int64_t n, int64_t k, double step, int circular) {
    const double half = v[k] / 2.0;
    int64_t width = 0;
    for (int dir = -1; dir <= 1; dir += 2) {
        int64_t j = k;
        for (int64_t s = 0; s < n / 2; s++) {
            int64_t nj = j + dir;
            if (!circular && (nj < 0 || nj >= n)) break;
            nj = ((nj % n) + n) % n;
            if (v[nj] < half) break;
            j = nj;
            width++;
        }
    }
    return (double)(width + 1) * step / 2.0;
}

/* edge.dsp.srp_phat.local_maxima of v [n] (>= left, > right; -inf outside when not circular; fewer than 3
 * values: the first maximum), sorted highest first with ties in index order, into idx; returns the count. */
static int64_t peaks_sorted(const double *v, int64_t n, int circular, int64_t *idx) {
    int64_t m = 0;
    if (n < 3) {
        int64_t best = 0;
        for (int64_t a = 1; a < n; a++)
            if (v[a] > v[best]) best = a;
        idx[m++] = best;
    } else {
        for (int64_t k = 0; k < n; k++) {
            const double left = k > 0 ? v[k - 1] : (circular ? v[n - 1] : -INFINITY);
            const double right = k + 1 < n ? v[k + 1] : (circular ? v[0] : -INFINITY);
            if (v[k] >= left && v[k] > right) idx[m++] = k;
        }
    }
    for (int64_t i = 1; i < m; i++) { /* stable insertion sort, highest first */
        const int64_t k = idx[i];
        int64_t j = i;
        while (j > 0 && v[idx[j - 1]] < v[k]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = k;
    }
    return m;
}

/*
 * The sources of an SRP-PHAT map (edge.dsp.srp_phat.srp_peaks, the localiser's single-map search): the
 * map over G grid directions sorted by azimuth (az_start: [A] first index of each azimuth, az_vals [A]
 * its azimuth); the azimuth profile (best elevation per azimuth) scaled to [0, 1] (flat: no source);
 * its local maxima (>= left, > right; -inf outside a non-circular profile; fewer than 3: the first
 * maximum), highest first (ties in index order), each at least min_rel and min_sep degrees from the
 * chosen ones, at most max_src; each refined from its first best grid direction (srp_refine_core).
 * power: [G] float scratch; norm: [A] double scratch; idx: [A] int64 scratch; lag: [P] double scratch;
 * out: [max_src, 4] (az, el, half width, relative power). Returns the number of sources.
 */
TP_API int64_t tp_srp_peaks(const float *cc, int64_t P, int64_t L, const double *lag_index, int64_t G,
                            const int64_t *az_start, const double *az_vals, int64_t A, const double *grid_az,
                            const double *grid_el, int64_t circular, double min_rel, int64_t max_src, double min_sep,
                            const double *diff, double c, double rate, double up, double lag0, const double *daz,
                            const double *del, const int64_t *sizes, int64_t n_levels, double el_min, float *power,
                            double *norm, int64_t *idx, double *lag, double *out) {
    if (A < 1 || G < 1) return 0;
    for (int64_t g = 0; g < G; g++) power[g] = srp_at(cc, P, L, lag_index + g * P);
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t a = 0; a < A; a++) {
        const int64_t g1 = a + 1 < A ? az_start[a + 1] : G;
        double m = (double)power[az_start[a]];
        for (int64_t g = az_start[a] + 1; g < g1; g++) {
            const double v = (double)power[g];
            if (v > m || isnan(v)) m = v;
        }
        norm[a] = m;
        lo = m < lo ? m : lo;
        hi = m > hi ? m : hi;
    }
    if (!(hi - lo > 1e-12)) return 0;
    for (int64_t a = 0; a < A; a++) norm[a] = (norm[a] - lo) / (hi - lo);
    const int64_t n_peaks = peaks_sorted(norm, A, (int)circular, idx);
    int64_t n_out = 0; /* the chosen azimuth indices go to idx[0 .. n_out) (entries already visited) */
    for (int64_t i = 0; i < n_peaks; i++) {
        const int64_t k = idx[i];
        if (norm[k] < min_rel || n_out >= max_src) break;
        int ok = 1;
        for (int64_t j = 0; j < n_out; j++) {
            if (!(fabs(wrap1(az_vals[k] - az_vals[idx[j]])) >= min_sep)) {
                ok = 0;
                break;
            }
        }
        if (ok) idx[n_out++] = k;
    }
    const double step = A > 1 ? az_vals[1] - az_vals[0] : 0.0;
    for (int64_t j = 0; j < n_out; j++) {
        const int64_t k = idx[j];
        const int64_t g0 = az_start[k], g1 = k + 1 < A ? az_start[k + 1] : G;
        int64_t g = g0;
        for (int64_t h = g0 + 1; h < g1; h++)
            if (power[h] > power[g]) g = h;
        double azel[2] = {grid_az[g], grid_el[g]};
        srp_refine_core(cc, P, L, diff, c, rate, up, lag0, daz, del, sizes, n_levels, el_min, azel, lag);
        out[4 * j] = azel[0];
        out[4 * j + 1] = azel[1];
        out[4 * j + 2] = half_width(norm, A, k, step, (int)circular);
        out[4 * j + 3] = norm[k];
    }
    return n_out;
}

/*
 * The localiser's vote histogram (edge.dsp.srp_phat.vote_hist): the cells' votes [n_cells] (direction
 * indices, float weights) summed per direction in cell order (as np.bincount), smoothed with the odd,
 * symmetric taps [n_taps <= n_dirs] (wrapping around when circular, zero outside otherwise; each sum in
 * tap order), and its local maxima highest first. hist: [n_dirs] out; peaks:
 * [n_dirs] out. raw: [n_dirs + n_taps - 1] scratch. Returns the number of peaks, or -1 for a vote outside
 * 0 .. n_dirs - 1.
 */
TP_API int64_t tp_vote_hist(const int64_t *vote, const float *weight, int64_t n_cells, int64_t n_dirs,
                            const double *taps, int64_t n_taps, int64_t circular, double *raw, double *hist,
                            int64_t *peaks) {
    const int64_t half = n_taps / 2;
    double *mid = raw + half; /* raw: the histogram padded by half taps on each side */
    for (int64_t d = 0; d < n_dirs + 2 * half; d++) raw[d] = 0.0;
    for (int64_t i = 0; i < n_cells; i++) {
        const int64_t v = vote[i];
        if (v < 0 || v >= n_dirs) return -1;
        mid[v] += (double)weight[i];
    }
    if (circular) {
        for (int64_t j = 0; j < half; j++) {
            raw[j] = mid[n_dirs - half + j];
            mid[n_dirs + j] = mid[j];
        }
    }
    for (int64_t i = 0; i < n_dirs; i++) {
        double acc = 0.0;
        for (int64_t j = 0; j < n_taps; j++) acc += raw[i + j] * taps[n_taps - 1 - j];
        hist[i] = acc;
    }
    return peaks_sorted(hist, n_dirs, (int)circular, peaks);
}

/* The votes of nk (1 to 4) cells of one bin: the bin's steering is loaded once for all of them. ur, ui:
 * [nk, P] unit cross-spectra; vote, weight: the cells' outputs (consecutive). Each cell's sums are the
 * same operations in the same order whatever nk. With mirror (G even), directions g + G / 2 are the
 * directions g turned by 180 degrees in the array plane, with the conjugate steering: only the columns
 * g < G / 2 are read, and g + G / 2's response is a1 + a2 where g's is a1 - a2 (the same votes and
 * weights, the sums in another order). mirror is a constant at each call, so each case compiles apart. */
static inline __attribute__((always_inline)) void nb_cells(const int nk, const int mirror, const float *ur,
                                                          const float *ui, const float *br, const float *bi,
                                                          int64_t P, int64_t G, int64_t *vote, float *weight) {
    const int64_t H = mirror ? G / 2 : G; /* the columns computed */
    /* per lane: the largest response and the first direction that reached it (w*: the mirrored half) */
    vf vmax[4], wmax[4], vidx[4], widx[4], vsum[4];
    for (int c = 0; c < nk; c++) {
        vmax[c] = wmax[c] = VSET1(-INFINITY);
        vidx[c] = widx[c] = vsum[c] = VZERO();
    }
    vf vg = VLOAD(LANE_IOTA), vh = VADD(VLOAD(LANE_IOTA), VSET1((float)H));
    const vf vstep = VSET1((float)W);
    int64_t g = 0;
    for (; g + W <= H; g += W) {
        vf a1[4], a2[4];
        for (int c = 0; c < nk; c++) a1[c] = VZERO(), a2[c] = VZERO();
        for (int64_t p = 0; p < P; p++) {
            const vf sr = VLOAD(br + p * G + g), si = VLOAD(bi + p * G + g);
            for (int c = 0; c < nk; c++) {
                a1[c] = VFMA(VSET1(ur[c * P + p]), sr, a1[c]);
                a2[c] = VFMA(VSET1(ui[c * P + p]), si, a2[c]);
            }
        }
        for (int c = 0; c < nk; c++) {
            const vf r = VSUB(a1[c], a2[c]);
            vidx[c] = VSELGT(r, vmax[c], vg, vidx[c]);
            vmax[c] = VMAX(vmax[c], r);
            if (mirror) {
                const vf q = VADD(a1[c], a2[c]);
                widx[c] = VSELGT(q, wmax[c], vh, widx[c]);
                wmax[c] = VMAX(wmax[c], q);
                vsum[c] = VADD(vsum[c], VADD(r, q));
            } else {
                vsum[c] = VADD(vsum[c], r);
            }
        }
        vg = VADD(vg, vstep);
        vh = VADD(vh, vstep);
    }
    for (int c = 0; c < nk; c++) {
        float lanes[5 * W];
        VSTORE(lanes, vmax[c]);
        VSTORE(lanes + W, wmax[c]);
        VSTORE(lanes + 2 * W, vidx[c]);
        VSTORE(lanes + 3 * W, widx[c]);
        VSTORE(lanes + 4 * W, vsum[c]);
        const int nl = mirror ? 2 * W : W; /* lanes holding maxima: wmax only with mirror */
        float best = lanes[0], sum = 0.0f;
        for (int j = 0; j < W; j++) best = lanes[j] > best ? lanes[j] : best;
        for (int j = W; j < nl; j++) best = lanes[j] > best ? lanes[j] : best;
        for (int j = 0; j < W; j++) sum += lanes[4 * W + j];
        int64_t arg = G; /* the first direction of the largest response: the smallest index */
        for (int j = 0; j < nl; j++) {
            const int64_t idx = (int64_t)lanes[2 * W + j]; /* vidx, then widx */
            if (lanes[j] == best && idx < arg) arg = idx;
        }
        const float *u_r = ur + c * P, *u_i = ui + c * P;
        for (int64_t h = g; h < H; h++) {
            float a1 = 0.0f, a2 = 0.0f;
            for (int64_t p = 0; p < P; p++) {
                a1 = SFMA(u_r[p], br[p * G + h], a1);
                a2 = SFMA(u_i[p], bi[p * G + h], a2);
            }
            const float r = a1 - a2;
            if (r > best || (r == best && h < arg)) best = r, arg = h;
            sum += r;
            if (mirror) {
                const float q = a1 + a2;
                if (q > best || (q == best && h + H < arg)) best = q, arg = h + H;
                sum += q;
            }
        }
        if (arg >= G) arg = 0;
        vote[c] = arg;
        weight[c] = (best - sum / (float)G) / (float)P;
    }
}

/* The unit cross-spectra u_p = x / (|x| + eps) of cell (bin b, block k) of x [K, P, B] complex64, into
 * ur, ui [P] (tp_nb_vote, tp_cover_scores). */
static inline void unit_pairs(const float *x, int64_t k, int64_t P, int64_t B, int64_t b, float eps, float *ur,
                              float *ui) {
    for (int64_t p = 0; p < P; p++) {
        const float re = x[2 * ((k * P + p) * B + b)], im = x[2 * ((k * P + p) * B + b) + 1];
        const float den = sqrtf(SFMA(re, re, im * im)) + eps;
        ur[p] = re / den;
        ui[p] = im / den;
    }
}

/*
 * Narrowband votes of time-frequency cells (the localiser's multi-source histogram): for each bin b and
 * block k the unit cross-spectra u_p = x / (|x| + eps) steered over G directions,
 * resp[g] = sum_p Re(u_p) sr[b, p, g] - Im(u_p) si[b, p, g]; vote[b, k] = the first g of the largest
 * resp, weight[b, k] = (max - mean over g) / P.
 * x: [K, P, B] complex64; sr, si: [B, P, G] float32 (the steering's real and imaginary parts);
 * vote: [B, K] int64; weight: [B, K] float32; scratch: 2 K P floats. mirror (G even): directions
 * g + G / 2 are the directions g turned by 180 degrees, their steering the conjugate (only the first
 * G / 2 columns are read; nb_cells).
 */
TP_API void tp_nb_vote(const float *x, int64_t K, int64_t P, int64_t B, const float *sr, const float *si, int64_t G,
                       int64_t mirror, float eps, float *scratch, int64_t *vote, float *weight) {
    float *ur = scratch, *ui = scratch + K * P; /* [K, P] each */
    for (int64_t b = 0; b < B; b++) {
        const float *br = sr + b * P * G, *bi = si + b * P * G;
        for (int64_t k = 0; k < K; k++) unit_pairs(x, k, P, B, b, eps, ur + k * P, ui + k * P);
        int64_t k = 0;
#define NB_CELLS(n, m) nb_cells((n), (m), ur + k * P, ui + k * P, br, bi, P, G, vote + b * K + k, weight + b * K + k)
        if (mirror) {
            for (; k + 4 <= K; k += 4) NB_CELLS(4, 1);
            for (; k + 2 <= K; k += 2) NB_CELLS(2, 1);
            if (k < K) NB_CELLS(1, 1);
        } else {
            for (; k + 4 <= K; k += 4) NB_CELLS(4, 0);
            for (; k + 2 <= K; k += 2) NB_CELLS(2, 0);
            if (k < K) NB_CELLS(1, 0);
        }
#undef NB_CELLS
    }
}

/*
 * How well candidate directions explain the cells (the localiser's choice of simultaneous sources): for
 * each cell (bin b, block k) the unit cross-spectra u_p = x / (|x| + eps), its response at candidate n,
 * r = sum_p (Re(u_p) sr[b, p, cand[n]] - Im(u_p) si[b, p, cand[n]]) / P, and
 * m[n, b K + k] = w[b, k] exp(beta (r - 1)); then pair[i, j] = the sum over the cells of max(m[i], m[j])
 * (in double; the diagonal: m[i]'s sum).
 * x: [K, P, B] complex64; sr, si: [B, P, G] float32; cand: [N] int64 (0 <= cand < G); w: [B, K] float32;
 * scratch: 2 P floats; m: [N, B K] float32; pair: [N, N] float64.
 */
TP_API void tp_cover_scores(const float *x, int64_t K, int64_t P, int64_t B, const float *sr, const float *si,
                            int64_t G, const int64_t *cand, int64_t N, const float *w, float beta, float eps,
                            float *scratch, float *m, double *pair) {
    float *ur = scratch, *ui = scratch + P;
    const int64_t cells = B * K;
    const float inv_p = 1.0f / (float)P;
    for (int64_t b = 0; b < B; b++) {
        const float *br = sr + b * P * G, *bi = si + b * P * G;
        for (int64_t k = 0; k < K; k++) {
            unit_pairs(x, k, P, B, b, eps, ur, ui);
            const float wk = w[b * K + k];
            for (int64_t n = 0; n < N; n++) {
                const int64_t g = cand[n];
                float a = 0.0f, c = 0.0f;
                for (int64_t p = 0; p < P; p++) {
                    a = SFMA(ur[p], br[p * G + g], a);
                    c = SFMA(ui[p], bi[p * G + g], c);
                }
                m[n * cells + b * K + k] = wk * expf(beta * ((a - c) * inv_p - 1.0f));
            }
        }
    }
    for (int64_t i = 0; i < N; i++) {
        const float *mi = m + i * cells;
        for (int64_t j = i; j < N; j++) {
            const float *mj = m + j * cells;
            double acc = 0.0;
            for (int64_t t = 0; t < cells; t++) acc += (double)(mi[t] > mj[t] ? mi[t] : mj[t]);
            pair[i * N + j] = acc;
            pair[j * N + i] = acc;
        }
    }
}

/*
 * Spectra -> per-frame power (the level meter): out[t] = sum_c sum_f |X[c, f, t]|^2 w[f] / C.
 * With w the one-sided Parseval weights this is the frame's mean-square sample value (Leq per frame).
 * spec: [C, F, T] complex64; w: [F] float64; out: [T] float64 (accumulated in double).
 */
TP_API void tp_frame_power(const float *spec, int64_t C, int64_t F, int64_t T, const double *w, double *out) {
    for (int64_t t = 0; t < T; t++) out[t] = 0.0;
    float acc[TCHUNK];
    for (int64_t t0 = 0; t0 < T; t0 += TCHUNK) {
        const int64_t nt = T - t0 < TCHUNK ? T - t0 : TCHUNK;
        for (int64_t c = 0; c < C; c++) {
            for (int64_t f = 0; f < F; f++) {
                const float *x = spec + 2 * ((c * F + f) * T + t0);
                int64_t t = 0;
                for (; t + W <= nt; t += W) {
                    vf re, im;
                    vload_c(x + 2 * t, &re, &im);
                    VSTORE(acc + t, VFMA(re, re, VMUL(im, im)));
                }
                for (; t < nt; t++) acc[t] = SFMA(x[2 * t], x[2 * t], x[2 * t + 1] * x[2 * t + 1]);
                const double wf = w[f];
                for (t = 0; t < nt; t++) out[t0 + t] += (double)acc[t] * wf;
            }
        }
    }
    const double inv_c = 1.0 / (double)C;
    for (int64_t t = 0; t < T; t++) out[t] *= inv_c;
}

/*
 * Per-frame values -> per-output-frame rings (edge.dsp.rings.ring_accumulate): frame f = first + t
 * belongs to output frame f / sub in slot (f / sub) mod R; the slot is cleared (pframe set) at the
 * output frame's first STFT frame, then power[t] is added to psum and 1 to pcount, and cross row t
 * (n complex) to the slot's ring row when ring is not NULL. Frames are added in order.
 * power: [T] float64; cross: [T, n] complex64; psum: [R] float64; pcount, pframe: [R] int64;
 * ring: [R, n] complex64.
 */
TP_API void tp_ring_accumulate(int64_t first, int64_t T, int64_t sub, int64_t R, const double *power, const float *cross,
                               int64_t n, double *psum, int64_t *pcount, int64_t *pframe, float *ring) {
    for (int64_t t = 0; t < T; t++) {
        const int64_t f = first + t, out = f / sub, slot = out % R;
        float *row = ring ? ring + 2 * n * slot : NULL;
        if (f % sub == 0) {
            pframe[slot] = out;
            psum[slot] = 0.0;
            pcount[slot] = 0;
            if (row) memset(row, 0, (size_t)(2 * n) * sizeof(float));
        }
        psum[slot] += power[t];
        pcount[slot] += 1;
        if (row) {
            const float *src = cross + 2 * n * t;
            for (int64_t i = 0; i < 2 * n; i++) row[i] += src[i];
        }
    }
}

/*
 * The streaming pipeline's work on one block of spectra after the STFT, in one call (the same kernels
 * as the separate calls, in the same order, so the same results bit for bit):
 *   tp_frame_power (Parseval weights pw_w) -> power [T] (scratch);
 *   with a cross ring (ring not NULL): tp_onset_weights over bins [b0, b1) with K frames of history
 *   (hist [K, B], updated in place; K = 0: no weighting) -> ow [B, T] (scratch), then tp_phat_cross
 *   of the P pairs -> cross [T, P, B] (scratch);
 *   tp_ring_accumulate of power (and cross) into the rings, frame `first` onwards;
 *   with feats not NULL: tp_logmel -> feats [T, M].
 * Scratch: opw K + T floats, ow B * T floats, tmp 2 * TCHUNK floats, cross 2 * T * P * B floats, mag
 * F * LM_TCHUNK floats. Returns 0, or -1 (nothing written) when a pair names a channel outside [0, C).
 */
TP_API int tp_block_post(const float *spec, int64_t C, int64_t F, int64_t T, const double *pw_w, double *power,
                         int64_t b0, int64_t b1, int64_t K, float floor, float *hist, float *opw, float *ow,
                         const int64_t *pairs, int64_t P, float eps, float *tmp, float *cross, int64_t first,
                         int64_t sub, int64_t R, double *psum, int64_t *pcount, int64_t *pframe, float *ring,
                         int64_t M, const int32_t *bstart, const int32_t *blen, const int32_t *wofs,
                         const float *wts, float log_offset, float *mag, float *feats) {
    if (ring) {
        for (int64_t p = 0; p < 2 * P; p++) {
            if (pairs[p] < 0 || pairs[p] >= C) return -1;
        }
    }
    if (T <= 0) return 0;
    tp_frame_power(spec, C, F, T, pw_w, power);
    if (ring) {
        if (K > 0) tp_onset_weights(spec, C, F, T, b0, b1, K, floor, hist, opw, ow);
        tp_phat_cross(spec, C, F, T, pairs, P, b0, b1, eps, K > 0 ? ow : NULL, tmp, cross);
    }
    tp_ring_accumulate(first, T, sub, R, power, ring ? cross : NULL, P * (b1 - b0), psum, pcount, pframe, ring);
    if (feats) tp_logmel(spec, C, F, T, M, bstart, blen, wofs, wts, log_offset, mag, feats);
    return 0;
}

/* Equivalent level of samples (any channels, flattened): mean square in double, as dBFS with a
 * full-scale sine at 0 dBFS: 10 log10(2 * mean(x^2) + 1e-20). */
TP_API double tp_leq_dbfs(const float *x, int64_t n) {
    double s = 0.0;
    vf acc = VZERO();
    int64_t i = 0;
    float part[W];
    for (; i + W <= n; i += W) {
        vf v = VLOAD(x + i);
        acc = VFMA(v, v, acc);
        if (((i / W) & 1023) == 1023) { /* flush the float lanes into double now and then */
            VSTORE(part, acc);
            for (int k = 0; k < W; k++) s += part[k];
            acc = VZERO();
        }
    }
    VSTORE(part, acc);
    for (int k = 0; k < W; k++) s += part[k];
    for (; i < n; i++) s += (double)x[i] * x[i];
    return n > 0 ? 10.0 * log10(2.0 * s / (double)n + 1e-20) : -200.0;
}

/* DC blocker (edge/dsp/dcblock.py): y[n] = x[n] - x[n-1] + r y[n-1] per channel of x [C, N] (rows xs
 * apart; y's rows ys apart), in direct form II transposed with the double state z[C] carried between
 * calls: y = x + z; z = r y - x (the reference's lfilter arithmetic, so the same doubles). The channels
 * run side by side (independent recursions: their latencies overlap). */
static void dc_block_rows(const float *x, int64_t xs, int64_t C, int64_t N, double r, double *state, float *y,
                          int64_t ys) {
    int64_t c0 = 0;
    for (; c0 + 4 <= C; c0 += 4) {
        const float *x0 = x + c0 * xs, *x1 = x0 + xs, *x2 = x1 + xs, *x3 = x2 + xs;
        float *y0 = y + c0 * ys, *y1 = y0 + ys, *y2 = y1 + ys, *y3 = y2 + ys;
        double z0 = state[c0], z1 = state[c0 + 1], z2 = state[c0 + 2], z3 = state[c0 + 3];
        for (int64_t n = 0; n < N; n++) {
            double a = x0[n], b = x1[n], c = x2[n], d = x3[n];
            double ya = a + z0, yb = b + z1, yc = c + z2, yd = d + z3;
            z0 = r * ya - a; z1 = r * yb - b; z2 = r * yc - c; z3 = r * yd - d;
            y0[n] = (float)ya; y1[n] = (float)yb; y2[n] = (float)yc; y3[n] = (float)yd;
        }
        state[c0] = z0; state[c0 + 1] = z1; state[c0 + 2] = z2; state[c0 + 3] = z3;
    }
    for (; c0 < C; c0++) {
        const float *xc = x + c0 * xs;
        float *yc = y + c0 * ys;
        double z = state[c0];
        for (int64_t n = 0; n < N; n++) {
            double v = xc[n], o = v + z;
            z = r * o - v;
            yc[n] = (float)o;
        }
        state[c0] = z;
    }
}

TP_API void tp_dc_block(const float *x, int64_t C, int64_t N, double r, double *state, float *y) {
    dc_block_rows(x, N, C, N, r, state, y, N);
}

/* The streaming front end of one block (edge/stft.py's StftStage in one call): the block's samples x [C, N]
 * (rows xs apart) go through the DC blocker (r > 0; r = 0: copied as they are) into buf [C, cap] after the
 * n0 samples it carries; the T whole frames of the n0 + N samples go through tp_stft_f32 into out; the
 * samples after them move to the start of buf. Returns the samples buf carries now, or -1 when the DC
 * state is no longer finite (NaN or infinite samples: then nothing after the DC blocker is done, and buf
 * still carries its n0 samples). The caller sizes cap >= n0 + N and T = n_frames(n0 + N). */
TP_API int64_t tp_front_block(const float *x, int64_t C, int64_t N, int64_t xs, double r, double *state,
                              float *buf, int64_t cap, int64_t n0, int64_t T, int64_t hop, const float *win,
                              int64_t wlen, int64_t M, const float *tw, const float *rot, const int32_t *rev,
                              float *work, float *out) {
    if (r > 0.0) {
        dc_block_rows(x, xs, C, N, r, state, buf + n0, cap);
        for (int64_t c = 0; c < C; c++)
            if (!isfinite(state[c])) return -1;
    } else {
        for (int64_t c = 0; c < C; c++) memcpy(buf + c * cap + n0, x + c * xs, (size_t)N * sizeof(float));
    }
    const int64_t n = n0 + N, used = T * hop;
    if (T > 0) {
        tp_stft_f32(buf, C, cap, T, hop, win, wlen, M, tw, rot, rev, work, out);
        for (int64_t c = 0; c < C; c++) memmove(buf + c * cap, buf + c * cap + used, (size_t)(n - used) * sizeof(float));
    }
    return T > 0 ? n - used : n;
}
