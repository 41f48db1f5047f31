/* Fully connected layer kernels (see linear.h): register-blocked, each sum in the order of the
   plain loops (forward: bias, then i ascending; input error: o ascending onto dx; weight
   gradient: one += per element), every product and sum rounded once (-ffp-contract=off), so the
   results are those of the plain loops bit for bit. The *_w8 ones dequantize one row at a time
   into scratch and run the single-row loops on it. */
#include "linear.h"

#include <stddef.h>

#include "quant.h"
#include "sgd.h"

/* acc + w[0] x[0] + ... + w[n-1] x[n-1], summed left to right (one output of the forward). */
static float dot(uint32_t n, const float *w, const float *x, float acc)
{
    uint32_t i = 0u;

    for (; i + 4u <= n; i += 4u) {
        acc += w[i] * x[i];
        acc += w[i + 1u] * x[i + 1u];
        acc += w[i + 2u] * x[i + 2u];
        acc += w[i + 3u] * x[i + 3u];
    }
    for (; i < n; ++i) {
        acc += w[i] * x[i];
    }
    return acc;
}

/* acc[i] += d * w[i] for i < n (one row's terms of the input error). */
static void axpy(uint32_t n, float d, const float *w, float *acc)
{
    uint32_t i = 0u;

    for (; i + 4u <= n; i += 4u) {
        acc[i] += d * w[i];
        acc[i + 1u] += d * w[i + 1u];
        acc[i + 2u] += d * w[i + 2u];
        acc[i + 3u] += d * w[i + 3u];
    }
    for (; i < n; ++i) {
        acc[i] += d * w[i];
    }
}

void mdy_linear_forward(uint16_t in_f, uint16_t out_f, const float *x, const float *w,
                        const float *b, float *y)
{
    uint32_t o = 0u, i;

    /* Four outputs at a time: one load of x[i] for four accumulators. */
    for (; o + 4u <= out_f; o += 4u) {
        const float *w0 = w + o * in_f, *w1 = w0 + in_f, *w2 = w1 + in_f, *w3 = w2 + in_f;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
        if (b != NULL) {
            a0 = b[o];
            a1 = b[o + 1u];
            a2 = b[o + 2u];
            a3 = b[o + 3u];
        }
        for (i = 0u; i < in_f; ++i) {
            const float v = x[i];
            a0 += w0[i] * v;
            a1 += w1[i] * v;
            a2 += w2[i] * v;
            a3 += w3[i] * v;
        }
        y[o] = a0;
        y[o + 1u] = a1;
        y[o + 2u] = a2;
        y[o + 3u] = a3;
    }
    for (; o < out_f; ++o) {
        y[o] = dot(in_f, w + o * in_f, x, b != NULL ? b[o] : 0.0f);
    }
}

void mdy_linear_forward_w8(uint16_t in_f, uint16_t out_f, const float *x, const int8_t *w,
                           const float *w_scale, const float *b, float *y, float *scratch)
{
    uint32_t o;

    for (o = 0u; o < out_f; ++o) {
        mdy_dequantize(in_f, w + o * in_f, w_scale[o], 0, scratch);
        y[o] = dot(in_f, scratch, x, b != NULL ? b[o] : 0.0f);
    }
}

void mdy_linear_backward_input(uint16_t in_f, uint16_t out_f, const float *dy, const float *w,
                               float *dx, int accumulate)
{
    uint32_t i = 0u, o;

    /* Eight inputs at a time, their sums in registers: dx[i] (or 0) + dy[0] w[0][i] + ...
       + dy[out_f-1] w[out_f-1][i], o ascending as in a row-by-row pass. */
    for (; i + 8u <= in_f; i += 8u) {
        const float *wc = w + i;
        float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f, a4 = 0.0f, a5 = 0.0f, a6 = 0.0f,
              a7 = 0.0f;
        if (accumulate) {
            a0 = dx[i];
            a1 = dx[i + 1u];
            a2 = dx[i + 2u];
            a3 = dx[i + 3u];
            a4 = dx[i + 4u];
            a5 = dx[i + 5u];
            a6 = dx[i + 6u];
            a7 = dx[i + 7u];
        }
        for (o = 0u; o < out_f; ++o, wc += in_f) {
            const float d = dy[o];
            a0 += d * wc[0];
            a1 += d * wc[1];
            a2 += d * wc[2];
            a3 += d * wc[3];
            a4 += d * wc[4];
            a5 += d * wc[5];
            a6 += d * wc[6];
            a7 += d * wc[7];
        }
        dx[i] = a0;
        dx[i + 1u] = a1;
        dx[i + 2u] = a2;
        dx[i + 3u] = a3;
        dx[i + 4u] = a4;
        dx[i + 5u] = a5;
        dx[i + 6u] = a6;
        dx[i + 7u] = a7;
    }
    if (i < in_f) {  /* the last in_f % 8 inputs, row by row */
        if (!accumulate) {
            mdy_zero(in_f - i, dx + i);
        }
        for (o = 0u; o < out_f; ++o) {
            axpy(in_f - i, dy[o], w + o * in_f + i, dx + i);
        }
    }
}

void mdy_linear_backward_input_w8(uint16_t in_f, uint16_t out_f, const float *dy,
                                  const int8_t *w, const float *w_scale, float *dx,
                                  int accumulate, float *scratch)
{
    uint32_t o;

    if (!accumulate) {
        mdy_zero(in_f, dx);
    }
    for (o = 0u; o < out_f; ++o) {  /* row by row: dx += dy[o] * w[o][:] */
        mdy_dequantize(in_f, w + o * in_f, w_scale[o], 0, scratch);
        axpy(in_f, dy[o], scratch, dx);
    }
}

void mdy_linear_backward_weight(uint16_t in_f, uint16_t out_f, const float *dy, const float *x,
                                float *gw, float *gb)
{
    uint32_t o = 0u, i;

    /* Four rows at a time: one load of x[i] for four gradient cells. */
    for (; o + 4u <= out_f; o += 4u) {
        float *g0 = gw + o * in_f, *g1 = g0 + in_f, *g2 = g1 + in_f, *g3 = g2 + in_f;
        const float d0 = dy[o], d1 = dy[o + 1u], d2 = dy[o + 2u], d3 = dy[o + 3u];
        for (i = 0u; i < in_f; ++i) {
            const float v = x[i];
            g0[i] += d0 * v;
            g1[i] += d1 * v;
            g2[i] += d2 * v;
            g3[i] += d3 * v;
        }
    }
    for (; o < out_f; ++o) {
        axpy(in_f, dy[o], x, gw + o * in_f);
    }
    if (gb != NULL) {
        for (o = 0u; o < out_f; ++o) {
            gb[o] += dy[o];
        }
    }
}
