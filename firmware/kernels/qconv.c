/*
 * int8 convolution (see qconv.h). Direct loops, no scratch memory; padded taps are skipped by
 * loop bounds (window.h). Integer sums are exact, so any summation order gives the same bits.
 *
 * With the DSP extension (__ARM_FEATURE_DSP: Cortex-M4/M7) the pointwise and 3x3 convs take
 * SMLAD paths (qdsp.h): the zero point folded into the bias (exact), two int8 taps per
 * instruction. The portable loops stay the reference (host, Cortex-M0/M3); tests compare both
 * with the numpy reference (tests/test_qkernels_dsp.py runs the DSP paths under QEMU).
 */
#include "qconv.h"

#include <stddef.h>

#include "qdsp.h"
#include "quant.h"
#include "window.h"

/* 1x1, stride 1, no padding: every tap is in bounds, so the zero point's share of each
   output channel, in_zero * sum_ic w[o][ic], is folded into its bias once. */
static int is_pointwise(const mdy_conv_shape_t *s)
{
    return s->k_h == 1 && s->k_w == 1 && s->stride_h == 1 && s->stride_w == 1
        && s->pad_top == 0 && s->pad_left == 0 && s->out_h == s->in_h && s->out_w == s->in_w;
}

/* bias[o] - in_zero * (the sum of output channel o's n weights): its accumulator's start when
   every tap is in bounds. */
static int32_t folded_offset(const mdy_q8_conv_t *p, int32_t o, const int8_t *w_o, int32_t n)
{
    int32_t offset = p->bias != NULL ? p->bias[o] : 0, i;
    for (i = 0; i < n; ++i) {
        offset -= p->in_zero * w_o[i];
    }
    return offset;
}

#if defined(__ARM_FEATURE_DSP)
/* Pixels [i, i + 4) of one output channel: input channels in pairs (the two channels' words
   SXTB16-split into (p0, p2) and (p1, p3), PKHBT/PKHTB into per-pixel channel pairs, one SMLAD
   per pixel and pair), an odd last channel by SMLABB/SMLATB. cpg % 4 = 0, 1, 2, 3 each take
   their own tail. */
static void pointwise_quad(const int8_t *x, int32_t hw, int32_t cpg, const int8_t *w_o,
                           int32_t offset, int32_t acc[4])
{
    int32_t a0 = offset, a1 = offset, a2 = offset, a3 = offset, ic = 0;
    /* four channels c..c+3 per step, paired (c, c+2) and (c+1, c+3) as one word of weights
       splits: SXTB16 gives (w0, w2), rotated (w1, w3) */
    for (; ic + 4 <= cpg; ic += 4) {
        const int32_t ww = mdy_dsp_load4(w_o + ic);
        const int32_t w02 = mdy_dsp_even(ww), w13 = mdy_dsp_odd(ww);
        int32_t u = mdy_dsp_load4(x), v = mdy_dsp_load4(x + 2 * hw);
        int32_t ue = mdy_dsp_even(u), uo = mdy_dsp_odd(u);
        int32_t ve = mdy_dsp_even(v), vo = mdy_dsp_odd(v);
        a0 = __smlad(mdy_dsp_low(ue, ve), w02, a0);
        a1 = __smlad(mdy_dsp_low(uo, vo), w02, a1);
        a2 = __smlad(mdy_dsp_high(ue, ve), w02, a2);
        a3 = __smlad(mdy_dsp_high(uo, vo), w02, a3);
        u = mdy_dsp_load4(x + hw);
        v = mdy_dsp_load4(x + 3 * hw);
        ue = mdy_dsp_even(u);
        uo = mdy_dsp_odd(u);
        ve = mdy_dsp_even(v);
        vo = mdy_dsp_odd(v);
        a0 = __smlad(mdy_dsp_low(ue, ve), w13, a0);
        a1 = __smlad(mdy_dsp_low(uo, vo), w13, a1);
        a2 = __smlad(mdy_dsp_high(ue, ve), w13, a2);
        a3 = __smlad(mdy_dsp_high(uo, vo), w13, a3);
        x += 4 * hw;
    }
    for (; ic + 2 <= cpg; ic += 2) {
        const int32_t u = mdy_dsp_load4(x), v = mdy_dsp_load4(x + hw);
        const int32_t u02 = mdy_dsp_even(u), u13 = mdy_dsp_odd(u);
        const int32_t v02 = mdy_dsp_even(v), v13 = mdy_dsp_odd(v);
        const int32_t wp = mdy_dsp_low(w_o[ic], w_o[ic + 1]);
        a0 = __smlad(mdy_dsp_low(u02, v02), wp, a0);
        a1 = __smlad(mdy_dsp_low(u13, v13), wp, a1);
        a2 = __smlad(mdy_dsp_high(u02, v02), wp, a2);
        a3 = __smlad(mdy_dsp_high(u13, v13), wp, a3);
        x += 2 * hw;
    }
    if (ic < cpg) {
        const int32_t u = mdy_dsp_load4(x), wv = w_o[ic];
        const int32_t u02 = mdy_dsp_even(u), u13 = mdy_dsp_odd(u);
        a0 = __smlabb(u02, wv, a0);
        a1 = __smlabb(u13, wv, a1);
        a2 = __smlatb(u02, wv, a2);
        a3 = __smlatb(u13, wv, a3);
    }
    acc[0] = a0;
    acc[1] = a1;
    acc[2] = a2;
    acc[3] = a3;
}

