/*
 * 3x3 convolutions with the taps unrolled (see conv_window.h). Each output row is walked in
 * raster order as left border, interior run, right border. Interior pixels (every tap inside
 * the input) take all nine taps without a test, their weights (or the nine weight-gradient
 * accumulators) in registers; border pixels take the taps of a mask of those inside the input,
 * in the same order, from memory.
 */
#include "conv_window.h"

#include "window.h"

#define K 3         /* kernel height and width */
#define ALL 0x1ffu  /* the mask of all nine taps, bit 3 ky + kx */

#ifdef MDY_CONV_WINDOW_OFF
#define FAST_PATHS 0 /* the reference build: conv.c's general loops only */
#else
#define FAST_PATHS 1
#endif

/* STEP(i, ky, kx) for each tap i = 3 ky + kx in mask m, ky then kx ascending. With m == ALL
   the tests fold away. */
#define TAP(m, i, ky, kx, STEP) if ((m) >> (i) & 1u) { STEP(i, ky, kx); }
#define EACH_TAP(m, STEP) do { \
        TAP(m, 0, 0, 0, STEP) TAP(m, 1, 0, 1, STEP) TAP(m, 2, 0, 2, STEP) \
        TAP(m, 3, 1, 0, STEP) TAP(m, 4, 1, 1, STEP) TAP(m, 5, 1, 2, STEP) \
        TAP(m, 6, 2, 0, STEP) TAP(m, 7, 2, 1, STEP) TAP(m, 8, 2, 2, STEP) \
    } while (0)

/* Nine taps in registers: weights or weight-gradient accumulators, ky then kx ascending. */
typedef struct {
    float t[K * K];
} taps_t;

/* Output row oy: the mask of its window rows inside the input (ALL on interior rows), the
   offset of its pixel 0's top-left tap in an input map (negative or past the end in the
   padding), and its interior run [lo, hi) (empty unless rows == ALL). */
typedef struct {
    uint32_t rows;
    int32_t corner, lo, hi;
} row_t;

static taps_t load_taps(const float *p)
{
    taps_t f;
    int32_t i;
    for (i = 0; i < K * K; ++i) {
        f.t[i] = p[i];
    }
    return f;
}

/* The taps inside an axis of size cells of a window starting at index start: bit k for tap k. */
static uint32_t axis_mask(int32_t start, int32_t size)
{
    int32_t lo, hi;
    mdy_window_taps(start, size, K, &lo, &hi);
    return hi > lo ? (1u << hi) - (1u << lo) : 0u;
}

/* Output indices [*lo, *hi) of an output axis of out cells whose whole window lies inside an
   input axis of in cells (stride, leading padding pad); *lo == *hi when there are none. */
static void interior(int32_t in, int32_t out, int32_t stride, int32_t pad, int32_t *lo,
                     int32_t *hi)
{
    const int32_t first = (pad + stride - 1) / stride;
    int32_t end = in + pad >= K ? (in + pad - K) / stride + 1 : 0;
    if (end > out) {
        end = out;
    }
    *lo = first < end ? first : end;
    *hi = end;
}

static row_t row_at(const mdy_conv_shape_t *s, int32_t oy)
{
    static const uint16_t rows_of[8] = {0x000, 0x007, 0x038, 0x03f, 0x1c0, 0x1c7, 0x1f8, 0x1ff};
    const int32_t iy0 = oy * s->stride_h - s->pad_top;
    row_t r;
    r.rows = rows_of[axis_mask(iy0, s->in_h)];
    r.corner = iy0 * s->in_w - s->pad_left;
    if (r.rows == ALL) {
        interior(s->in_w, s->out_w, s->stride_w, s->pad_left, &r.lo, &r.hi);
    } else {
        r.lo = r.hi = s->out_w;
    }
    return r;
}

/* The taps mask of border pixel ox of row r, and the offset of its top-left tap. */
static uint32_t pixel_mask(const mdy_conv_shape_t *s, const row_t *r, int32_t ox)
{
    return r->rows & axis_mask(ox * s->stride_w - s->pad_left, s->in_w) * 0x49u;
}

/* Forward of border pixel ox of row r: acc + x * w over its taps inside the input. */
static float forward_border(const mdy_conv_shape_t *s, const row_t *r, int32_t ox, float acc,
                            const float *x, const float *w)
{
    const uint32_t mask = pixel_mask(s, r, ox);
    const int32_t o = r->corner + ox * s->stride_w;
#define FORWARD_MEMORY(i, ky, kx) acc += x[o + ky * s->in_w + kx] * w[i]
    EACH_TAP(mask, FORWARD_MEMORY);
    return acc;
}

/* y += one input map's share x_c * w_c, y holding the sums of the input channels before. */
static void forward_map(const mdy_conv_shape_t *s, const float *x_c, const float *w_c,
                        float *y)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    const taps_t f = load_taps(w_c);
    int32_t oy, ox;
    for (oy = 0; oy < s->out_h; ++oy, y += out_w) {
        const row_t r = row_at(s, oy);
        const float *x0 = x_c + r.corner + r.lo * sw;
        for (ox = 0; ox < r.lo; ++ox) {
            y[ox] = forward_border(s, &r, ox, y[ox], x_c, w_c);
        }
        for (; ox < r.hi; ++ox, x0 += sw) {
            const float *x1 = x0 + in_w, *x2 = x1 + in_w;
            float acc = y[ox];
#define FORWARD_REGISTERS(i, ky, kx) acc += x##ky[kx] * f.t[i]
            EACH_TAP(ALL, FORWARD_REGISTERS);
            y[ox] = acc;
        }
        for (; ox < out_w; ++ox) {
            y[ox] = forward_border(s, &r, ox, y[ox], x_c, w_c);
        }
    }
}

