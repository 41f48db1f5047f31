/* Element-wise kernels: residual Add, error copy/accumulate, finiteness check. */
#ifndef MDY_ELTWISE_H
#define MDY_ELTWISE_H

#include <stdint.h>

/* y[i] = a[i] + b[i]. y may equal a or b (in place). Its backward is mdy_copy_or_accumulate
   of dy into the error of each input. */
void mdy_add_forward(uint32_t n, const float *a, const float *b, float *y);

/* dst = src (accumulate 0) or dst += src (accumulate 1); used for an Add's error to each
   input and for Flatten. dst may equal src when accumulate is 0. */
void mdy_copy_or_accumulate(uint32_t n, const float *src, float *dst, int accumulate);

/* 1 when every value of x[0 .. n-1] is finite (no NaN, no infinity), else 0. */
int mdy_all_finite(uint32_t n, const float *x);

#endif /* MDY_ELTWISE_H */
