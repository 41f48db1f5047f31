/* The stem's forward (see conv_stem.h): 4 output channels x 4 pixels of one output row in 16
   float registers, each input row's nine cells under the block loaded once per input channel
   and window row, the filters' three taps of that row loaded per output channel. */
#include "conv_stem.h"

#include <stddef.h>

#include "window.h"

#define K 3
#define MAX_IN_C 8 /* more input channels: the general loops (not a stem) */
#ifdef MDY_CONV_WINDOW_OFF
#define FAST_PATHS 0 /* the reference build: conv.c's general loops only */
#else
#define FAST_PATHS 1
#endif
/* The nine cells of a block's input row by one VLDM on the Cortex-M FPU (gcc never merges the
   VLDRs): the same loads, so the same values. Elsewhere plain loads. */
#if defined(__arm__) && defined(__ARM_FP) && defined(__GNUC__) && !defined(__clang__)
#define VLDM 1
#else
#define VLDM 0
#endif

/* The pixels (ox or oy) in [*lo, *hi) whose three taps all lie inside an input of `size`. */
static void inside(int32_t out, int32_t size, int32_t pad, int32_t *lo, int32_t *hi)
{
    *lo = 0;
    while (*lo < out && *lo * 2 - pad < 0) {
        ++*lo;
    }
    *hi = *lo;
    while (*hi < out && *hi * 2 - pad + K <= size) {
        ++*hi;
    }
}

/* One output pixel (oy, ox) of channels o .. o + 3 (filters w_o, stride taps), padded taps
   skipped as the general loop skips them. */
static void pixel4(const mdy_conv_shape_t *s, const float *x, const float *w_o, const float *bias,
                   int32_t oy, int32_t ox, float *y_o)
{
    const int32_t in_w = s->in_w, in_hw = s->in_h * s->in_w, taps = s->in_c * K * K;
    const int32_t iy0 = oy * 2 - s->pad_top, ix0 = ox * 2 - s->pad_left;
    const int32_t out_hw = s->out_h * s->out_w;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi, ic, ky, kx;
    float a0 = bias[0], a1 = bias[1], a2 = bias[2], a3 = bias[3];
    mdy_window_taps(iy0, s->in_h, K, &ky_lo, &ky_hi);
    mdy_window_taps(ix0, in_w, K, &kx_lo, &kx_hi);
    for (ic = 0; ic < s->in_c; ++ic) {
        for (ky = ky_lo; ky < ky_hi; ++ky) {
            const float *x_row = x + ic * in_hw + (iy0 + ky) * in_w + ix0;
            const float *w_row = w_o + (ic * K + ky) * K;
            for (kx = kx_lo; kx < kx_hi; ++kx) {
                const float c = x_row[kx];
                a0 += c * w_row[kx];
                a1 += c * w_row[taps + kx];
                a2 += c * w_row[2 * taps + kx];
                a3 += c * w_row[3 * taps + kx];
            }
        }
    }
    y_o += oy * s->out_w + ox;
    y_o[0] = a0;
    y_o[out_hw] = a1;
    y_o[2 * out_hw] = a2;
    y_o[3 * out_hw] = a3;
}

/* w0, w1, w2 = w[0..2] (one VLDM on the Cortex-M FPU, as the cells). */
#if VLDM
#define TAPS3(w) \
    register float w0 __asm__("s9"), w1 __asm__("s10"), w2 __asm__("s11"); \
    __asm__("vldmia %3, {s9-s11}" : "=t"(w0), "=t"(w1), "=t"(w2) \
            : "r"(w), "m"(*(const float (*)[3])(w)));
#else
#define TAPS3(w) const float w0 = (w)[0], w1 = (w)[1], w2 = (w)[2];
#endif

/* a += the three taps w[0..2] over the cells c[0..8] of pixels 0..3 (stride 2). */
#define ROW4(a, w) do { \
        TAPS3(w) \
        a##0 += c0 * w0; a##0 += c1 * w1; a##0 += c2 * w2; \
        a##1 += c2 * w0; a##1 += c3 * w1; a##1 += c4 * w2; \
        a##2 += c4 * w0; a##2 += c5 * w1; a##2 += c6 * w2; \
        a##3 += c6 * w0; a##3 += c7 * w1; a##3 += c8 * w2; \
    } while (0)