/* Four outputs of one channel, out of line: the requantization's fields stay in registers
   (inlined in the pixel loop, gcc 12 reloads them from the stack for every output). */
static __attribute__((noinline)) void requant4(const mdy_q8_requant_t *rq, const int32_t acc[4],
                                               int8_t *y)
{
    const mdy_q8_requant_t r = *rq;
    y[0] = mdy_q8_requant_apply(&r, acc[0]);
    y[1] = mdy_q8_requant_apply(&r, acc[1]);
    y[2] = mdy_q8_requant_apply(&r, acc[2]);
    y[3] = mdy_q8_requant_apply(&r, acc[3]);
}
#endif

static void pointwise_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p,
                              const int8_t *x, const int8_t *w, int8_t *y)
{
    const int32_t hw = s->in_h * s->in_w, cpg = s->in_c / s->groups;
    const int32_t opg = s->out_c / s->groups;
    int32_t o, ic, i;
    for (o = 0; o < s->out_c; ++o) {
        const int8_t *x_g = x + (o / opg) * cpg * hw;  /* the group's inputs: cpg x hw */
        const int8_t *w_o = w + o * cpg;
        const int32_t offset = folded_offset(p, o, w_o, cpg);
        const mdy_q8_requant_t rq = mdy_q8_conv_requant(p, o);
        int8_t *y_o = y + o * hw;
        i = 0;
#if defined(__ARM_FEATURE_DSP)
        for (; i + 4 <= hw; i += 4) {
            int32_t acc[4];
            pointwise_quad(x_g + i, hw, cpg, w_o, offset, acc);
            requant4(&rq, acc, y_o + i);
        }
#endif
        for (; i < hw; ++i) {
            int32_t acc = offset;
            for (ic = 0; ic < cpg; ++ic) {
                acc += x_g[ic * hw + i] * w_o[ic];
            }
            y_o[i] = mdy_q8_requant_apply(&rq, acc);
        }
    }
}

/* Output pixel (oy, ox) of output channel o (inputs x_g, weights w_o: cpg x k_h x k_w), its
   in-bounds taps only: bias + sum (x - in_zero) * w. */
