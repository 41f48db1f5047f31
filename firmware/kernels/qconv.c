/*
 * int8 convolution (see qconv.h). Direct loops, no scratch memory; padded taps are skipped by
 * loop bounds (window.h). Integer sums are exact, so any summation order gives the same bits.
 */
#include "qconv.h"

#include <stddef.h>

#include "quant.h"
#include "window.h"

/* 1x1, stride 1, no padding: every tap is in bounds, so the zero point's share of each
   output channel, in_zero * sum_ic w[o][ic], is folded into its bias once. */
static int is_pointwise(const mdy_conv_shape_t *s)
{
    return s->k_h == 1 && s->k_w == 1 && s->stride_h == 1 && s->stride_w == 1
        && s->pad_top == 0 && s->pad_left == 0 && s->out_h == s->in_h && s->out_w == s->in_w;
}

static void pointwise_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p,
                              const int8_t *x, const int8_t *w, int8_t *y)
{
    const int32_t hw = s->in_h * s->in_w, cpg = s->in_c / s->groups;
    const int32_t opg = s->out_c / s->groups;
    int32_t o, ic, i;
    for (o = 0; o < s->out_c; ++o) {
        const int8_t *x_g = x + (o / opg) * cpg * hw;  /* the group's inputs: cpg x hw */
        const int8_t *w_o = w + o * cpg;
        int32_t offset = p->bias != NULL ? p->bias[o] : 0;
        int8_t *y_o = y + o * hw;
        for (ic = 0; ic < cpg; ++ic) {
            offset -= p->in_zero * w_o[ic];
        }
        for (i = 0; i < hw; ++i) {
            int32_t acc = offset;
            for (ic = 0; ic < cpg; ++ic) {
                acc += x_g[ic * hw + i] * w_o[ic];
            }
            y_o[i] = mdy_q8_requantized(acc, p->multiplier[o], p->shift[o], p->out_zero,
                                        p->act_min, p->act_max);
        }
    }
}

void mdy_q8_conv2d_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p, const int8_t *x,
                           const int8_t *w, int8_t *y)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t k_h = s->k_h, k_w = s->k_w, in_hw = in_h * in_w, k_hw = k_h * k_w;
    const int32_t cpg = s->in_c / s->groups;   /* input channels per group (1: depthwise) */
    const int32_t opg = s->out_c / s->groups;  /* output channels per group */
    const int32_t z = p->in_zero;
    int32_t o, oy, ox, ic, ky, kx;

    if (is_pointwise(s)) {
        pointwise_forward(s, p, x, w, y);
        return;
    }
    for (o = 0; o < s->out_c; ++o) {
        const int8_t *x_g = x + (o / opg) * cpg * in_hw;  /* cpg x in_h x in_w */
        const int8_t *w_o = w + o * cpg * k_hw;           /* cpg x k_h x k_w */
        const int32_t bias = p->bias != NULL ? p->bias[o] : 0;
        int8_t *y_o = y + o * out_h * out_w;

        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            int32_t ky_lo, ky_hi;
            mdy_window_taps(iy0, in_h, k_h, &ky_lo, &ky_hi);

            for (ox = 0; ox < out_w; ++ox) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                int32_t kx_lo, kx_hi, acc = bias;
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
                y_o[oy * out_w + ox] = mdy_q8_requantized(acc, p->multiplier[o], p->shift[o],
                                                          p->out_zero, p->act_min, p->act_max);
            }
        }
    }
}
