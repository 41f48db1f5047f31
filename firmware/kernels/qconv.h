/*
 * int8 2-D convolution of the frozen backbone (docs/quantization.md §3): regular, pointwise,
 * depthwise and grouped, any stride and padding of mdy_conv_shape_t (conv.h, whose layouts
 * and window arithmetic it shares), int32 accumulation, requantization per output channel.
 *
 *   acc[o] = bias[o] + sum over the in-bounds taps of (x - in_zero) * w   (padding is real 0)
 *   y[o]   = clamp(out_zero + requantize(acc[o], multiplier[o], shift[o]), act_min, act_max)
 *
 * x: in_c x in_h x in_w int8; w: out_c x (in_c / groups) x k_h x k_w int8 (symmetric, in
 * [-127, 127]); y: out_c x out_h x out_w int8. The compiler checks that no accumulator leaves
 * int32: |bias| + 255 * 127 * (in_c / groups) * k_h * k_w < 2^31.
 */
#ifndef MDY_QCONV_H
#define MDY_QCONV_H

#include <stdint.h>

#include "conv.h"
#include "quant.h"

/* The fields of medyate_mcu/quant/lowering.py QConvParams, in its order. */
typedef struct {
    const int32_t *bias;        /* out_c (NULL: no bias) */
    const int32_t *multiplier;  /* out_c, Q31 in [2^30, 2^31) or 0 */
    const int8_t *shift;        /* out_c, in [-31, 30] */
    int32_t in_zero, out_zero;
    int8_t act_min, act_max;    /* -128/127, or a fused ReLU/ReLU6's range */
} mdy_q8_conv_t;

/* Output channel o's requantization (quant.h), prepared once per channel. */
static inline mdy_q8_requant_t mdy_q8_conv_requant(const mdy_q8_conv_t *p, int32_t o)
{
    return mdy_q8_requant(p->multiplier[o], p->shift[o], p->out_zero, p->act_min, p->act_max);
}

/* y = the int8 convolution above. y must not overlap x. */
void mdy_q8_conv2d_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p, const int8_t *x,
                           const int8_t *w, int8_t *y);

#endif /* MDY_QCONV_H */
