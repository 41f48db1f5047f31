/*
 * Pooling: max pool (with saved argmax), average pool and global average pool, forward and
 * backward. One sample, channel-major: x is c x in_h x in_w, y is c x out_h x out_w.
 *
 * Windows: output (oy, ox) covers input rows oy * stride_h - pad_top + ky, ky < k_h (columns
 * likewise). The bottom/right padding is implied by out_h/out_w. Padded cells are never a
 * maximum; for the average they count in the divisor only when count_include_pad is 1 (the
 * divisor is then always k_h * k_w: with the implied padding every window lies inside the
 * padded input).
 */
#ifndef MDY_POOL_H
#define MDY_POOL_H

#include <stdint.h>

typedef struct {
    uint16_t c, in_h, in_w, out_h, out_w;
    uint8_t k_h, k_w, stride_h, stride_w, pad_top, pad_left;
    uint8_t count_include_pad;      /* average pool: padded cells count in the divisor */
} mdy_pool_shape_t;

/* Argmax value of a window with no input cell (only padding): its y is 0, it passes no error. */
#define MDY_POOL_NO_ARGMAX 255u

/*
 * y = max over each window. argmax[i] = row-major index (ky * k_w + kx) inside the k_h x k_w
 * window of output i's maximum: the first maximum on ties, padded cells never win, a NaN wins
 * (it propagates, like PyTorch). argmax (c x out_h x out_w bytes) may be NULL (inference).
 * Requires k_h * k_w <= 255.
 */
void mdy_maxpool_forward(const mdy_pool_shape_t *s, const float *x, float *y, uint8_t *argmax);

/* dx[window i's argmax cell] += dy[i]; cells that are no window's maximum get 0.
   accumulate = 0 overwrites dx, 1 adds into it. */
void mdy_maxpool_backward(const mdy_pool_shape_t *s, const float *dy, const uint8_t *argmax,
                          float *dx, int accumulate);

/* y = mean over each window (divisor: see above). */
void mdy_avgpool_forward(const mdy_pool_shape_t *s, const float *x, float *y);

/* Every input cell of window i gets dy[i] / divisor(i). accumulate: 0 overwrite, 1 add. */
void mdy_avgpool_backward(const mdy_pool_shape_t *s, const float *dy, float *dx, int accumulate);

/* y[ch] = mean of x[ch][0 .. hw-1]; x is c x hw, y is c. */
void mdy_global_avgpool_forward(uint16_t c, uint32_t hw, const float *x, float *y);

/* dx[ch][j] = dy[ch] / hw. accumulate: 0 overwrite, 1 add. */
void mdy_global_avgpool_backward(uint16_t c, uint32_t hw, const float *dy, float *dx,
                                 int accumulate);

#endif /* MDY_POOL_H */
