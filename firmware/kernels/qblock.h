/*
 * int8 kernels that keep the frozen prefix's RAM peak low (docs/quantization.md §3, §8):
 *
 * - an inverted-residual block (1x1 expand -> k x k depthwise -> 1x1 project, MobileNetV2)
 *   computed one hidden channel at a time, so the hidden tensors never exist whole;
 * - a depthwise convolution whose output overwrites its input.
 *
 * Both compute exactly what mdy_q8_conv2d_forward (qconv.h) computes layer by layer, bit for
 * bit: they call it on one channel at a time, and the projection's integer sums are exact in
 * any order.
 */
#ifndef MDY_QBLOCK_H
#define MDY_QBLOCK_H

#include <stdint.h>

#include "conv.h"
#include "qconv.h"

/*
 * One inverted-residual block, three int8 convs as lowering gives them (the expand's and the
 * depthwise's params carry their fused ReLU6's out_zero/act_min/act_max):
 *   expand    : 1x1, stride 1, no padding, groups 1, in_c -> hidden (NULL: no expansion, the
 *               block input is the depthwise input and in_c = hidden);
 *   depthwise : k x k, any stride and padding, in_c = out_c = groups = hidden;
 *   project   : 1x1, stride 1, no padding, groups 1, hidden -> out_c.
 * Each conv's in_zero is its producer's out_zero (the shared tensor's zero point).
 */
typedef struct {
    const mdy_conv_shape_t *expand;     /* 1x1 conv in_c -> hidden; NULL: no expansion */
    const mdy_q8_conv_t *expand_q;
    const int8_t *expand_w;             /* hidden x in_c */
    const mdy_conv_shape_t *depthwise;  /* k x k depthwise, hidden channels, any stride/pad */
    const mdy_q8_conv_t *depthwise_q;
    const int8_t *depthwise_w;          /* hidden x 1 x k_h x k_w */
    const mdy_conv_shape_t *project;    /* 1x1 conv hidden -> out_c */
    const mdy_q8_conv_t *project_q;
    const int8_t *project_w;            /* out_c x hidden */
} mdy_q8_block_t;

/*
 * y (project out_c x out_h x out_w) = project(depthwise(expand(x))), bit-identical to the
 * three mdy_q8_conv2d_forward calls. For each hidden channel e: expand channel e into scratch,
 * depthwise channel e into scratch, then acc[o][p] += (d[p] - project in_zero) * w[o][e];
 * finally y = clamp(out_zero + requantize(acc)).
 * scratch: mdy_q8_block_scratch_bytes(b) bytes (the expand's out_h * out_w, 0 without
 * expansion, + the depthwise's out_h * out_w); acc: mdy_q8_block_acc_words(b) int32 (project
 * out_c * out_h * out_w). y must not overlap x or scratch; it may start at acc
 * (y == (int8_t *)acc, saving its bytes: y[j] is written after acc[j] is read and lands in
 * acc[j / 4]) but must not overlap acc otherwise.
 */
void mdy_q8_block_forward(const mdy_q8_block_t *b, const int8_t *x, int8_t *y,
                          int8_t *scratch, int32_t *acc);

/* Bytes of scratch mdy_q8_block_forward needs. */
uint32_t mdy_q8_block_scratch_bytes(const mdy_q8_block_t *b);

/* int32 words of acc mdy_q8_block_forward needs. */
uint32_t mdy_q8_block_acc_words(const mdy_q8_block_t *b);

/*
 * The int8 depthwise conv s (in_c = out_c = groups, any kernel, stride and padding) of xy,
 * written over xy: channel by channel in increasing order, input channel c (in_h * in_w bytes)
 * is copied to scratch and output channel c computed from it into xy + c * out_h * out_w.
 * Requires out_h * out_w <= in_h * in_w: output channel c then lies within the first
 * (c + 1) * in_h * in_w bytes, i.e. over input channels <= c, which are consumed (copied)
 * already; channels > c are untouched until their turn. scratch: in_h * in_w bytes, not
 * overlapping xy. Bit-identical to mdy_q8_conv2d_forward out of place.
 */
void mdy_q8_depthwise_inplace_forward(const mdy_conv_shape_t *s, const mdy_q8_conv_t *p,
                                      const int8_t *w, int8_t *xy, int8_t *scratch);

#endif /* MDY_QBLOCK_H */
