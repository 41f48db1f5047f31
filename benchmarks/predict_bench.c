/*
 * Inference benchmark firmware (benchmarks/kernel_benchmark.py links it with a compiled project's
 * engine and embedded data, and runs it under QEMU -icount): mdy_init, then mdy_predict on the
 * first BENCH_PREDICTS embedded training samples, each decoded as main.c decodes it. Prints
 *   predict <mean cycles> <min> <max> <count>
 * over semihosting. A float-input engine only (the demo); an int8 sample needs
 * mdy_predict_quantized.
 */
#include <stdint.h>
#include <stdio.h>

#include "cycles.h"
#include "data.h"
#include "model.h"
#include "sample.h"
#include "semihosting.h"

#ifdef MDY_INPUT_Q8
#error "predict_bench.c measures float-input engines only"
#endif

#define BENCH_PREDICTS 8u

static float input[MDY_INPUT_SIZE];
static char line[96];

int main(void)
{
    uint32_t i, n = BENCH_PREDICTS < MDY_TRAIN_SAMPLES ? BENCH_PREDICTS : MDY_TRAIN_SAMPLES;
    uint64_t total = 0, fastest = UINT64_MAX, slowest = 0;
    mdy_cycles_start();
    if (mdy_init(&mdy_model) != MDY_OK) {
        mdy_semi_write0("error: mdy_init failed\n");
        return 1;
    }
    for (i = 0; i < n; ++i) {
        uint32_t k;
        uint16_t label = 0;
        uint64_t start, spent;
        for (k = 0; k < MDY_INPUT_SIZE; ++k) {
            input[k] = mdy_sample_value(&mdy_input_encoding, mdy_train_x[i], k);
        }
        start = mdy_cycles_now();
        if (mdy_predict(&mdy_model, input, &label) != MDY_OK) {
            mdy_semi_write0("error: mdy_predict failed\n");
            return 1;
        }
        spent = mdy_cycles_now() - start;
        total += spent;
        fastest = spent < fastest ? spent : fastest;
        slowest = spent > slowest ? spent : slowest;
    }
    snprintf(line, sizeof line, "predict %lu %lu %lu %lu\n", (unsigned long)(total / n),
             (unsigned long)fastest, (unsigned long)slowest, (unsigned long)n);
    mdy_semi_write0(line);
    return 0;
}
