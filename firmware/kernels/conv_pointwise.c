/*
 * Pointwise convolution kernels (see conv_pointwise.h): blocks of 4 x 4 results are held in
 * float registers (16 accumulators; the Cortex-M4F/M7 have 32 single-precision registers), each
 * summed in the general loops' order, so each result is bit-identical to conv.c's general code.
 * The forward takes blocks of 4 pixels x 6 channels first (24 accumulators, 10 loads per 24
 * products; gcc's pre-allocation scheduling is off there, else it spills two accumulators).
 * Tails (counts not a multiple of 4) run the same sums one row or one pixel at a time.
 */
#include "conv_pointwise.h"

#include <stddef.h>

/* Four floats that the compiler keeps in registers (one per pixel, or per output channel). */
typedef struct {
    float v0, v1, v2, v3;
} quad_t;

static inline quad_t quad_load(const float *p)
{
    quad_t q;
    q.v0 = p[0];
    q.v1 = p[1];
    q.v2 = p[2];
    q.v3 = p[3];
    return q;
}

/* Four consecutive floats in four registers: on the Cortex-M FPU one VLDM instead of four VLDRs
   (gcc does not merge them), the same loads. */
static inline quad_t quad_load4(const float *p)
{
#if defined(__arm__) && defined(__ARM_FP) && defined(__GNUC__) && !defined(__clang__)
    register float v0 __asm__("s0"), v1 __asm__("s1"), v2 __asm__("s2"), v3 __asm__("s3");
    quad_t q;
    __asm__("vldmia %4, {s0-s3}" : "=t"(v0), "=t"(v1), "=t"(v2), "=t"(v3)
            : "r"(p), "m"(*(const float (*)[4])p));
    q.v0 = v0;
    q.v1 = v1;
    q.v2 = v2;
    q.v3 = v3;
    return q;
#else
    return quad_load(p);
#endif
}

static inline quad_t quad_splat(float v)
{
    quad_t q;
    q.v0 = v;
    q.v1 = v;
    q.v2 = v;
    q.v3 = v;
    return q;
}

static inline void quad_store(float *p, quad_t q)
{
    p[0] = q.v0;
    p[1] = q.v1;
    p[2] = q.v2;
    p[3] = q.v3;
}

/* p[0], p[stride], p[2 stride], p[3 stride]: one pixel of four channels. */
static inline quad_t column_load(const float *p, int32_t stride)
{
    quad_t q;
    q.v0 = p[0];
    q.v1 = p[stride];
    q.v2 = p[2 * stride];
    q.v3 = p[3 * stride];
    return q;
}

static inline void column_store(float *p, int32_t stride, quad_t q)
{
    p[0] = q.v0;
    p[stride] = q.v1;
    p[2 * stride] = q.v2;
    p[3 * stride] = q.v3;
}

/* Four pixels of four channels (rows of stride `stride`). */
static inline void block_store(float *p, int32_t stride, quad_t a0, quad_t a1, quad_t a2,
                               quad_t a3)
{
    quad_store(p, a0);
    quad_store(p + stride, a1);
    quad_store(p + 2 * stride, a2);
    quad_store(p + 3 * stride, a3);
}

/* acc + x * w lane by lane, each product and sum rounded once. */
static inline quad_t quad_mac(quad_t acc, quad_t x, float w)
{
    acc.v0 += x.v0 * w;
    acc.v1 += x.v1 * w;
    acc.v2 += x.v2 * w;
    acc.v3 += x.v3 * w;
    return acc;
}

/* Four quads: four pixels of four channels (or four channels of four pixels). */
typedef struct {
    quad_t q0, q1, q2, q3;
} block_t;

/* b.qk += xs * wk for k = 0..3 (one input channel of a block's four channels). */
static inline block_t block_mac(block_t b, quad_t xs, float w0, float w1, float w2, float w3)
{
    b.q0 = quad_mac(b.q0, xs, w0);
    b.q1 = quad_mac(b.q1, xs, w1);
    b.q2 = quad_mac(b.q2, xs, w2);
    b.q3 = quad_mac(b.q3, xs, w3);
    return b;
}

