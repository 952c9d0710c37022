/*
 * Test harness for the native DSP kernels on a foreign architecture (aarch64 NEON under qemu-user):
 * tests/test_backends.py cross-compiles it with edge/dsp/native/tympan_dsp.c, writes the inputs as
 * raw little-endian files into a directory, runs it, and compares the outputs with the numpy reference.
 *
 *   harness DIR      reads DIR/dims (C N T F M P B0 B1 G L NFFT WIN HOP), DIR/x.f32, DIR/pcm.i16,
 *                    DIR/win.f32, DIR/spec.c64, DIR/bstart.i32, DIR/blen.i32, DIR/wofs.i32, DIR/wts.f32,
 *                    DIR/pairs.i64, DIR/cc.f32, DIR/lag.f64, DIR/w.f64, DIR/tw.c64, DIR/rot.c64,
 *                    DIR/rev.i32; writes DIR/<kernel>.out
 *                    and prints the SIMD variant it was built for.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tp_abi_version(void);
const char *tp_simd(void);
int tp_simd_width(void);
void tp_stft_f32(const float *, int64_t, int64_t, int64_t, int64_t, const float *, int64_t, int64_t, const float *,
                 const float *, const int32_t *, float *, float *);
void tp_frame_f32(const float *, int64_t, int64_t, int64_t, int64_t, const float *, int64_t, int64_t, float *);
void tp_frame_i16(const int16_t *, int64_t, int64_t, int64_t, const float *, int64_t, int64_t, float *);
void tp_transpose_c64(const float *, int64_t, int64_t, int64_t, float *);
void tp_logmel(const float *, int64_t, int64_t, int64_t, int64_t, const int32_t *, const int32_t *, const int32_t *,
               const float *, float, float *, float *);
int tp_phat_cross(const float *, int64_t, int64_t, int64_t, const int64_t *, int64_t, int64_t, int64_t, float,
                  const float *, float *, float *);
void tp_onset_weights(const float *, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float *, float *,
                      float *);
int tp_cross_blocks(const float *, int64_t, int64_t, int64_t, const int64_t *, int64_t, int64_t, int64_t, float,
                    int64_t, float, const int64_t *, int64_t, float *, double *, float *);
void tp_srp_map(const float *, int64_t, int64_t, const double *, int64_t, float *);
void tp_frame_power(const float *, int64_t, int64_t, int64_t, const double *, double *);
double tp_leq_dbfs(const float *, int64_t);

static const char *dir;

static void *slurp(const char *name, size_t *size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *buf = malloc(n > 0 ? (size_t)n : 1);
    if (n > 0 && fread(buf, 1, (size_t)n, f) != (size_t)n) { perror(path); exit(2); }
    fclose(f);
    if (size) *size = (size_t)n;
    return buf;
}

static void spit(const char *name, const void *buf, size_t size) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, size, f) != size) { perror(path); exit(2); }
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: harness DIR\n"); return 2; }
    dir = argv[1];
    int64_t C, N, T, F, M, P, B0, B1, G, L, NFFT, WIN, HOP;
    char *dims = slurp("dims", NULL);
    if (sscanf(dims, "%ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld %ld", &C, &N, &T, &F, &M, &P, &B0, &B1, &G, &L,
               &NFFT, &WIN, &HOP) != 13) { fprintf(stderr, "bad dims\n"); return 2; }
    float *x = slurp("x.f32", NULL), *win = slurp("win.f32", NULL), *spec = slurp("spec.c64", NULL);
    int16_t *pcm = slurp("pcm.i16", NULL);
    int32_t *bstart = slurp("bstart.i32", NULL), *blen = slurp("blen.i32", NULL), *wofs = slurp("wofs.i32", NULL);
    float *wts = slurp("wts.f32", NULL), *cc = slurp("cc.f32", NULL);
    int64_t *pairs = slurp("pairs.i64", NULL);
    double *lag = slurp("lag.f64", NULL), *w = slurp("w.f64", NULL);

    float *tw = slurp("tw.c64", NULL), *rot = slurp("rot.c64", NULL);
    int32_t *rev = slurp("rev.i32", NULL);
    float *work = malloc((size_t)(NFFT * 8 + 16) * sizeof(float));
    float *stft = malloc((size_t)(C * (NFFT / 2 + 1) * T) * 2 * sizeof(float));
    tp_stft_f32(x, C, N, T, HOP, win, WIN, NFFT / 2, tw, rot, rev, work, stft);
    spit("stft.out", stft, (size_t)(C * (NFFT / 2 + 1) * T) * 2 * sizeof(float));

    size_t nfr = (size_t)(C * T * NFFT);
    float *frames = malloc(nfr * sizeof(float));
    tp_frame_f32(x, C, N, T, HOP, win, WIN, NFFT, frames);
    spit("frame_f32.out", frames, nfr * sizeof(float));
    tp_frame_i16(pcm, C, T, HOP, win, WIN, NFFT, frames);
    spit("frame_i16.out", frames, nfr * sizeof(float));

    float *tr = malloc((size_t)(C * T * F) * 2 * sizeof(float));
    tp_transpose_c64(spec, C, F, T, tr); /* [C, F, T] read as [C, T', F'] with T' = F, F' = T */
    spit("transpose.out", tr, (size_t)(C * T * F) * 2 * sizeof(float));

    float *mag = malloc((size_t)F * 32 * sizeof(float)), *lm = malloc((size_t)(T * M) * sizeof(float));
    tp_logmel(spec, C, F, T, M, bstart, blen, wofs, wts, 0.001f, mag, lm);
    spit("logmel.out", lm, (size_t)(T * M) * sizeof(float));

    float tmp[64];
    size_t ncross = (size_t)(T * P * (B1 - B0)) * 2;
    float *cross = malloc(ncross * sizeof(float));
    tp_phat_cross(spec, C, F, T, pairs, P, B0, B1, 1e-12f, NULL, tmp, cross);
    spit("phat.out", cross, ncross * sizeof(float));

    /* onset weights from a history of 3 frames (updated in place), then the cross-spectra weighted by them */
    float *hist = slurp("hist.f32", NULL);
    float *ow = malloc((size_t)(T * (B1 - B0)) * sizeof(float)), *owork = malloc((size_t)(3 + T) * sizeof(float));
    tp_onset_weights(spec, C, F, T, B0, B1, 3, 0.05f, hist, owork, ow);
    spit("onset.out", ow, (size_t)(T * (B1 - B0)) * sizeof(float)); /* [B, T] */
    spit("hist.out", hist, (size_t)(3 * (B1 - B0)) * sizeof(float));
    tp_phat_cross(spec, C, F, T, pairs, P, B0, B1, 1e-12f, ow, tmp, cross); /* both [B, T] */
    spit("phat_w.out", cross, ncross * sizeof(float));

    /* a recording's DOA input: onset weights from a zero history of 3 frames, the weighted cross-spectra
     * summed per block of 4 of the frames t % 5 != 2 (the others left out), then all in one block */
    int64_t *blk = malloc((size_t)T * sizeof(int64_t)), *blk1 = malloc((size_t)T * sizeof(int64_t)), used = 0;
    for (int64_t t = 0; t < T; t++) {
        const int skip = t % 5 == 2;
        blk[t] = skip ? -1 : used / 4;
        blk1[t] = skip ? -1 : 0;
        used += !skip;
    }
    const int64_t NB = (used + 3) / 4, NS = NB * P * (B1 - B0) * 2;
    float *sums = malloc((size_t)NS * sizeof(float)), *cwork = malloc((size_t)(4 * T + 3) * sizeof(float));
    double *fw = malloc((size_t)T * sizeof(double));
    if (tp_cross_blocks(spec, C, F, T, pairs, P, B0, B1, 1e-12f, 3, 0.05f, blk, NB, cwork, fw, sums)) return 3;
    spit("blocks.out", sums, (size_t)NS * sizeof(float));
    spit("blocks_fw.out", fw, (size_t)T * sizeof(double));
    if (tp_cross_blocks(spec, C, F, T, pairs, P, B0, B1, 1e-12f, 3, 0.05f, blk1, 1, cwork, fw, sums)) return 3;
    spit("block1.out", sums, (size_t)(P * (B1 - B0)) * 2 * sizeof(float));

    float *srp = malloc((size_t)G * sizeof(float));
    tp_srp_map(cc, P, L, lag, G, srp);
    spit("srp.out", srp, (size_t)G * sizeof(float));

    double *pw = malloc((size_t)T * sizeof(double));
    tp_frame_power(spec, C, F, T, w, pw);
    spit("power.out", pw, (size_t)T * sizeof(double));

    double leq = tp_leq_dbfs(x, C * N);
    spit("leq.out", &leq, sizeof leq);
    printf("%s %d %d\n", tp_simd(), tp_abi_version(), tp_simd_width());
    return 0;
}
