/*
 * int8 residual Add of the frozen backbone (docs/quantization.md §3, TFLite's scheme): both
 * inputs are brought to a common scale twice = 2 max(s_a, s_b) with MDY_Q8_ADD_LEFT_SHIFT
 * extra bits, added, and requantized to the output:
 *   a' = requantize((a - in1_zero) 2^20, in1_multiplier, in1_shift)      (M = s_a / twice)
 *   b' = requantize((b - in2_zero) 2^20, in2_multiplier, in2_shift)      (M = s_b / twice)
 *   y  = clamp(out_zero + requantize(a' + b', out_multiplier, out_shift), act_min, act_max)
 *                                                              (M = twice / (2^20 s_y))
 */
#ifndef MDY_QELTWISE_H
#define MDY_QELTWISE_H

#include <stdint.h>

#define MDY_Q8_ADD_LEFT_SHIFT 20

/* The fields of medyate_mcu/quant/lowering.py QAddParams, in its order. */
typedef struct {
    int32_t in1_zero, in2_zero, out_zero;
    int32_t in1_multiplier, in1_shift, in2_multiplier, in2_shift, out_multiplier, out_shift;
    int8_t act_min, act_max;
} mdy_q8_add_t;

/* y = a + b as above, on n values. y may equal a or b (in place). */
void mdy_q8_add_forward(uint32_t n, const mdy_q8_add_t *p, const int8_t *a, const int8_t *b,
                        int8_t *y);

#endif /* MDY_QELTWISE_H */
