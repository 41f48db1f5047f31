/*
 * Window arithmetic shared by the convolution and pooling kernels (conv.c, pool.c).
 *
 * Output pixel (oy, ox) of a k_h x k_w window with stride s and top/left padding p reads input
 * rows oy * s_h - p_top + ky, ky < k_h (columns likewise); taps outside the input are padding.
 * The kernels compute once per output pixel which taps fall inside, so padded taps are skipped
 * by loop bounds rather than by a test per multiply.
 */
#ifndef MDY_WINDOW_H
#define MDY_WINDOW_H

#include <stdint.h>

/*
 * Taps [*lo, *hi) of a k-tap window whose first tap is at input index `start` (negative in
 * the top/left padding) that land inside an input of `size` cells. *hi <= *lo when none do.
 */
static inline void mdy_window_taps(int32_t start, int32_t size, int32_t k, int32_t *lo,
                                   int32_t *hi)
{
    *lo = start < 0 ? -start : 0;
    *hi = size - start < k ? size - start : k;
}

#endif /* MDY_WINDOW_H */
