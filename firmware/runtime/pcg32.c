/* PCG32 XSH-RR; see pcg32.h. */
#include "pcg32.h"

#define MDY_PCG32_MULTIPLIER UINT64_C(6364136223846793005)

uint32_t mdy_pcg32_next(mdy_pcg32_t *rng)
{
    const uint64_t old = rng->state;
    const uint32_t xorshifted = (uint32_t)(((old >> 18) ^ old) >> 27);
    const uint32_t rot = (uint32_t)(old >> 59);

    rng->state = old * MDY_PCG32_MULTIPLIER + rng->inc;
    return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
}

void mdy_pcg32_seed(mdy_pcg32_t *rng, uint64_t initstate, uint64_t initseq)
{
    rng->state = 0u;
    rng->inc = (initseq << 1) | 1u;
    (void)mdy_pcg32_next(rng);
    rng->state += initstate;
    (void)mdy_pcg32_next(rng);
}
