/* SGD step and vector helpers (see sgd.h). */
#include "sgd.h"

void mdy_sgd_step(uint32_t n, float *w, const float *grad, float scale)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        w[i] -= scale * grad[i];
    }
}

float mdy_sum_squares(uint32_t n, const float *v)
{
    uint32_t i;
    float sum = 0.0f;
    for (i = 0; i < n; ++i) {
        sum += v[i] * v[i];
    }
    return sum;
}

void mdy_zero(uint32_t n, float *v)
{
    uint32_t i;
    for (i = 0; i < n; ++i) {
        v[i] = 0.0f;
    }
}
