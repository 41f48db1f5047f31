/*
 * Kernel benchmark firmware (benchmarks/kernel_benchmark.py builds and runs it under QEMU
 * -icount, where the SysTick cycle counter counts instructions). For every conv shape of the
 * generated bench_cases.h: forward, input gradient, and the weight gradient of every input channel
 * (one mdy_conv2d_backward_weight_channels call, as the engine makes it per layer); then the three
 * kernels of each linear layer of bench_linears. Prints one line per measurement over semihosting:
 *   <kind> <case> <kernel> <cycles>
 * with the counter's own cost (two reads back to back) subtracted.
 */
#include <stdint.h>
#include <stdio.h>

#include "bench_cases.h"
#include "conv.h"
#include "cycles.h"
#include "linear.h"
#include "semihosting.h"

/* Inputs and outputs; an input gradient writes over x, dy is y (no argument overlaps another). */
static float x[BENCH_X_FLOATS];
static float y[BENCH_Y_FLOATS];
static float w[BENCH_W_FLOATS];
static float b[BENCH_B_FLOATS];
static float grad[BENCH_G_FLOATS];
static float pool[BENCH_POOL_FLOATS];         /* each channel's slot: gradient, input map */
static uint16_t channels[BENCH_CHANNELS];
static uint32_t offsets[BENCH_CHANNELS];
static char line[96];
static uint64_t overhead;

/* Deterministic values in [-1, 1) (a 32-bit LCG), so that no kernel sees zeros or infinities. */
static void fill(float *v, uint32_t n, uint32_t seed)
{
    uint32_t i, s = seed;
    for (i = 0; i < n; ++i) {
        s = s * 1664525u + 1013904223u;
        v[i] = (float)(int32_t)(s >> 8) / 8388608.0f - 1.0f;
    }
}

static void report(const char *kind, uint32_t index, const char *kernel, uint64_t spent)
{
    snprintf(line, sizeof line, "%s %lu %s %lu\n", kind, (unsigned long)index, kernel,
             (unsigned long)(spent - overhead));
    mdy_semi_write0(line);
}

static void conv_case(uint32_t index, const mdy_conv_shape_t *s)
{
    const uint32_t g_units = (uint32_t)(s->out_c / s->groups) * s->k_h * s->k_w;
    uint64_t start;
    uint32_t i;
    uint16_t c;
    fill(x, BENCH_X_FLOATS, 1u);
    fill(w, BENCH_W_FLOATS, 2u);
    fill(b, BENCH_B_FLOATS, 3u);
    start = mdy_cycles_now();
    mdy_conv2d_forward(s, x, w, b, y);
    report("conv", index, "forward", mdy_cycles_now() - start);
    fill(y, BENCH_Y_FLOATS, 4u);
    start = mdy_cycles_now();
    mdy_conv2d_backward_input(s, y, w, x, 0);
    report("conv", index, "input_gradient", mdy_cycles_now() - start);
    fill(pool, BENCH_POOL_FLOATS, 5u);
    for (c = 0; c < s->in_c; ++c) {
        channels[c] = c;
        offsets[c] = (uint32_t)c * (g_units + (uint32_t)s->in_h * s->in_w);
        for (i = 0; i < g_units; ++i) {
            pool[offsets[c] + i] = 0.0f;  /* the engine's slots start at +0 */
        }
    }
    start = mdy_cycles_now();
    mdy_conv2d_backward_weight_channels(s, y, s->in_c, channels, 0u, pool, offsets, g_units);
    report("conv", index, "weight_gradient", mdy_cycles_now() - start);
}

static void linear_case(uint32_t index, uint16_t in_f, uint16_t out_f)
{
    uint64_t start;
    fill(x, in_f, 6u);
    fill(w, (uint32_t)in_f * out_f, 7u);
    fill(b, out_f, 8u);
    start = mdy_cycles_now();
    mdy_linear_forward(in_f, out_f, x, w, b, y);
    report("linear", index, "forward", mdy_cycles_now() - start);
    start = mdy_cycles_now();
    mdy_linear_backward_input(in_f, out_f, y, w, x, 0);
    report("linear", index, "input_gradient", mdy_cycles_now() - start);
    start = mdy_cycles_now();
    mdy_linear_backward_weight(in_f, out_f, y, x, grad, grad + (uint32_t)in_f * out_f);
    report("linear", index, "weight_gradient", mdy_cycles_now() - start);
}

int main(void)
{
    uint32_t i;
    uint64_t start;
    mdy_cycles_start();
    start = mdy_cycles_now();
    overhead = mdy_cycles_now() - start;
    for (i = 0; i < BENCH_CONVS; ++i) {
        conv_case(i, bench_convs[i]);
    }
    for (i = 0; i < BENCH_LINEARS; ++i) {
        linear_case(i, bench_linears[i][0], bench_linears[i][1]);
    }
    snprintf(line, sizeof line, "clock %lu\n", (unsigned long)MDY_CPU_HZ);
    mdy_semi_write0(line);
    return 0;
}
