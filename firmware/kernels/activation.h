/*
 * ReLU and ReLU6 with a 1-bit gradient mask: mdy_<op>_forward writes it, mdy_<op>_backward
 * propagates the error through it (the two backwards are the same masked copy).
 *
 * The mask stores, for element i, bit (i & 7) of byte i >> 3:
 *   (mask[i >> 3] >> (i & 7)) & 1  is 1 where the gradient passes:
 *   ReLU: x > 0;  ReLU6: 0 < x < 6 (strict, like PyTorch's relu / hardtanh backward).
 * A mask for n elements takes (n + 7) / 8 bytes; the forward writes every one of them (the
 * unused high bits of the last byte are 0). That is 1/32 of the memory of saving x.
 *
 * NaN propagates through the forward (like PyTorch) so that a diverging step can be detected
 * downstream; its mask bit is 0 (PyTorch would pass the gradient; such a step is discarded).
 */
#ifndef MDY_ACTIVATION_H
#define MDY_ACTIVATION_H

#include <stdint.h>

/* y = max(x, 0). y may equal x (in place). mask may be NULL (inference). */
void mdy_relu_forward(uint32_t n, const float *x, float *y, uint8_t *mask);

/* y = min(max(x, 0), 6). y may equal x (in place). mask may be NULL (inference). */
void mdy_relu6_forward(uint32_t n, const float *x, float *y, uint8_t *mask);

/* dx = dy where the mask bit (of mdy_relu_forward) is 1, else 0. accumulate = 0 overwrites dx,
   1 adds into it (masked-out elements of dx then keep their value). dx may equal dy. */
void mdy_relu_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                       int accumulate);

/* The same as mdy_relu_backward, with the mask of mdy_relu6_forward. */
void mdy_relu6_backward(uint32_t n, const float *dy, const uint8_t *mask, float *dx,
                        int accumulate);

#endif /* MDY_ACTIVATION_H */
