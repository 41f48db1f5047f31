/* int8 residual Add (see qeltwise.h). */
#include "qeltwise.h"

#include "quant.h"

/* One input on the common scale: |q - zero| <= 255, so with 20 extra bits it stays below
   2^28, and a multiplier below 1/2 keeps the sum of two such values inside int32. */
static int32_t common_scale(int8_t q, int32_t zero, int32_t multiplier, int32_t shift)
{
    return mdy_requantize((q - zero) * (1 << MDY_Q8_ADD_LEFT_SHIFT), multiplier, shift);
}

void mdy_q8_add_forward(uint32_t n, const mdy_q8_add_t *p, const int8_t *a, const int8_t *b,
                        int8_t *y)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        const int32_t sum = common_scale(a[i], p->in1_zero, p->in1_multiplier, p->in1_shift)
                          + common_scale(b[i], p->in2_zero, p->in2_multiplier, p->in2_shift);
        y[i] = mdy_q8_output(p->out_zero, mdy_requantize(sum, p->out_multiplier, p->out_shift),
                             p->act_min, p->act_max);
    }
}
