/* int8 pooling kernels (see qpool.h). Direct loops, no scratch memory. */
#include "qpool.h"

#include "window.h"

static int8_t rescaled(const mdy_q8_rescale_t *p, int32_t v)
{
    return mdy_q8_output(p->out_zero, mdy_requantize(v, p->multiplier, p->shift), p->act_min,
                         p->act_max);
}

void mdy_q8_global_avgpool_forward(uint16_t c, uint32_t hw, const mdy_q8_rescale_t *p,
                                   const int8_t *x, int8_t *y)
{
    uint32_t ch, j;
    for (ch = 0; ch < c; ++ch) {
        const int8_t *x_c = x + ch * hw;
        int32_t sum = 0;
        for (j = 0; j < hw; ++j) {
            sum += x_c[j] - p->in_zero;
        }
        y[ch] = rescaled(p, sum);
    }
}

/* The window walk both pools share: v = the window's sum of (x - in_zero), or with take_max
   its largest x - in_zero (0 for a window of padding only). */
static void pool_forward(const mdy_pool_shape_t *s, const mdy_q8_rescale_t *p, int take_max,
                         const int8_t *x, int8_t *y)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    int32_t ch, oy, ox, ky, kx, i = 0;  /* i: output index, ch x out_h x out_w */

    for (ch = 0; ch < s->c; ++ch) {
        const int8_t *x_c = x + ch * in_h * in_w;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            int32_t ky_lo, ky_hi;
            mdy_window_taps(iy0, in_h, s->k_h, &ky_lo, &ky_hi);

            for (ox = 0; ox < out_w; ++ox, ++i) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                int32_t kx_lo, kx_hi, sum = 0, best = -129;
                mdy_window_taps(ix0, in_w, s->k_w, &kx_lo, &kx_hi);

                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const int8_t *x_row = x_c + (iy0 + ky) * in_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        const int32_t v = x_row[ix0 + kx];
                        sum += v - p->in_zero;
                        best = v > best ? v : best;
                    }
                }
                if (take_max) {
                    sum = best == -129 ? 0 : best - p->in_zero;
                }
                y[i] = rescaled(p, sum);
            }
        }
    }
}

void mdy_q8_avgpool_forward(const mdy_pool_shape_t *s, const mdy_q8_rescale_t *p,
                            const int8_t *x, int8_t *y)
{
    pool_forward(s, p, 0, x, y);
}

void mdy_q8_maxpool_forward(const mdy_pool_shape_t *s, const mdy_q8_rescale_t *p,
                            const int8_t *x, int8_t *y)
{
    pool_forward(s, p, 1, x, y);
}
