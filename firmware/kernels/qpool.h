/*
 * int8 pooling of the frozen backbone (docs/quantization.md §3), one sample, channel-major
 * (layouts and windows of pool.h). Each output is
 *   clamp(out_zero + requantize(v, multiplier, shift), act_min, act_max)
 * with the parameters of mdy_q8_rescale_t (quant.h) and v:
 *   global average pool: sum over the hw cells of (x - in_zero); the multiplier holds 1 / hw;
 *   average pool: sum over the window's input cells of (x - in_zero) (padding is real 0); the
 *     multiplier holds 1 / count, so every window must hold the same count (no padding, or
 *     count_include_pad; the compiler keeps other average pools in float);
 *   max pool: (largest x of the window's input cells) - in_zero; padding never wins, a window
 *     of padding only gives 0 (real 0, as the float kernel).
 */
#ifndef MDY_QPOOL_H
#define MDY_QPOOL_H

#include <stdint.h>

#include "pool.h"
#include "quant.h"

/* x is c x hw, y is c. */
void mdy_q8_global_avgpool_forward(uint16_t c, uint32_t hw, const mdy_q8_rescale_t *p,
                                   const int8_t *x, int8_t *y);

/* y must not overlap x (the same for the max pool). s->count_include_pad is not read: the
   multiplier holds the divisor. */
void mdy_q8_avgpool_forward(const mdy_pool_shape_t *s, const mdy_q8_rescale_t *p,
                            const int8_t *x, int8_t *y);

void mdy_q8_maxpool_forward(const mdy_pool_shape_t *s, const mdy_q8_rescale_t *p,
                            const int8_t *x, int8_t *y);

#endif /* MDY_QPOOL_H */