static int32_t window_acc(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p, int32_t o,
                          const int8_t *x_g, const int8_t *w_o, int32_t oy, int32_t ox)
{
    const int32_t in_w = s->in_w, k_w = s->k_w, in_hw = s->in_h * in_w;
    const int32_t k_hw = s->k_h * k_w, cpg = s->in_c / s->groups, z = p->in_zero;
    const int32_t iy0 = oy * s->stride_h - s->pad_top, ix0 = ox * s->stride_w - s->pad_left;
    int32_t ky_lo, ky_hi, kx_lo, kx_hi, ic, ky, kx;
    int32_t acc = p->bias != NULL ? p->bias[o] : 0;
    mdy_window_taps(iy0, s->in_h, s->k_h, &ky_lo, &ky_hi);
    mdy_window_taps(ix0, in_w, k_w, &kx_lo, &kx_hi);
    for (ic = 0; ic < cpg; ++ic) {
        const int8_t *x_c = x_g + ic * in_hw;
        const int8_t *w_c = w_o + ic * k_hw;
        for (ky = ky_lo; ky < ky_hi; ++ky) {
            const int8_t *x_row = x_c + (iy0 + ky) * in_w;
            const int8_t *w_row = w_c + ky * k_w;
            for (kx = kx_lo; kx < kx_hi; ++kx) {
                acc += (x_row[ix0 + kx] - z) * w_row[kx];
            }
        }
    }
    return acc;
}

#if defined(__ARM_FEATURE_DSP)
/*
 * 3x3 windows wholly inside the input (rows iy0..iy0+2, columns ix0..ix0+3 readable: the word
 * loads read one column past a single pixel's taps), from the folded offset: per row, the word
 * x[ix0..ix0+3] split into (x0, x2) and (x1, x3); one pixel is SMLAD((x0, x2), (w0, w2)) +
 * SMLABB(x1, w1); at stride 1 its right neighbour is SMLAD((x1, x3), (w0, w2)) + SMLATB(x2, w1).
 * n: 1 or 2 pixels (2 only at stride 1). The rest of the map goes through window_acc.
 */
