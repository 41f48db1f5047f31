/*
 * exp and log in float32, built only from IEEE 754 basic operations (add, subtract, multiply,
 * divide, compare, integer operations on the bit pattern; no fused multiply-add, no libm).
 * Every C library rounds its own expf/logf differently (newlib's single-precision multilib and
 * glibc differ by one ulp on 0.7 % of expf and 3 % of logf inputs); these give the same bits on
 * every IEEE machine that evaluates float expressions in float (FLT_EVAL_METHOD 0) without
 * contraction (-ffp-contract=off), so the engine's host and Cortex-M builds stay bit-identical.
 * Error below one ulp (measured by tests/test_mdy_math.py against float64).
 */
#ifndef MDY_MATH_H
#define MDY_MATH_H

/* e^x. NaN gives NaN, x > 88.7228 gives +inf, x < -103.98 gives +0 (subnormal results below
 * e^-87.34 are rounded twice, within one ulp of the subnormal grid). */
float mdy_expf(float x);

/* Natural logarithm. NaN or x < 0 gives NaN, +-0 gives -inf, +inf gives +inf; subnormal x is
 * handled. */
float mdy_logf(float x);

#endif /* MDY_MATH_H */