int mdy_conv3x3_forward(const mdy_conv_shape_t *s, const float *x_g, const float *w_o,
                        float bias, float *y_o)
{
    const int32_t in_hw = s->in_h * s->in_w, out_hw = s->out_h * s->out_w;
    int32_t ic, p;
    if (!FAST_PATHS || s->k_h != K || s->k_w != K) {
        return 0;
    }
    for (p = 0; p < out_hw; ++p) {
        y_o[p] = bias;
    }
    for (ic = 0; ic < s->in_c / s->groups; ++ic) {
        forward_map(s, x_g + ic * in_hw, w_o + ic * K * K, y_o);
    }
    return 1;
}

/* Input error of border pixel ox of row r: dx += d * w over its taps inside the input. */
static void input_border(const mdy_conv_shape_t *s, const row_t *r, int32_t ox, float d,
                         float *dx, const float *w)
{
    const uint32_t mask = pixel_mask(s, r, ox);
    const int32_t o = r->corner + ox * s->stride_w;
#define INPUT_MEMORY(i, ky, kx) dx[o + ky * s->in_w + kx] += d * w[i]
    EACH_TAP(mask, INPUT_MEMORY);
}

/* dx_c += the scatter of dy along w_c, the output pixels in raster order. */
static void input_map(const mdy_conv_shape_t *s, const float *dy, const float *w_c,
                      float *dx_c)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    const taps_t f = load_taps(w_c);
    int32_t oy, ox;
    for (oy = 0; oy < s->out_h; ++oy, dy += out_w) {
        const row_t r = row_at(s, oy);
        float *dx0 = dx_c + r.corner + r.lo * sw;
        for (ox = 0; ox < r.lo; ++ox) {
            input_border(s, &r, ox, dy[ox], dx_c, w_c);
        }
        for (; ox < r.hi; ++ox, dx0 += sw) {
            float *dx1 = dx0 + in_w, *dx2 = dx1 + in_w;
            const float d = dy[ox];
#define INPUT_REGISTERS(i, ky, kx) dx##ky[kx] += d * f.t[i]
            EACH_TAP(ALL, INPUT_REGISTERS);
        }
        for (; ox < out_w; ++ox) {
            input_border(s, &r, ox, dy[ox], dx_c, w_c);
        }
    }
}

int mdy_conv3x3_backward_input(const mdy_conv_shape_t *s, const float *dy_o, const float *w_o,
                               float *dx_g)
{
    const int32_t in_hw = s->in_h * s->in_w;
    int32_t ic;
    if (!FAST_PATHS || s->k_h != K || s->k_w != K) {
        return 0;
    }
    for (ic = 0; ic < s->in_c / s->groups; ++ic) {
        input_map(s, dy_o, w_o + ic * K * K, dx_g + ic * in_hw);
    }
    return 1;
}

/* Weight gradient of border pixel ox of row r: g += d * x over its taps inside the input. */
static void weight_border(const mdy_conv_shape_t *s, const row_t *r, int32_t ox, float d,
                          const float *x, float *g)
{
    const uint32_t mask = pixel_mask(s, r, ox);
    const int32_t o = r->corner + ox * s->stride_w;
#define WEIGHT_MEMORY(i, ky, kx) g[i] += d * x[o + ky * s->in_w + kx]
    EACH_TAP(mask, WEIGHT_MEMORY);
}

/* Weight gradient of the interior run of row r, the nine accumulators in registers. */
static void weight_run(const mdy_conv_shape_t *s, const row_t *r, const float *dy,
                       const float *x_c, float *g_out)
{
    const int32_t in_w = s->in_w, sw = s->stride_w;
    const float *x0 = x_c + r->corner + r->lo * sw;
    taps_t g = load_taps(g_out);
    int32_t ox, i;
    for (ox = r->lo; ox < r->hi; ++ox, x0 += sw) {
        const float *x1 = x0 + in_w, *x2 = x1 + in_w;
        const float d = dy[ox];
#define WEIGHT_REGISTERS(i, ky, kx) g.t[i] += d * x##ky[kx]
        EACH_TAP(ALL, WEIGHT_REGISTERS);
    }
    for (i = 0; i < K * K; ++i) {
        g_out[i] = g.t[i];
    }
}

int mdy_conv3x3_backward_weight(const mdy_conv_shape_t *s, const float *dy_o,
                                const float *x_c, float *g_out)
{
    const int32_t out_w = s->out_w;
    const float *dy = dy_o;
    int32_t oy, ox;
    if (!FAST_PATHS || s->k_h != K || s->k_w != K) {
        return 0;
    }
    for (oy = 0; oy < s->out_h; ++oy, dy += out_w) {
        const row_t r = row_at(s, oy);
        for (ox = 0; ox < r.lo; ++ox) {
            weight_border(s, &r, ox, dy[ox], x_c, g_out);
        }
        if (r.lo < r.hi) {
            weight_run(s, &r, dy, x_c, g_out);
        }
        for (ox = r.hi; ox < out_w; ++ox) {
            weight_border(s, &r, ox, dy[ox], x_c, g_out);
        }
    }
    return 1;
}