static void window3x3_dsp(const mdy_conv_shape_t *s, const int8_t *x_g, const int8_t *w_o,
                          int32_t cpg, int32_t offset, int32_t iy0, int32_t ix0, int32_t n,
                          int32_t acc[2])
{
    const int32_t in_w = s->in_w, in_hw = s->in_h * in_w;
    int32_t a0 = offset, a1 = offset, ic, r;
    for (ic = 0; ic < cpg; ++ic) {
        const int8_t *row = x_g + ic * in_hw + iy0 * in_w + ix0;
        const int8_t *w_r = w_o + ic * 9;
        for (r = 0; r < 3; ++r, row += in_w, w_r += 3) {
            const int32_t u = mdy_dsp_load4(row);
            const int32_t u02 = mdy_dsp_even(u), u13 = mdy_dsp_odd(u);
            const int32_t w02 = mdy_dsp_low(w_r[0], w_r[2]), w1 = w_r[1];
            a0 = __smlabb(u13, w1, __smlad(u02, w02, a0));
            if (n == 2) {
                a1 = __smlatb(u02, w1, __smlad(u13, w02, a1));
            }
        }
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* Weight pairs of a 3x3 filter for window taps: per row r, (w[r][0], w[r][2]) then w[r][1]. */
static void weight_pairs3x3(const int8_t *w, int32_t k[6])
{
    int32_t r;
    for (r = 0; r < 3; ++r) {
        k[2 * r] = mdy_dsp_low(w[3 * r], w[3 * r + 2]);
        k[2 * r + 1] = w[3 * r + 1];
    }
}

/* One 3x3 row tap set: acc += (x0, x2) . (w0, w2) + x1 * w1 for the word u = x[0..3]. */
static int32_t row_taps(int32_t u, int32_t w02, int32_t w1, int32_t acc)
{
    return __smlabb(mdy_dsp_odd(u), w1, __smlad(mdy_dsp_even(u), w02, acc));
}

/*
 * n consecutive interior outputs of one single-input-channel 3x3 conv (depthwise), the first
 * reading rows x0, x0 + in_w, x0 + 2 in_w from column 0, each next one `stride` columns on, every
 * word load inside its row (the caller's bound); weights k from weight_pairs3x3, in registers.
 * At stride 1 two pixels share each row's word: the right one is (x1, x3) . (w0, w2) + x2 * w1.
 */
static void depthwise3x3_row(const int8_t *x0, int32_t in_w, int32_t stride, int32_t n,
                             const int32_t k[6], int32_t offset, const mdy_q8_requant_t *rq,
                             int8_t *y)
{
    const int32_t k0 = k[0], k1 = k[1], k2 = k[2], k3 = k[3], k4 = k[4], k5 = k[5];
    int32_t j = 0;
    if (stride == 1) {
        for (; j + 2 <= n; j += 2) {
            const int8_t *p = x0 + j;
            const int32_t u = mdy_dsp_load4(p), v = mdy_dsp_load4(p + in_w);
            const int32_t t = mdy_dsp_load4(p + 2 * in_w);
            const int32_t u02 = mdy_dsp_even(u), u13 = mdy_dsp_odd(u);
            const int32_t v02 = mdy_dsp_even(v), v13 = mdy_dsp_odd(v);
            const int32_t t02 = mdy_dsp_even(t), t13 = mdy_dsp_odd(t);
            int32_t a = __smlabb(u13, k1, __smlad(u02, k0, offset));
            int32_t b = __smlatb(u02, k1, __smlad(u13, k0, offset));
            a = __smlabb(v13, k3, __smlad(v02, k2, a));
            b = __smlatb(v02, k3, __smlad(v13, k2, b));
            a = __smlabb(t13, k5, __smlad(t02, k4, a));
            b = __smlatb(t02, k5, __smlad(t13, k4, b));
            y[j] = mdy_q8_requant_apply(rq, a);
            y[j + 1] = mdy_q8_requant_apply(rq, b);
        }
    }
    for (; j < n; ++j) {
        const int8_t *p = x0 + j * stride;
        int32_t a = row_taps(mdy_dsp_load4(p), k0, k1, offset);
        a = row_taps(mdy_dsp_load4(p + in_w), k2, k3, a);
        a = row_taps(mdy_dsp_load4(p + 2 * in_w), k4, k5, a);
        y[j] = mdy_q8_requant_apply(rq, a);
    }
}

/* The most input channels per group whose weight pairs conv3x3_dsp keeps (on the stack, 24 B
   each) for pixel_3x3; more go through window3x3_dsp, which reads them per tap. */
#define PAIRED_CHANNELS 4

/* One interior output of a 3x3 conv over cpg <= PAIRED_CHANNELS channels, its rows at x,
   x + in_w, x + 2 in_w of each channel, the weight pairs of each channel in k. */
static int32_t pixel_3x3(const int8_t *x, int32_t in_w, int32_t in_hw, int32_t cpg,
                         int32_t k[PAIRED_CHANNELS][6], int32_t acc)
{
    int32_t ic;
    for (ic = 0; ic < cpg; ++ic, x += in_hw) {
        acc = row_taps(mdy_dsp_load4(x), k[ic][0], k[ic][1], acc);
        acc = row_taps(mdy_dsp_load4(x + in_w), k[ic][2], k[ic][3], acc);
        acc = row_taps(mdy_dsp_load4(x + 2 * in_w), k[ic][4], k[ic][5], acc);
    }
    return acc;
}

static void conv3x3_dsp(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p, const int8_t *x,
                        const int8_t *w, int8_t *y)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t cpg = s->in_c / s->groups, opg = s->out_c / s->groups;
    const int32_t sw = s->stride_w, pad = s->pad_left;
    /* the columns whose word loads stay inside the row: ix0 >= 0 and ix0 + 4 <= in_w */
    const int32_t ox_lo = (pad + sw - 1) / sw;
    int32_t ox_hi = in_w - 4 + pad >= 0 ? (in_w - 4 + pad) / sw + 1 : 0;
    int32_t ox_end, o, oy, ox;
    ox_hi = ox_hi > out_w ? out_w : ox_hi < ox_lo ? ox_lo : ox_hi;
    /* at stride 1 a pair whose left pixel is below ox_hi reads only its own taps: one more
       pixel when that leaves whole pairs */
    ox_end = sw == 1 && ox_hi > ox_lo && ox_hi < out_w && (ox_hi + 1 - ox_lo) % 2 == 0
        ? ox_hi + 1 : ox_hi;
    for (o = 0; o < s->out_c; ++o) {
        const int8_t *x_g = x + (o / opg) * cpg * in_h * in_w;
        const int8_t *w_o = w + o * cpg * 9;
        const int32_t offset = folded_offset(p, o, w_o, cpg * 9);
        const mdy_q8_requant_t rq = mdy_q8_conv_requant(p, o);
        int32_t k[PAIRED_CHANNELS][6], ic;
        int8_t *y_o = y + o * out_h * out_w;
        for (ic = 0; ic < cpg && ic < PAIRED_CHANNELS; ++ic) {
            weight_pairs3x3(w_o + ic * 9, k[ic]);
        }
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            const int rows_in = iy0 >= 0 && iy0 + 3 <= in_h;
            int8_t *y_row = y_o + oy * out_w;
            for (ox = 0; ox < out_w;) {
                const int32_t ix0 = ox * sw - pad;
                if (rows_in && ox == ox_lo && ox_hi > ox_lo && cpg == 1) {
                    depthwise3x3_row(x_g + iy0 * in_w + ix0, in_w, sw, ox_end - ox_lo, k[0],
                                     offset, &rq, y_row + ox);
                    ox = ox_end;
                } else if (rows_in && ox == ox_lo && ox_hi > ox_lo && cpg <= PAIRED_CHANNELS) {
                    const int8_t *x_row = x_g + iy0 * in_w + ix0;
                    for (; ox < ox_hi; ++ox, x_row += sw) {
                        y_row[ox] = mdy_q8_requant_apply(
                            &rq, pixel_3x3(x_row, in_w, in_h * in_w, cpg, k, offset));
                    }
                } else if (rows_in && ox >= ox_lo && ox < ox_hi) {
                    const int32_t n = sw == 1 && ox + 1 < ox_hi ? 2 : 1;
                    int32_t acc[2];
                    window3x3_dsp(s, x_g, w_o, cpg, offset, iy0, ix0, n, acc);
                    y_row[ox] = mdy_q8_requant_apply(&rq, acc[0]);
                    if (n == 2) {
                        y_row[ox + 1] = mdy_q8_requant_apply(&rq, acc[1]);
                    }
                    ox += n;
                } else {
                    y_row[ox] = mdy_q8_requant_apply(&rq, window_acc(s, p, o, x_g, w_o, oy, ox));
                    ++ox;
                }
            }
        }
    }
}
#endif

