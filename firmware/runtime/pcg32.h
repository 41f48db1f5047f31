/*
 * PCG32 (XSH-RR output, 64-bit LCG state): the sampler's pseudo-random generator.
 *
 * Seeding follows the reference pcg32_srandom(initstate, initseq): state = 0,
 * inc = (initseq << 1) | 1, one step, state += initstate, one step. The sampler seeds a
 * fresh generator per epoch with (seed, epoch). Bit-identical to
 * medyate_mcu.method.sampler.Pcg32.
 */
#ifndef MDY_PCG32_H
#define MDY_PCG32_H

#include <stdint.h>

typedef struct {
    uint64_t state; /* LCG state */
    uint64_t inc;   /* stream increment, always odd */
} mdy_pcg32_t;

/* Seed rng as the reference pcg32_srandom(initstate, initseq). rng must not be NULL. */
void mdy_pcg32_seed(mdy_pcg32_t *rng, uint64_t initstate, uint64_t initseq);

/* Advance rng; return the XSH-RR output of the state before the step. */
uint32_t mdy_pcg32_next(mdy_pcg32_t *rng);

#endif /* MDY_PCG32_H */