/* Forward of four output channels (rows w[0..3] of stride cpg, biases b[0..3]). */
static void forward_block4(int32_t cpg, int32_t hw, const float *x, const float *w,
                           const float *b, float *y)
{
    const float *w0 = w, *w1 = w + cpg, *w2 = w1 + cpg, *w3 = w2 + cpg;
    const quad_t bias = b != NULL ? quad_load(b) : quad_splat(0.0f);
    int32_t p, ic;

    for (p = 0; p + 4 <= hw; p += 4) {
        block_t a;
        const float *x_p = x + p;
        a.q0 = quad_splat(bias.v0);
        a.q1 = quad_splat(bias.v1);
        a.q2 = quad_splat(bias.v2);
        a.q3 = quad_splat(bias.v3);
        for (ic = 0; ic < cpg; ++ic, x_p += hw) {
            a = block_mac(a, quad_load4(x_p), w0[ic], w1[ic], w2[ic], w3[ic]);
        }
        block_store(y + p, hw, a.q0, a.q1, a.q2, a.q3);
    }
    for (; p < hw; ++p) {  /* the last hw % 4 pixels: the four channels as one quad */
        quad_t a = bias;
        const float *x_p = x + p;
        for (ic = 0; ic < cpg; ++ic, x_p += hw) {
            a = quad_mac(a, column_load(w + ic, cpg), *x_p);  /* w[o][ic] x[ic][p]: commutes */
        }
        column_store(y + p, hw, a);
    }
}

/* Forward of six output channels (rows w[0..5] of stride cpg, biases b[0..5]): 24 accumulators,
   ten loads per 24 products instead of eight per 16. hw a multiple of 4 only. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-schedule-insns")))
#endif
static void forward_block6(int32_t cpg, int32_t hw, const float *x, const float *w,
                           const float *b, float *y)
{
    const float *w0 = w, *w1 = w + cpg, *w2 = w1 + cpg, *w3 = w2 + cpg, *w4 = w3 + cpg;
    const float *w5 = w4 + cpg;
    int32_t p, ic;

    for (p = 0; p + 4 <= hw; p += 4) {
        quad_t a0 = quad_splat(b != NULL ? b[0] : 0.0f), a1 = quad_splat(b != NULL ? b[1] : 0.0f);
        quad_t a2 = quad_splat(b != NULL ? b[2] : 0.0f), a3 = quad_splat(b != NULL ? b[3] : 0.0f);
        quad_t a4 = quad_splat(b != NULL ? b[4] : 0.0f), a5 = quad_splat(b != NULL ? b[5] : 0.0f);
        const float *x_p = x + p;
        for (ic = 0; ic < cpg; ++ic, x_p += hw) {
            const quad_t xs = quad_load4(x_p);
            a0 = quad_mac(a0, xs, w0[ic]);
            a1 = quad_mac(a1, xs, w1[ic]);
            a2 = quad_mac(a2, xs, w2[ic]);
            a3 = quad_mac(a3, xs, w3[ic]);
            a4 = quad_mac(a4, xs, w4[ic]);
            a5 = quad_mac(a5, xs, w5[ic]);
        }
        block_store(y + p, hw, a0, a1, a2, a3);
        quad_store(y + p + 4 * hw, a4);
        quad_store(y + p + 5 * hw, a5);
    }
}

/* Forward of one output channel (the last n_out % 4, and the int8-weight path's channels). */
static void forward_row(int32_t cpg, int32_t hw, const float *x, const float *w, float bias,
                        float *y)
{
    int32_t p, ic;
    for (p = 0; p + 4 <= hw; p += 4) {
        quad_t a = quad_splat(bias);
        const float *x_p = x + p;
        for (ic = 0; ic < cpg; ++ic, x_p += hw) {
            a = quad_mac(a, quad_load(x_p), w[ic]);
        }
        quad_store(y + p, a);
    }
    for (; p < hw; ++p) {
        float a = bias;
        const float *x_p = x + p;
        for (ic = 0; ic < cpg; ++ic, x_p += hw) {
            a += *x_p * w[ic];
        }
        y[p] = a;
    }
}

void mdy_pointwise_forward(int32_t n_out, int32_t cpg, int32_t hw, const float *x,
                           const float *w, const float *b, float *y)
{
    int32_t o = 0;
    if (hw % 4 == 0) {  /* blocks of six channels, then (n_out even) none, two or one of four */
        const int32_t r = n_out % 6;
        const int32_t sixes = r % 2 != 0 ? n_out - r : r == 2 ? n_out - 8 : n_out - 4 * (r / 4);
        for (; o + 6 <= sixes; o += 6) {
            forward_block6(cpg, hw, x, w + o * cpg, b != NULL ? b + o : NULL, y + o * hw);
        }
    }
    for (; o + 4 <= n_out; o += 4) {
        forward_block4(cpg, hw, x, w + o * cpg, b != NULL ? b + o : NULL, y + o * hw);
    }
    for (; o < n_out; ++o) {
        forward_row(cpg, hw, x, w + o * cpg, b != NULL ? b[o] : 0.0f, y + o * hw);
    }
}

