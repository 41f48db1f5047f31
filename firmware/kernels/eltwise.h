/* Element-wise kernels: residual Add and Flatten (forward and backward), finiteness check. */
#ifndef MDY_ELTWISE_H
#define MDY_ELTWISE_H

#include <stdint.h>

/* y[i] = a[i] + b[i]. y may equal a or b (in place). */
void mdy_add_forward(uint32_t n, const float *a, const float *b, float *y);

/* The error of one of the Add's inputs: dx = dy (accumulate 0) or dx += dy (accumulate 1);
   called once per input that needs one. dx may equal dy when accumulate is 0. */
void mdy_add_backward(uint32_t n, const float *dy, float *dx, int accumulate);

/* y = x: the same n values read as a vector (a Flatten that cannot run in place). */
void mdy_flatten_forward(uint32_t n, const float *x, float *y);

/* dx = dy (accumulate 0) or dx += dy (accumulate 1). dx may equal dy when accumulate is 0. */
void mdy_flatten_backward(uint32_t n, const float *dy, float *dx, int accumulate);

/* 1 when every value of x[0 .. n-1] is finite (no NaN, no infinity), else 0. */
int mdy_all_finite(uint32_t n, const float *x);

#endif /* MDY_ELTWISE_H */
