/* Plain SGD update and the vector helpers around it (gradient norms, clearing accumulators). */
#ifndef MDY_SGD_H
#define MDY_SGD_H

#include <stdint.h>

/* w[i] -= scale * grad[i]  (scale = learning rate / batch size: gradients are summed). */
void mdy_sgd_step(uint32_t n, float *w, const float *grad, float scale);

/* Sum of squares of v[0 .. n-1] (for gradient-slice L2 norms). */
float mdy_sum_squares(uint32_t n, const float *v);

/* v[i] = 0 */
void mdy_zero(uint32_t n, float *v);

#endif /* MDY_SGD_H */