/* Input gradient of four input channels ic..ic+3 (dx rows of stride hw): the errors of all
   n_out output channels, in order, onto the existing dx. */
static void backward_input_block4(int32_t n_out, int32_t cpg, int32_t hw, const float *dy,
                                  const float *w, float *dx)
{
    int32_t p, o;
    for (p = 0; p + 4 <= hw; p += 4) {
        quad_t a0 = quad_load(dx + p), a1 = quad_load(dx + hw + p);
        quad_t a2 = quad_load(dx + 2 * hw + p), a3 = quad_load(dx + 3 * hw + p);
        const float *dy_p = dy + p, *w_o = w;
        for (o = 0; o < n_out; ++o, dy_p += hw, w_o += cpg) {
            const quad_t ds = quad_load(dy_p);
            a0 = quad_mac(a0, ds, w_o[0]);
            a1 = quad_mac(a1, ds, w_o[1]);
            a2 = quad_mac(a2, ds, w_o[2]);
            a3 = quad_mac(a3, ds, w_o[3]);
        }
        block_store(dx + p, hw, a0, a1, a2, a3);
    }
    for (; p < hw; ++p) {  /* the last hw % 4 pixels: the four channels as one quad */
        quad_t a = column_load(dx + p, hw);
        const float *dy_p = dy + p, *w_o = w;
        for (o = 0; o < n_out; ++o, dy_p += hw, w_o += cpg) {
            a = quad_mac(a, quad_load(w_o), *dy_p);  /* w[o][ic + i] dy[o][p]: commutes */
        }
        column_store(dx + p, hw, a);
    }
}

/* Input gradient of one input channel (the last cpg % 4). */
static void backward_input_row(int32_t n_out, int32_t cpg, int32_t hw, const float *dy,
                               const float *w, float *dx)
{
    int32_t p, o;
    for (p = 0; p + 4 <= hw; p += 4) {
        quad_t a = quad_load(dx + p);
        const float *dy_p = dy + p;
        for (o = 0; o < n_out; ++o, dy_p += hw) {
            a = quad_mac(a, quad_load(dy_p), w[o * cpg]);
        }
        quad_store(dx + p, a);
    }
    for (; p < hw; ++p) {
        float a = dx[p];
        const float *dy_p = dy + p;
        for (o = 0; o < n_out; ++o, dy_p += hw) {
            a += *dy_p * w[o * cpg];
        }
        dx[p] = a;
    }
}

void mdy_pointwise_backward_input(int32_t n_out, int32_t cpg, int32_t hw, const float *dy,
                                  const float *w, float *dx)
{
    int32_t ic = 0;
    for (; ic + 4 <= cpg; ic += 4) {
        backward_input_block4(n_out, cpg, hw, dy, w + ic, dx + ic * hw);
    }
    for (; ic < cpg; ++ic) {
        backward_input_row(n_out, cpg, hw, dy, w + ic, dx + ic * hw);
    }
}

/* g + d.v0 x.v0 + d.v1 x.v1 + d.v2 x.v2 + d.v3 x.v3, summed left to right. */
static inline float dot4_onto(float g, quad_t d, quad_t x)
{
    g += d.v0 * x.v0;
    g += d.v1 * x.v1;
    g += d.v2 * x.v2;
    g += d.v3 * x.v3;
    return g;
}

/* Four pixels xs of four rows d, d + hw, d + 2 hw, d + 3 hw of dy onto g, lane by lane. */
static inline quad_t dot_rows(quad_t g, const float *d, int32_t hw, quad_t xs)
{
    g.v0 = dot4_onto(g.v0, quad_load(d), xs);
    g.v1 = dot4_onto(g.v1, quad_load(d + hw), xs);
    g.v2 = dot4_onto(g.v2, quad_load(d + 2 * hw), xs);
    g.v3 = dot4_onto(g.v3, quad_load(d + 3 * hw), xs);
    return g;
}

/* g[0..3] += sum_p dy_m[p] x[p step] over the first n - n % 4 pixels of a row (dy rows of
   stride hw), four pixels at a time, p in order; step is a constant once inlined. */
static inline quad_t weight_run4(quad_t g, const float *dy, int32_t hw, const float *x,
                                 int32_t n, int32_t step)
{
    int32_t p;
    for (p = 0; p + 4 <= n; p += 4) {
        g = dot_rows(g, dy + p, hw, column_load(x + p * step, step));
    }
    return g;
}

/* g[0..3] += sum_p dy_m[p] x[p step] over one row of n pixels (dy rows of stride hw), p in
   order: unrolled for steps 1 and 2, then pixel by pixel. */