/* Pixels ox .. ox + 3 of row oy, output channels o .. o + 3, window rows [ky_lo, ky_hi) (the
   others in the padding), all columns inside the input. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns")))
#endif
static void block(const mdy_conv_shape_t *s, const float *x, const float *w, const float *bias,
                  int32_t oy, int32_t ox, int32_t ky_lo, int32_t ky_hi, float *y)
{
    const int32_t in_w = s->in_w, in_hw = s->in_h * s->in_w, taps = s->in_c * K * K;
    const int32_t out_hw = s->out_h * s->out_w;
    const float *x_0 = x + (oy * 2 - s->pad_top) * in_w + ox * 2 - s->pad_left;
    float a0 = bias[0], a1 = bias[0], a2 = bias[0], a3 = bias[0];
    float b0 = bias[1], b1 = bias[1], b2 = bias[1], b3 = bias[1];
    float d0 = bias[2], d1 = bias[2], d2 = bias[2], d3 = bias[2];
    float e0 = bias[3], e1 = bias[3], e2 = bias[3], e3 = bias[3];
    float *y_p = y + oy * s->out_w + ox;
    int32_t ic, ky;
    for (ic = 0; ic < s->in_c; ++ic) {
        for (ky = ky_lo; ky < ky_hi; ++ky) {
            const float *r = x_0 + ic * in_hw + ky * in_w, *w_r = w + (ic * K + ky) * K;
#if VLDM
            register float c0 __asm__("s0"), c1 __asm__("s1"), c2 __asm__("s2");
            register float c3 __asm__("s3"), c4 __asm__("s4"), c5 __asm__("s5");
            register float c6 __asm__("s6"), c7 __asm__("s7"), c8 __asm__("s8");
            __asm__("vldmia %9, {s0-s8}"
                    : "=t"(c0), "=t"(c1), "=t"(c2), "=t"(c3), "=t"(c4), "=t"(c5), "=t"(c6),
                      "=t"(c7), "=t"(c8)
                    : "r"(r), "m"(*(const float (*)[9])r));
#else
            const float c0 = r[0], c1 = r[1], c2 = r[2], c3 = r[3], c4 = r[4], c5 = r[5];
            const float c6 = r[6], c7 = r[7], c8 = r[8];
#endif
            ROW4(a, w_r);
            ROW4(b, w_r + taps);
            ROW4(d, w_r + 2 * taps);
            ROW4(e, w_r + 3 * taps);
        }
    }
    y_p[0] = a0; y_p[1] = a1; y_p[2] = a2; y_p[3] = a3;
    y_p += out_hw;
    y_p[0] = b0; y_p[1] = b1; y_p[2] = b2; y_p[3] = b3;
    y_p += out_hw;
    y_p[0] = d0; y_p[1] = d1; y_p[2] = d2; y_p[3] = d3;
    y_p += out_hw;
    y_p[0] = e0; y_p[1] = e1; y_p[2] = e2; y_p[3] = e3;
}

int mdy_conv3x3_stride2_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                                const float *b, float *y)
{
    const int32_t out_h = s->out_h, out_w = s->out_w, taps = s->in_c * K * K;
    int32_t x_lo, x_hi, o, k, oy, ox;
    float bias[4];
    if (!FAST_PATHS || s->k_h != K || s->k_w != K || s->stride_h != 2 || s->stride_w != 2 || s->groups != 1
        || s->in_c > MAX_IN_C || s->out_c % 4 != 0) {
        return 0;
    }
    inside(out_w, s->in_w, s->pad_left, &x_lo, &x_hi);
    if (x_hi - x_lo < 4) {
        return 0;
    }
    for (o = 0; o < s->out_c; o += 4) {
        const float *w_o = w + o * taps;
        float *y_o = y + o * out_h * out_w;
        for (k = 0; k < 4; ++k) {
            bias[k] = b != NULL ? b[o + k] : 0.0f;
        }
        for (oy = 0; oy < out_h; ++oy) {
            int32_t ky_lo, ky_hi;
            mdy_window_taps(oy * 2 - s->pad_top, s->in_h, K, &ky_lo, &ky_hi);
            for (ox = 0; ox < out_w; ++ox) {
                if (ox >= x_lo && ox + 4 <= x_hi) {
                    block(s, x, w_o, bias, oy, ox, ky_lo, ky_hi, y_o);
                    ox += 3;
                } else if (ox >= x_lo && ox < x_hi) {  /* the last block, overlapping */
                    block(s, x, w_o, bias, oy, x_hi - 4, ky_lo, ky_hi, y_o);
                    ox = x_hi - 1;
                } else {
                    pixel4(s, x, w_o, bias, oy, ox, y_o);
                }
            }
        }
    }
    return 1;
}
