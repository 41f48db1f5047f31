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
   per pixel and pair), an odd last channel by SMLABB/SMLATB. */
static void pointwise_quad(const int8_t *x, int32_t hw, int32_t cpg, const int8_t *w_o,
                           int32_t offset, int32_t acc[4])
{
    int32_t a0 = offset, a1 = offset, a2 = offset, a3 = offset, ic;
    for (ic = 0; ic + 2 <= cpg; ic += 2) {
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
            y_o[i] = mdy_q8_requant_apply(&rq, acc[0]);
            y_o[i + 1] = mdy_q8_requant_apply(&rq, acc[1]);
            y_o[i + 2] = mdy_q8_requant_apply(&rq, acc[2]);
            y_o[i + 3] = mdy_q8_requant_apply(&rq, acc[3]);
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

static void conv3x3_dsp(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p, const int8_t *x,
                        const int8_t *w, int8_t *y)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t cpg = s->in_c / s->groups, opg = s->out_c / s->groups;
    int32_t o, oy, ox;
    for (o = 0; o < s->out_c; ++o) {
        const int8_t *x_g = x + (o / opg) * cpg * in_h * in_w;
        const int8_t *w_o = w + o * cpg * 9;
        const int32_t offset = folded_offset(p, o, w_o, cpg * 9);
        const mdy_q8_requant_t rq = mdy_q8_conv_requant(p, o);
        int8_t *y_o = y + o * out_h * out_w;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            const int rows_in = iy0 >= 0 && iy0 + 3 <= in_h;
            for (ox = 0; ox < out_w;) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                if (rows_in && ix0 >= 0 && ix0 + 4 <= in_w) {
                    const int32_t n = s->stride_w == 1 && ox + 1 < out_w ? 2 : 1;
                    int32_t acc[2];
                    window3x3_dsp(s, x_g, w_o, cpg, offset, iy0, ix0, n, acc);
                    y_o[oy * out_w + ox] = mdy_q8_requant_apply(&rq, acc[0]);
                    if (n == 2) {
                        y_o[oy * out_w + ox + 1] = mdy_q8_requant_apply(&rq, acc[1]);
                    }
                    ox += n;
                } else {
                    y_o[oy * out_w + ox] = mdy_q8_requant_apply(
                        &rq, window_acc(s, p, o, x_g, w_o, oy, ox));
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