static quad_t weight_row4(quad_t g, const float *dy, int32_t hw, const float *x, int32_t n,
                          int32_t step)
{
    const float *d0 = dy, *d1 = dy + hw, *d2 = d1 + hw, *d3 = d2 + hw;
    int32_t p = n - n % 4;
    if (step == 1) {
        g = weight_run4(g, dy, hw, x, n, 1);
    } else if (step == 2) {
        g = weight_run4(g, dy, hw, x, n, 2);
    } else {
        p = 0;
    }
    for (; p < n; ++p) {
        const float xv = x[p * step];
        g.v0 += d0[p] * xv;
        g.v1 += d1[p] * xv;
        g.v2 += d2[p] * xv;
        g.v3 += d3[p] * xv;
    }
    return g;
}

/* g += sum_p dy[p] x[p] over one row of n pixels, p in order. */
static float weight_row(float g, const float *dy, const float *x, int32_t n, int32_t step)
{
    int32_t p;
    for (p = 0; p < n; ++p) {
        g += dy[p] * x[p * step];
    }
    return g;
}

/* g[0..7] += sum_p dy_m[p] x[p] over n contiguous pixels (dy rows of stride hw), p in order:
   eight accumulators share each load of x. */
static void weight_block8(float *g, const float *dy, int32_t hw, const float *x, int32_t n)
{
    quad_t lo = quad_load(g), hi = quad_load(g + 4);
    int32_t p;
    for (p = 0; p + 4 <= n; p += 4) {
        const quad_t xs = quad_load(x + p);
        lo = dot_rows(lo, dy + p, hw, xs);
        hi = dot_rows(hi, dy + 4 * hw + p, hw, xs);
    }
    for (; p < n; ++p) {
        lo = quad_mac(lo, column_load(dy + p, hw), x[p]);  /* dy[m][p] x[p]: commutes */
        hi = quad_mac(hi, column_load(dy + 4 * hw + p, hw), x[p]);
    }
    quad_store(g, lo);
    quad_store(g + 4, hi);
}

void mdy_pointwise_backward_weight(int32_t n_out, int32_t out_h, int32_t out_w,
                                   const float *dy, const float *x, int32_t row_step,
                                   int32_t col_step, float *g)
{
    const int32_t hw = out_h * out_w;
    int32_t m = 0, oy;
    if (col_step == 1 && row_step == out_w) {  /* contiguous: the map is one row */
        out_w = hw;
        out_h = 1;
        for (; m + 8 <= n_out; m += 8) {
            weight_block8(g + m, dy + m * hw, hw, x, hw);
        }
    }
    for (; m + 4 <= n_out; m += 4) {
        quad_t acc = quad_load(g + m);
        for (oy = 0; oy < out_h; ++oy) {
            acc = weight_row4(acc, dy + m * hw + oy * out_w, hw, x + oy * row_step, out_w,
                              col_step);
        }
        quad_store(g + m, acc);
    }
    for (; m < n_out; ++m) {
        float acc = g[m];
        for (oy = 0; oy < out_h; ++oy) {
            acc = weight_row(acc, dy + m * hw + oy * out_w, x + oy * row_step, out_w, col_step);
        }
        g[m] = acc;
    }
}

void mdy_conv_pointwise_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                                const float *b, float *y)
{
    const int32_t hw = s->in_h * s->in_w, cpg = s->in_c / s->groups;
    const int32_t opg = s->out_c / s->groups;
    int32_t g;
    for (g = 0; g < s->groups; ++g) {
        mdy_pointwise_forward(opg, cpg, hw, x + g * cpg * hw, w + g * opg * cpg,
                              b != NULL ? b + g * opg : NULL, y + g * opg * hw);
    }
}

void mdy_conv_pointwise_backward_input(const mdy_conv_shape_t *s, const float *dy,
                                       const float *w, float *dx)
{
    const int32_t hw = s->in_h * s->in_w, cpg = s->in_c / s->groups;
    const int32_t opg = s->out_c / s->groups;
    int32_t g;
    for (g = 0; g < s->groups; ++g) {
        mdy_pointwise_backward_input(opg, cpg, hw, dy + g * opg * hw, w + g * opg * cpg,
                                     dx + g * cpg * hw);
    }
}

/* A 1x1 kernel without padding whose every output pixel reads inside the input. */
static int inside(const mdy_conv_shape_t *s)
{
    return s->k_h == 1 && s->k_w == 1 && s->pad_top == 0 && s->pad_left == 0
        && (s->out_h - 1) * s->stride_h < s->in_h && (s->out_w - 1) * s->stride_w < s->in_w;
}