void mdy_q8_conv2d_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p, const int8_t *x,
                           const int8_t *w, int8_t *y)
{
    const int32_t out_h = s->out_h, out_w = s->out_w, k_hw = s->k_h * s->k_w;
    const int32_t cpg = s->in_c / s->groups;   /* input channels per group (1: depthwise) */
    const int32_t opg = s->out_c / s->groups;  /* output channels per group */
    int32_t o, oy, ox;

    if (is_pointwise(s)) {
        pointwise_forward(s, p, x, w, y);
        return;
    }
#if defined(__ARM_FEATURE_DSP)
    if (s->k_h == 3 && s->k_w == 3) {
        conv3x3_dsp(s, p, x, w, y);
        return;
    }
#endif
    for (o = 0; o < s->out_c; ++o) {
        const int8_t *x_g = x + (o / opg) * cpg * s->in_h * s->in_w;  /* cpg x in_h x in_w */
        const int8_t *w_o = w + o * cpg * k_hw;                       /* cpg x k_h x k_w */
        const mdy_q8_requant_t rq = mdy_q8_conv_requant(p, o);
        int8_t *y_o = y + o * out_h * out_w;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox) {
                y_o[oy * out_w + ox] = mdy_q8_requant_apply(
                    &rq, window_acc(s, p, o, x_g, w_o, oy, ox));
            }
        }
    }
}
