/* Pooling kernels (see pool.h). Direct loops, no scratch memory. */
#include "pool.h"

#include <math.h>
#include <stddef.h>

#include "sgd.h"
#include "window.h"

void mdy_maxpool_forward(const mdy_pool_shape_t *s, const float *x, float *y, uint8_t *argmax)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t k_w = s->k_w;
    int32_t ch, oy, ox, ky, kx, i = 0;  /* i: output index, ch x out_h x out_w */

    for (ch = 0; ch < s->c; ++ch) {
        const float *x_c = x + ch * in_h * in_w;  /* in_h x in_w */
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            int32_t ky_lo, ky_hi;
            mdy_window_taps(iy0, in_h, s->k_h, &ky_lo, &ky_hi);

            for (ox = 0; ox < out_w; ++ox, ++i) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                int32_t kx_lo, kx_hi, best_k = (int32_t)MDY_POOL_NO_ARGMAX;
                float best = 0.0f;
                mdy_window_taps(ix0, in_w, k_w, &kx_lo, &kx_hi);

                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const float *x_row = x_c + (iy0 + ky) * in_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        const float v = x_row[ix0 + kx];
                        /* strict '>': the first maximum wins ties; a NaN always wins */
                        if (best_k == (int32_t)MDY_POOL_NO_ARGMAX || v > best || isnan(v)) {
                            best = v;
                            best_k = ky * k_w + kx;
                        }
                    }
                }
                y[i] = best;
                if (argmax != NULL) {
                    argmax[i] = (uint8_t)best_k;
                }
            }
        }
    }
}

void mdy_maxpool_backward(const mdy_pool_shape_t *s, const float *dy, const uint8_t *argmax,
                          float *dx, int accumulate)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    const int32_t k_w = s->k_w;
    int32_t ch, oy, ox, i = 0;

    if (!accumulate) {
        mdy_zero((uint32_t)s->c * (uint32_t)(in_h * in_w), dx);
    }
    for (ch = 0; ch < s->c; ++ch) {
        float *dx_c = dx + ch * in_h * in_w;
        for (oy = 0; oy < out_h; ++oy) {
            for (ox = 0; ox < out_w; ++ox, ++i) {
                const int32_t k = argmax[i];
                if (k != (int32_t)MDY_POOL_NO_ARGMAX) {
                    const int32_t iy = oy * s->stride_h - s->pad_top + k / k_w;
                    const int32_t ix = ox * s->stride_w - s->pad_left + k % k_w;
                    dx_c[iy * in_w + ix] += dy[i];
                }
            }
        }
    }
}

/*
 * Divisor of an average-pool window whose taps [ky_lo, ky_hi) x [kx_lo, kx_hi) are inside the
 * input: k_h * k_w when padding counts, else the number of input cells. 0 for a window with no
 * input cell when padding does not count: its mean is 0 and it passes no error.
 */
static int32_t avg_divisor(const mdy_pool_shape_t *s, int32_t ky_lo, int32_t ky_hi,
                           int32_t kx_lo, int32_t kx_hi)
{
    if (s->count_include_pad) {
        return s->k_h * s->k_w;
    }
    return ky_hi > ky_lo && kx_hi > kx_lo ? (ky_hi - ky_lo) * (kx_hi - kx_lo) : 0;
}

void mdy_avgpool_forward(const mdy_pool_shape_t *s, const float *x, float *y)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    int32_t ch, oy, ox, ky, kx, i = 0;  /* i: output index, ch x out_h x out_w */

    for (ch = 0; ch < s->c; ++ch) {
        const float *x_c = x + ch * in_h * in_w;  /* in_h x in_w */
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            int32_t ky_lo, ky_hi;
            mdy_window_taps(iy0, in_h, s->k_h, &ky_lo, &ky_hi);

            for (ox = 0; ox < out_w; ++ox, ++i) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                int32_t kx_lo, kx_hi, divisor;
                float sum = 0.0f;
                mdy_window_taps(ix0, in_w, s->k_w, &kx_lo, &kx_hi);
                divisor = avg_divisor(s, ky_lo, ky_hi, kx_lo, kx_hi);

                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    const float *x_row = x_c + (iy0 + ky) * in_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        sum += x_row[ix0 + kx];
                    }
                }
                y[i] = divisor > 0 ? sum / (float)divisor : 0.0f;
            }
        }
    }
}

void mdy_avgpool_backward(const mdy_pool_shape_t *s, const float *dy, float *dx, int accumulate)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
    int32_t ch, oy, ox, ky, kx, i = 0;

    if (!accumulate) {
        mdy_zero((uint32_t)s->c * (uint32_t)(in_h * in_w), dx);
    }
    for (ch = 0; ch < s->c; ++ch) {
        float *dx_c = dx + ch * in_h * in_w;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t iy0 = oy * s->stride_h - s->pad_top;
            int32_t ky_lo, ky_hi;
            mdy_window_taps(iy0, in_h, s->k_h, &ky_lo, &ky_hi);

            for (ox = 0; ox < out_w; ++ox, ++i) {
                const int32_t ix0 = ox * s->stride_w - s->pad_left;
                int32_t kx_lo, kx_hi, divisor;
                float d;
                mdy_window_taps(ix0, in_w, s->k_w, &kx_lo, &kx_hi);
                divisor = avg_divisor(s, ky_lo, ky_hi, kx_lo, kx_hi);
                if (divisor == 0) {
                    continue;
                }
                d = dy[i] / (float)divisor;
                for (ky = ky_lo; ky < ky_hi; ++ky) {
                    float *dx_row = dx_c + (iy0 + ky) * in_w;
                    for (kx = kx_lo; kx < kx_hi; ++kx) {
                        dx_row[ix0 + kx] += d;
                    }
                }
            }
        }
    }
}

void mdy_global_avgpool_forward(uint16_t c, uint32_t hw, const float *x, float *y)
{
    const float divisor = (float)hw;
    uint32_t ch, j;

    for (ch = 0; ch < c; ++ch) {
        const float *x_c = x + ch * hw;
        float sum = 0.0f;
        for (j = 0; j < hw; ++j) {
            sum += x_c[j];
        }
        y[ch] = sum / divisor;
    }
}

void mdy_global_avgpool_backward(uint16_t c, uint32_t hw, const float *dy, float *dx,
                                 int accumulate)
{
    const float divisor = (float)hw;
    uint32_t ch, j;

    for (ch = 0; ch < c; ++ch) {
        const float d = dy[ch] / divisor;
        float *dx_c = dx + ch * hw;
        if (accumulate) {
            for (j = 0; j < hw; ++j) {
                dx_c[j] += d;
            }
        } else {
            for (j = 0; j < hw; ++j) {
                dx_c[j] = d;
            }
        }
    }
}