int mdy_conv_pointwise_backward_weight(const mdy_conv_shape_t *s, const float *dy,
                                       const float *x_channel, uint16_t c, float *grad_slice)
{
    const int32_t cpg = s->in_c / s->groups, opg = s->out_c / s->groups;
    const int32_t out_hw = s->out_h * s->out_w;
    if (!inside(s)) {
        return 0;
    }
    mdy_pointwise_backward_weight(opg, s->out_h, s->out_w, dy + (c / cpg) * opg * out_hw,
                                  x_channel, s->stride_h * s->in_w, s->stride_w, grad_slice);
    return 1;
}

/* Two input channels' gradients at once, over n contiguous pixels (dy rows of stride hw), p in
   order: ga[0..3] += sum_p dy_m[p] xa[p] and gb[0..3] += sum_p dy_m[p] xb[p], each loaded
   error serving both channels. */
static void weight_block4x2(float *ga, float *gb, const float *dy, int32_t hw, const float *xa,
                            const float *xb, int32_t n)
{
    quad_t a = quad_load(ga), b = quad_load(gb);
    int32_t p;
    for (p = 0; p + 4 <= n; p += 4) {
        const quad_t xs = quad_load(xa + p), ys = quad_load(xb + p);
        quad_t d = quad_load(dy + p);
        a.v0 = dot4_onto(a.v0, d, xs);
        b.v0 = dot4_onto(b.v0, d, ys);
        d = quad_load(dy + hw + p);
        a.v1 = dot4_onto(a.v1, d, xs);
        b.v1 = dot4_onto(b.v1, d, ys);
        d = quad_load(dy + 2 * hw + p);
        a.v2 = dot4_onto(a.v2, d, xs);
        b.v2 = dot4_onto(b.v2, d, ys);
        d = quad_load(dy + 3 * hw + p);
        a.v3 = dot4_onto(a.v3, d, xs);
        b.v3 = dot4_onto(b.v3, d, ys);
    }
    for (; p < n; ++p) {
        const quad_t d = column_load(dy + p, hw);
        a = quad_mac(a, d, xa[p]);  /* dy[m][p] x[p]: commutes */
        b = quad_mac(b, d, xb[p]);
    }
    quad_store(ga, a);
    quad_store(gb, b);
}

/* Two selected channels of one group, contiguous maps of hw pixels: slot gradients ga, gb
   (n_out each) from the group's errors dy (n_out x hw) and input maps xa, xb. */
static void weight_pair(int32_t n_out, int32_t hw, const float *dy, const float *xa,
                        const float *xb, float *ga, float *gb)
{
    int32_t m = 0;
    for (; m + 4 <= n_out; m += 4) {
        weight_block4x2(ga + m, gb + m, dy + m * hw, hw, xa, xb, hw);
    }
    if (m < n_out) {
        mdy_pointwise_backward_weight(n_out - m, 1, hw, dy + m * hw, xa, hw, 1, ga + m);
        mdy_pointwise_backward_weight(n_out - m, 1, hw, dy + m * hw, xb, hw, 1, gb + m);
    }
}

int mdy_conv_pointwise_backward_weights(const mdy_conv_shape_t *s, const float *dy, uint32_t n,
                                        const uint16_t *channels, uint32_t first_channel,
                                        float *pool, const uint32_t *offsets,
                                        uint32_t x_offset)
{
    const int32_t cpg = s->in_c / s->groups, opg = s->out_c / s->groups;
    const int32_t out_hw = s->out_h * s->out_w;
    const int32_t row_step = s->stride_h * s->in_w, col_step = s->stride_w;
    const int contiguous = col_step == 1 && row_step == s->out_w;
    uint32_t j;
    if (!inside(s)) {
        return 0;
    }
    for (j = 0; j < n; ++j) {
        const int32_t c = (int32_t)(channels[j] - first_channel);
        if (contiguous && j + 1 < n
            && (int32_t)(channels[j + 1] - first_channel) / cpg == c / cpg) {
            float *slot = pool + offsets[j], *next = pool + offsets[j + 1];
            weight_pair(opg, out_hw, dy + (c / cpg) * opg * out_hw, slot + x_offset,
                        next + x_offset, slot, next);
            ++j;
            continue;
        }
        float *slot = pool + offsets[j];
        mdy_pointwise_backward_weight(opg, s->out_h, s->out_w, dy + (c / cpg) * opg * out_hw,
                                      slot + x_offset, row_step, col_step, slot);
    }
    return 1;
}
