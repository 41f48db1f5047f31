/*
 * The forward of a regular (groups 1) 3x3 stride-2 convolution of few input channels, a
 * network's stem (e.g. 3x32x32 -> 16x16x16): blocks of 4 output channels x 4 pixels of a row in
 * registers over all input channels, internal to conv.c (its general forward calls it first).
 *
 * Each output keeps the general loop's operations and order (bias, then input channel, ky, kx;
 * padded taps skipped), so the results equal conv.c's general loops bit for bit. Returns 1
 * when it computed the whole layer, 0 touching nothing otherwise (another shape, or built with
 * MDY_CONV_WINDOW_OFF: the tests' reference build of the general loops only).
 */
#ifndef MDY_CONV_STEM_H
#define MDY_CONV_STEM_H

#include "conv.h"

/* y = b + conv(x, w), w out_c x in_c x 3 x 3; b may be NULL (no bias). */
int mdy_conv3x3_stride2_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                                const float *b, float *y);

#endif /* MDY_CONV_STEM_H */
