/*
 * 3x3 convolutions with the taps unrolled (see conv_window.h). Each output row is walked in
 * raster order as left border, run of pixels whose window columns are inside the input, right
 * border. The nine weights (or the nine weight-gradient accumulators) stay in registers over a
 * whole map. Interior pixels take all nine taps without a test, in blocks that load each input
 * cell once for several pixels (stride 1: three pixels, and for the forward two rows; stride 2:
 * two pixels, which share a cell); the top and bottom rows' runs test their window rows, border
 * pixels a 9-bit mask of their taps inside the input (the masks of a padding of one switched
 * to unrolled code). The geometry (interior bounds, border masks) is computed once per call, and
 * a depthwise layer is one call. Maps of at most 16 output pixels, where rows and blocks cost
 * more than the taps, run instead from a table of each pixel's tap offset and mask (built once
 * per call, so once per depthwise layer; the weight gradient, one call per map, combines row
 * and column masks as it goes).
 * The stride-1 input error is a gather: the forward of the transposed shape with the filter
 * rotated, each dx cell taking the scatter's terms (the output pixels in raster order, that is
 * its taps ky, kx descending) in a register. Every pixel, cell or accumulator still takes its
 * terms in the general loops' order.
 *
 * Shapes with at most one border column per side (stride 1 or 2, the masks of a padding of
 * one: "edges") take whole depthwise layers, and the weight gradients of several selected
 * channels (mdy_conv3x3_backward_weights, one call per layer), without masks on rows: window
 * rows in the padding are read from a zero row (forward, weight gradient, the stride-1 gather
 * overwriting dx) or written to a trash row (stride-2 input error). Reading a zero adds
 * x * 0 = +-0 (x finite) to a sum that is not -0, which leaves it unchanged; such a sum starts
 * at a bias or gradient other than -0, or at +0 (dx overwritten), and a round-to-nearest sum
 * is -0 only when both terms are, so the bits stay the general loops'. A channel whose bias is
 * -0 or whose filter is not finite takes the masked path; gradient slots and errors are
 * assumed as conv.h states. Border pixels are unrolled, rows of four pixels unrolled whole;
 * the stride-2 input error overwriting dx writes each new row (its sums from +0) instead of
 * zeroing it first.
 */
#include "conv_window.h"

#include <stddef.h>

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

/* EACH_TAP(m, STEP) with the masks of a padding of one (a side column and/or a top or bottom
   row outside the input) as constants, their tests folded away. */
#define CASE_TAPS(c, STEP) case c: EACH_TAP(c, STEP); break;
#define PADDING_ONE(STEP) \
        CASE_TAPS(0x1b6u, STEP) CASE_TAPS(0x0dbu, STEP) CASE_TAPS(0x1b0u, STEP) \
        CASE_TAPS(0x0d8u, STEP) CASE_TAPS(0x036u, STEP) CASE_TAPS(0x01bu, STEP)
#define MASKED_TAPS(m, STEP) switch (m) { \
        PADDING_ONE(STEP) \
        default: EACH_TAP(m, STEP); break; \
    }

/* MASKED_TAPS with all nine taps a case too (the pixels of a table). */
#define PIXEL_TAPS(m, STEP) switch (m) { \
        CASE_TAPS(ALL, STEP) PADDING_ONE(STEP) \
        default: EACH_TAP(m, STEP); break; \
    }

/* STEP(i, ky, kx) for the taps of the window rows in mask m (a row's three bits all set or all
   clear), ky then kx ascending. With m == ALL the tests fold away. */
#define ROW_TAPS(m, ky, STEP) if ((m) >> (3 * ky) & 1u) { \
        STEP(3 * ky, ky, 0); STEP(3 * ky + 1, ky, 1); STEP(3 * ky + 2, ky, 2); \
    }
#define EACH_ROW(m, STEP) do { \
        ROW_TAPS(m, 0, STEP) ROW_TAPS(m, 1, STEP) ROW_TAPS(m, 2, STEP) \
    } while (0)

/* Nine taps in registers: weights or weight-gradient accumulators, ky then kx ascending. */
typedef struct {
    float t[K * K];
} taps_t;

/* Border rows or columns kept per side in a map's geometry; a shape with more (a padding
   over 8) takes the general loops. */
#define EDGE 8

/* An output map's geometry, the same for every channel of a layer: its interior columns
   [lo, hi) and rows [oy_lo, oy_hi) (windows inside the input), the stride-1 forward's blocks
   (the first n interior columns of rows [oy_lo, pairs_end)), the window-rows mask of each
   border row (top: oy < oy_lo; bottom: oy - oy_hi) and the taps mask of each border column
   (left: ox < lo; right: ox - hi) over all three window rows. */
typedef struct {
    int32_t lo, hi, oy_lo, oy_hi, n, pairs_end;
    uint16_t top[EDGE], bottom[EDGE], left[EDGE], right[EDGE];
} geom_t;

/* Output row oy: the mask of its window rows inside the input (ALL on interior rows), the
   offset of its pixel 0's top-left tap in an input map (negative or past the end in the
   padding), its run [lo, hi) of pixels whose window columns are all inside the input, and
   for each window row ky the offset of pixel lo's cell in it (0, a dummy, for a row outside
   the input). */
typedef struct {
    uint32_t rows;
    int32_t corner, lo, hi, at[K];
} row_t;

static inline void load_taps(taps_t *f, const float *p)
{
    f->t[0] = p[0];
    f->t[1] = p[1];
    f->t[2] = p[2];
    f->t[3] = p[3];
    f->t[4] = p[4];
    f->t[5] = p[5];
    f->t[6] = p[6];
    f->t[7] = p[7];
    f->t[8] = p[8];
}

/* The taps into p. */
static inline void store_taps(const taps_t *f, float *p)
{
    p[0] = f->t[0];
    p[1] = f->t[1];
    p[2] = f->t[2];
    p[3] = f->t[3];
    p[4] = f->t[4];
    p[5] = f->t[5];
    p[6] = f->t[6];
    p[7] = f->t[7];
    p[8] = f->t[8];
}

/* The taps of p in reverse order: the filter rotated by half a turn. */
static inline void load_rotated(taps_t *f, const float *p)
{
    f->t[0] = p[8];
    f->t[1] = p[7];
    f->t[2] = p[6];
    f->t[3] = p[5];
    f->t[4] = p[4];
    f->t[5] = p[3];
    f->t[6] = p[2];
    f->t[7] = p[1];
    f->t[8] = p[0];
}

/* The taps mask of the window rows in an axis mask (bit ky for window row ky). */
static const uint16_t rows_of[8] = {0x000, 0x007, 0x038, 0x03f, 0x1c0, 0x1c7, 0x1f8, 0x1ff};

/* The taps inside an axis of size cells of a window starting at index start: bit k for tap k. */
static uint32_t axis_mask(int32_t start, int32_t size)
{
    int32_t lo, hi;
    mdy_window_taps(start, size, K, &lo, &hi);
    return hi > lo ? (1u << hi) - (1u << lo) : 0u;
}

/* The taps mask of output row oy of s (its window rows inside the input). */
static inline uint32_t row_mask(const mdy_conv_shape_t *s, int32_t oy)
{
    return rows_of[axis_mask(oy * s->stride_h - s->pad_top, s->in_h)];
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

/* The geometry of s's output maps into *g; 0 when a side has more than EDGE border rows or
   columns. */
static int geometry(const mdy_conv_shape_t *s, geom_t *g)
{
    const int32_t sw = s->stride_w, sh = s->stride_h;
    int32_t i;
    interior(s->in_w, s->out_w, sw, s->pad_left, &g->lo, &g->hi);
    interior(s->in_h, s->out_h, sh, s->pad_top, &g->oy_lo, &g->oy_hi);
    if (g->lo > EDGE || s->out_w - g->hi > EDGE || g->oy_lo > EDGE
        || s->out_h - g->oy_hi > EDGE) {
        return 0;
    }
    for (i = 0; i < g->lo; ++i) {
        g->left[i] = (uint16_t)(axis_mask(i * sw - s->pad_left, s->in_w) * 0x49u);
    }
    for (i = g->hi; i < s->out_w; ++i) {
        g->right[i - g->hi] = (uint16_t)(axis_mask(i * sw - s->pad_left, s->in_w) * 0x49u);
    }
    for (i = 0; i < g->oy_lo; ++i) {
        g->top[i] = (uint16_t)row_mask(s, i);
    }
    for (i = g->oy_hi; i < s->out_h; ++i) {
        g->bottom[i - g->oy_hi] = (uint16_t)row_mask(s, i);
    }
    g->n = 0;
    g->pairs_end = g->oy_lo;
    if (sw == 1 && sh == 1) {  /* stride-1 forward: blocks of 2 rows x 3 columns */
        g->n = (g->hi - g->lo) / 3 * 3;
        g->pairs_end = g->n > 0 ? g->oy_lo + (g->oy_hi - g->oy_lo) / 2 * 2 : g->oy_lo;
    }
    return 1;
}

/* Output maps of at most TABLE pixels run from a table of their pixels (small maps, where the
   rows and blocks cost more than the taps). */
#define TABLE 16

/* One output pixel of a table: the offset of its window's top-left tap in an input map and
   its taps mask. */
typedef struct {
    int16_t at;
    uint16_t mask;
} pixel_t;

/* How the maps of one shape run: the table px of their n pixels in raster order when they are
   small (n > 0), else their geometry g. */
typedef struct {
    geom_t g;
    int32_t n;
    pixel_t px[TABLE];
} plan_t;

/* The taps mask of each output column of s (out_w of them) into cols. */
static void column_masks(const mdy_conv_shape_t *s, uint16_t *cols)
{
    int32_t ox;
    for (ox = 0; ox < s->out_w; ++ox) {
        cols[ox] = (uint16_t)(axis_mask(ox * s->stride_w - s->pad_left, s->in_w) * 0x49u);
    }
}

/* The pixels of s's output maps into px; their count, or 0 when there are more than TABLE or
   an offset does not fit in 16 bits. */
static int32_t pixel_table(const mdy_conv_shape_t *s, pixel_t *px)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    const int32_t n = s->out_h * out_w, row_step = s->stride_h * in_w;
    int32_t oy, ox, at, corner = -s->pad_top * in_w - s->pad_left;
    uint16_t cols[TABLE];  /* each column's taps mask */
    if (n > TABLE || corner < INT16_MIN
        || corner + (s->out_h - 1) * row_step + (out_w - 1) * sw > INT16_MAX) {
        return 0;
    }
    column_masks(s, cols);
    for (oy = 0; oy < s->out_h; ++oy, corner += row_step) {
        const uint32_t rows = row_mask(s, oy);
        for (ox = 0, at = corner; ox < out_w; ++ox, at += sw, ++px) {
            px->at = (int16_t)at;
            px->mask = (uint16_t)(rows & cols[ox]);
        }
    }
    return n;
}

/* The plan of s; 0 (the general loops) for other than a 3x3 kernel, or large maps without a
   geometry. */
static int plan(const mdy_conv_shape_t *s, plan_t *p)
{
    if (!FAST_PATHS || s->k_h != K || s->k_w != K) {
        return 0;
    }
    p->n = pixel_table(s, p->px);
    return p->n > 0 || geometry(s, &p->g);
}

/* Row oy of an output map of geometry g. */
static inline row_t row_at(const mdy_conv_shape_t *s, const geom_t *g, int32_t oy)
{
    const int32_t iy0 = oy * s->stride_h - s->pad_top;
    row_t r;
    int32_t base;
    r.rows = oy < g->oy_lo ? g->top[oy] : oy >= g->oy_hi ? g->bottom[oy - g->oy_hi] : ALL;
    r.corner = iy0 * s->in_w - s->pad_left;
    r.lo = g->lo;
    r.hi = g->hi;
    base = r.corner + g->lo * s->stride_w;
    r.at[0] = r.rows & 0x001u ? base : 0;
    r.at[1] = r.rows & 0x008u ? base + s->in_w : 0;
    r.at[2] = r.rows & 0x040u ? base + 2 * s->in_w : 0;
    return r;
}

/* The taps mask of border pixel ox of row r (left of the run: cols == g->left, first == 0;
   right: cols == g->right, first == r->hi). */
#define PIXEL_MASK(cols, first) (r.rows & (cols)[ox - (first)])

/* The run [r.lo, r.hi) of row r with the taps of window rows m, the weights in registers. */
#define FORWARD_RUN(m) \
    for (; ox < r.hi; ++ox, x0 += sw, x1 += sw, x2 += sw) { \
        float acc = y[ox]; \
        EACH_ROW(m, FORWARD_REGISTERS); \
        y[ox] = acc; \
    }
#define FORWARD_REGISTERS(i, ky, kx) acc += x##ky[kx] * f.t[i]

/* Border pixels [from, to) of row r (column masks cols from from): the taps in their masks,
   the weights in registers. */
#define FORWARD_BORDER(from, to, cols) \
    for (ox = from; ox < to; ++ox) { \
        const uint32_t mask = PIXEL_MASK(cols, from); \
        const int32_t o = r.corner + ox * sw; \
        float acc = y[ox]; \
        MASKED_TAPS(mask, FORWARD_OFFSETS) \
        y[ox] = acc; \
    }
#define FORWARD_OFFSETS(i, ky, kx) acc += x_c[o + ky * in_w + kx] * f.t[i]

/* Stride 1: the five cells c0 .. c4 of an input row into pixels ox .. ox + 2 (accumulators
   p0 .. p2) with window row ky. */
#if defined(__arm__) && defined(__ARM_FP) && defined(__GNUC__) && !defined(__clang__)
/* On the Cortex-M FPU one VLDM into s0-s4 (gcc never merges VLDRs): the same loads. */
#define CELLS(x) \
    register float c0 __asm__("s0"), c1 __asm__("s1"), c2 __asm__("s2"), c3 __asm__("s3"); \
    register float c4 __asm__("s4"); \
    __asm__("vldmia %5, {s0-s4}" : "=t"(c0), "=t"(c1), "=t"(c2), "=t"(c3), "=t"(c4) \
            : "r"(x), "m"(*(const float (*)[5])(x)));
#else
#define CELLS(x) const float c0 = (x)[0], c1 = (x)[1], c2 = (x)[2], c3 = (x)[3], c4 = (x)[4];
#endif
#define ADD3(p, ky) \
    p##0 += c0 * f.t[3 * ky]; p##0 += c1 * f.t[3 * ky + 1]; p##0 += c2 * f.t[3 * ky + 2]; \
    p##1 += c1 * f.t[3 * ky]; p##1 += c2 * f.t[3 * ky + 1]; p##1 += c3 * f.t[3 * ky + 2]; \
    p##2 += c2 * f.t[3 * ky]; p##2 += c3 * f.t[3 * ky + 1]; p##2 += c4 * f.t[3 * ky + 2];

/* Stride 1, interior: window row ky of pixels ox .. ox + 2 (a0 .. a2), its five cells loaded
   once; each pixel still adds its taps ky then kx. */
#define FORWARD3_ROW(ky) do { \
        CELLS(x##ky) \
        ADD3(a, ky) \
    } while (0)

/* Stride 1, interior rows [oy, oy_end) two at a time, columns [lo, lo + n) three at a time
   (n a multiple of 3): each input row's five cells loaded once for up to six pixels. */
static void forward_pairs(const mdy_conv_shape_t *s, const float *x_c, const taps_t *taps,
                          float *y, int32_t oy, int32_t oy_end, int32_t lo, int32_t n)
{
    const taps_t f = *taps;
    const int32_t in_w = s->in_w, out_w = s->out_w;
    int32_t ox;
    for (; oy < oy_end; oy += 2) {
        const float *x0 = x_c + (oy - s->pad_top) * in_w + lo - s->pad_left;
        const float *x1 = x0 + in_w, *x2 = x1 + in_w, *x3 = x2 + in_w;
        float *ya = y + oy * out_w, *yb = ya + out_w;
        for (ox = lo; ox < lo + n; ox += 3, x0 += 3, x1 += 3, x2 += 3, x3 += 3) {
            float a0 = ya[ox], a1 = ya[ox + 1], a2 = ya[ox + 2];
            float b0 = yb[ox], b1 = yb[ox + 1], b2 = yb[ox + 2];
            { CELLS(x0) ADD3(a, 0) }
            { CELLS(x1) ADD3(a, 1) ADD3(b, 0) }
            { CELLS(x2) ADD3(a, 2) ADD3(b, 1) }
            { CELLS(x3) ADD3(b, 2) }
            ya[ox] = a0;
            ya[ox + 1] = a1;
            ya[ox + 2] = a2;
            yb[ox] = b0;
            yb[ox + 1] = b1;
            yb[ox + 2] = b2;
        }
    }
}

/* Stride 2, interior: window row ky of pixels ox, ox + 1 (a0, a1), which share a cell. */
#define FORWARD2_ROW(ky) do { \
        CELLS(x##ky) \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        a0 += c0 * w0; a0 += c1 * w1; a0 += c2 * w2; \
        a1 += c2 * w0; a1 += c3 * w1; a1 += c4 * w2; \
    } while (0)

/* y += one input map's share x_c * taps, y holding the sums of the input channels before. */
static void forward_map(const mdy_conv_shape_t *s, const geom_t *g, const float *x_c,
                        const taps_t *taps, float *y)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    const int32_t oy_lo = g->oy_lo, pairs_end = g->pairs_end, n = g->n;
    const taps_t f = *taps;
    int32_t oy, ox;
    if (pairs_end > oy_lo) {  /* stride 1, pixels independent: blocks first, the rest after */
        forward_pairs(s, x_c, &f, y, oy_lo, pairs_end, g->lo, n);
    }
    for (oy = 0; oy < s->out_h; ++oy, y += out_w) {
        const row_t r = row_at(s, g, oy);
        const float *x0 = x_c + r.at[0], *x1 = x_c + r.at[1], *x2 = x_c + r.at[2];
        FORWARD_BORDER(0, r.lo, g->left)
        ox = r.lo;
        if (r.rows == ALL) {
            if (oy >= oy_lo && oy < pairs_end) {  /* done by forward_pairs */
                ox += n;
                x0 += n;
                x1 += n;
                x2 += n;
            }
            for (; sw == 1 && ox + 3 <= r.hi; ox += 3, x0 += 3, x1 += 3, x2 += 3) {
                float a0 = y[ox], a1 = y[ox + 1], a2 = y[ox + 2];
                FORWARD3_ROW(0);
                FORWARD3_ROW(1);
                FORWARD3_ROW(2);
                y[ox] = a0;
                y[ox + 1] = a1;
                y[ox + 2] = a2;
            }
            for (; sw == 2 && ox + 2 <= r.hi; ox += 2, x0 += 4, x1 += 4, x2 += 4) {
                float a0 = y[ox], a1 = y[ox + 1];
                FORWARD2_ROW(0);
                FORWARD2_ROW(1);
                FORWARD2_ROW(2);
                y[ox] = a0;
                y[ox + 1] = a1;
            }
            FORWARD_RUN(ALL)
        } else {
            FORWARD_RUN(r.rows)
        }
        FORWARD_BORDER(r.hi, out_w, g->right)
    }
}

/* The out_hw pixels of y_o set to bias. */
static void fill(int32_t out_hw, float bias, float *y_o)
{
    int32_t p;
    for (p = 0; p + 4 <= out_hw; p += 4) {
        y_o[p] = bias;
        y_o[p + 1] = bias;
        y_o[p + 2] = bias;
        y_o[p + 3] = bias;
    }
    for (; p < out_hw; ++p) {
        y_o[p] = bias;
    }
}

/* y += x_c * taps over the n pixels of table px, each taking its taps ky, kx ascending. */
static void forward_table(const mdy_conv_shape_t *s, const pixel_t *px, int32_t n,
                          const float *x_c, const taps_t *taps, float *y)
{
    const int32_t in_w = s->in_w;
    const taps_t f = *taps;
    int32_t p;
    for (p = 0; p < n; ++p) {
        const uint32_t mask = px[p].mask;
        const int32_t o = px[p].at;
        float acc = y[p];
        PIXEL_TAPS(mask, FORWARD_OFFSETS)
        y[p] = acc;
    }
}

/* y += x_c * taps by plan p. */
static void forward_plan(const mdy_conv_shape_t *s, const plan_t *p, const float *x_c,
                         const taps_t *taps, float *y)
{
    if (p->n > 0) {
        forward_table(s, p->px, p->n, x_c, taps, y);
    } else {
        forward_map(s, &p->g, x_c, taps, y);
    }
}

int mdy_conv3x3_forward(const mdy_conv_shape_t *s, const float *x_g, const float *w_o,
                        float bias, float *y_o)
{
    const int32_t in_hw = s->in_h * s->in_w;
    plan_t p;
    taps_t f;
    int32_t ic;
    if (!plan(s, &p)) {
        return 0;
    }
    fill(s->out_h * s->out_w, bias, y_o);
    for (ic = 0; ic < s->in_c / s->groups; ++ic) {
        load_taps(&f, w_o + ic * K * K);
        forward_plan(s, &p, x_g + ic * in_hw, &f, y_o);
    }
    return 1;
}

/* y (one output map) = bias + x_c * w_c by plan p (w_c rotated by half a turn: rotated). */
static void forward_channel(const mdy_conv_shape_t *s, const plan_t *p, const float *x_c,
                            const float *w_c, float bias, float *y, int rotated)
{
    taps_t f;
    fill(s->out_h * s->out_w, bias, y);
    if (rotated) {
        load_rotated(&f, w_c);
    } else {
        load_taps(&f, w_c);
    }
    forward_plan(s, p, x_c, &f, y);
}

static int forward_edges(const mdy_conv_shape_t *s, const plan_t *p, const float *x,
                         const float *w, const float *b, float *y, int rotated);

int mdy_conv3x3_depthwise_forward(const mdy_conv_shape_t *s, const float *x, const float *w,
                                  const float *b, float *y)
{
    const int32_t in_hw = s->in_h * s->in_w, out_hw = s->out_h * s->out_w;
    plan_t p;
    int32_t c;
    if (s->groups != s->in_c || s->out_c != s->in_c || !plan(s, &p)) {
        return 0;
    }
    if (forward_edges(s, &p, x, w, b, y, 0)) {
        return 1;
    }
    for (c = 0; c < s->out_c; ++c, x += in_hw, w += K * K, y += out_hw) {
        forward_channel(s, &p, x, w, b != NULL ? b[c] : 0.0f, y, 0);
    }
    return 1;
}

/* The run [r.lo, r.hi) of row r with the taps of window rows m, the weights in registers. */
#define INPUT_RUN(m) \
    for (; ox < r.hi; ++ox, dx0 += sw, dx1 += sw, dx2 += sw) { \
        const float d = dy[ox]; \
        EACH_ROW(m, INPUT_REGISTERS); \
    }
#define INPUT_REGISTERS(i, ky, kx) dx##ky[kx] += d * f.t[i]

/* Border pixels [from, to) of row r (column masks cols from from): the taps in their masks,
   the weights in registers. */
#define INPUT_BORDER(from, to, cols) \
    for (ox = from; ox < to; ++ox) { \
        const uint32_t mask = PIXEL_MASK(cols, from); \
        const int32_t o = r.corner + ox * sw; \
        const float d = dy[ox]; \
        MASKED_TAPS(mask, INPUT_OFFSETS) \
    }
#define INPUT_OFFSETS(i, ky, kx) dx_c[o + ky * in_w + kx] += d * f.t[i]

/* Stride 1, interior: pixels ox .. ox + 2 (errors d0 .. d2) into window row ky, its five cells
   loaded and stored once; each cell still takes the pixels in order. */
#define INPUT3_ROW(ky) do { \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        float c0 = dx##ky[0], c1 = dx##ky[1], c2 = dx##ky[2], c3 = dx##ky[3], c4 = dx##ky[4]; \
        c0 += d0 * w0; c1 += d0 * w1; c2 += d0 * w2; \
        c1 += d1 * w0; c2 += d1 * w1; c3 += d1 * w2; \
        c2 += d2 * w0; c3 += d2 * w1; c4 += d2 * w2; \
        dx##ky[0] = c0; dx##ky[1] = c1; dx##ky[2] = c2; dx##ky[3] = c3; dx##ky[4] = c4; \
    } while (0)

/* Stride 2, interior: pixels ox, ox + 1 (errors d0, d1) into window row ky; the shared cell
   takes pixel ox first. */
#define INPUT2_ROW(ky) do { \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        float c0 = dx##ky[0], c1 = dx##ky[1], c2 = dx##ky[2], c3 = dx##ky[3], c4 = dx##ky[4]; \
        c0 += d0 * w0; c1 += d0 * w1; c2 += d0 * w2; \
        c2 += d1 * w0; c3 += d1 * w1; c4 += d1 * w2; \
        dx##ky[0] = c0; dx##ky[1] = c1; dx##ky[2] = c2; dx##ky[3] = c3; dx##ky[4] = c4; \
    } while (0)

/* dx_c += the scatter of dy along w_c, the output pixels in raster order. */
static void input_map(const mdy_conv_shape_t *s, const geom_t *g, const float *dy,
                      const float *w_c, float *dx_c)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    taps_t f;
    int32_t oy, ox;
    load_taps(&f, w_c);
    for (oy = 0; oy < s->out_h; ++oy, dy += out_w) {
        const row_t r = row_at(s, g, oy);
        float *dx0 = dx_c + r.at[0], *dx1 = dx_c + r.at[1], *dx2 = dx_c + r.at[2];
        INPUT_BORDER(0, r.lo, g->left)
        ox = r.lo;
        if (r.rows == ALL) {
            for (; sw == 1 && ox + 3 <= r.hi; ox += 3, dx0 += 3, dx1 += 3, dx2 += 3) {
                const float d0 = dy[ox], d1 = dy[ox + 1], d2 = dy[ox + 2];
                INPUT3_ROW(0);
                INPUT3_ROW(1);
                INPUT3_ROW(2);
            }
            for (; sw == 2 && ox + 2 <= r.hi; ox += 2, dx0 += 4, dx1 += 4, dx2 += 4) {
                const float d0 = dy[ox], d1 = dy[ox + 1];
                INPUT2_ROW(0);
                INPUT2_ROW(1);
                INPUT2_ROW(2);
            }
            INPUT_RUN(ALL)
        } else {
            INPUT_RUN(r.rows)
        }
        INPUT_BORDER(r.hi, out_w, g->right)
    }
}

/* dx_c += the scatter of dy along w_c over the n pixels of table px, in raster order. */
static void input_table(const mdy_conv_shape_t *s, const pixel_t *px, int32_t n,
                        const float *dy, const float *w_c, float *dx_c)
{
    const int32_t in_w = s->in_w;
    taps_t f;
    int32_t p;
    load_taps(&f, w_c);
    for (p = 0; p < n; ++p) {
        const uint32_t mask = px[p].mask;
        const int32_t o = px[p].at;
        const float d = dy[p];
        PIXEL_TAPS(mask, INPUT_OFFSETS)
    }
}

/* How an input error runs. Stride 1: as the forward of the transposed shape t (the dy maps
   in, the dx maps out, the padding K - 1 - pad) with the filter rotated, each dx cell
   gathering its terms in the scatter's order (the output pixels in raster order are its taps
   ky, kx descending) in a register; otherwise the scatter over s's geometry g. */
typedef struct {
    mdy_conv_shape_t t;
    plan_t p;
    int gather;
} input_plan_t;

/* p for s; 0 (the general loops) when the geometry declines. */
static int input_plan(const mdy_conv_shape_t *s, input_plan_t *p)
{
    p->gather = s->stride_h == 1 && s->stride_w == 1 && s->pad_top < K && s->pad_left < K;
    if (!p->gather) {
        return plan(s, &p->p);
    }
    p->t = *s;
    p->t.in_h = s->out_h;
    p->t.in_w = s->out_w;
    p->t.out_h = s->in_h;
    p->t.out_w = s->in_w;
    p->t.pad_top = (uint8_t)(K - 1 - s->pad_top);
    p->t.pad_left = (uint8_t)(K - 1 - s->pad_left);
    return plan(&p->t, &p->p);
}

/* dx_c += the scatter of dy along w_c, by plan p. */
static void input_channel(const mdy_conv_shape_t *s, const input_plan_t *p, const float *dy,
                          const float *w_c, float *dx_c)
{
    taps_t f;
    if (p->gather) {
        load_rotated(&f, w_c);
        forward_plan(&p->t, &p->p, dy, &f, dx_c);
    } else if (p->p.n > 0) {
        input_table(s, p->p.px, p->p.n, dy, w_c, dx_c);
    } else {
        input_map(s, &p->p.g, dy, w_c, dx_c);
    }
}

int mdy_conv3x3_backward_input(const mdy_conv_shape_t *s, const float *dy_o, const float *w_o,
                               float *dx_g)
{
    const int32_t in_hw = s->in_h * s->in_w;
    input_plan_t p;
    int32_t ic;
    if (!input_plan(s, &p)) {
        return 0;
    }
    for (ic = 0; ic < s->in_c / s->groups; ++ic) {
        input_channel(s, &p, dy_o, w_o + ic * K * K, dx_g + ic * in_hw);
    }
    return 1;
}

static int input_edges(const mdy_conv_shape_t *s, const float *dy, const float *w, float *dx,
                       int fresh);

int mdy_conv3x3_depthwise_backward_input(const mdy_conv_shape_t *s, const float *dy,
                                         const float *w, float *dx)
{
    const int32_t in_hw = s->in_h * s->in_w, out_hw = s->out_h * s->out_w;
    input_plan_t p;
    int32_t c;
    if (s->groups != s->in_c || s->out_c != s->in_c || !input_plan(s, &p)) {
        return 0;
    }
    if (!p.gather && input_edges(s, dy, w, dx, 0)) {
        return 1;
    }
    for (c = 0; c < s->out_c; ++c, dy += out_hw, w += K * K, dx += in_hw) {
        input_channel(s, &p, dy, w, dx);
    }
    return 1;
}

/* The run [r.lo, r.hi) of row r with the taps of window rows m. */
#define WEIGHT_RUN(m) \
    for (; ox < r.hi; ++ox, x0 += sw, x1 += sw, x2 += sw) { \
        const float d = dy[ox]; \
        EACH_ROW(m, WEIGHT_REGISTERS); \
    }
#define WEIGHT_REGISTERS(i, ky, kx) a.t[i] += d * x##ky[kx]

/* Stride 1, interior: pixels ox .. ox + 2 (errors d0 .. d2) on window row ky, its five cells
   loaded once; each accumulator still takes the pixels in order. */
#define WEIGHT3_ROW(ky) do { \
        const float c0 = x##ky[0], c1 = x##ky[1], c2 = x##ky[2], c3 = x##ky[3], c4 = x##ky[4]; \
        a.t[3 * ky] += d0 * c0; a.t[3 * ky] += d1 * c1; a.t[3 * ky] += d2 * c2; \
        a.t[3 * ky + 1] += d0 * c1; a.t[3 * ky + 1] += d1 * c2; a.t[3 * ky + 1] += d2 * c3; \
        a.t[3 * ky + 2] += d0 * c2; a.t[3 * ky + 2] += d1 * c3; a.t[3 * ky + 2] += d2 * c4; \
    } while (0)

/* Stride 2, interior: pixels ox, ox + 1 (errors d0, d1) on window row ky, which share a cell. */
#define WEIGHT2_ROW(ky) do { \
        const float c0 = x##ky[0], c1 = x##ky[1], c2 = x##ky[2], c3 = x##ky[3], c4 = x##ky[4]; \
        a.t[3 * ky] += d0 * c0; a.t[3 * ky] += d1 * c2; \
        a.t[3 * ky + 1] += d0 * c1; a.t[3 * ky + 1] += d1 * c3; \
        a.t[3 * ky + 2] += d0 * c2; a.t[3 * ky + 2] += d1 * c4; \
    } while (0)

/* Border pixels [from, to) of row r (column masks cols from from): the taps in their masks. */
#define WEIGHT_BORDER(from, to, cols) \
    for (ox = from; ox < to; ++ox) { \
        const uint32_t mask = PIXEL_MASK(cols, from); \
        const int32_t o = r.corner + ox * sw; \
        const float d = dy[ox]; \
        MASKED_TAPS(mask, WEIGHT_OFFSETS) \
    }
#define WEIGHT_OFFSETS(i, ky, kx) a.t[i] += d * x_c[o + ky * in_w + kx]

/* *acc += the weight gradient of dy and x_c over a map of at most TABLE pixels, in raster
   order, each pixel's taps mask its row's and its column's (no table: one call per map). */
static void weight_small(const mdy_conv_shape_t *s, const float *dy, const float *x_c,
                         taps_t *acc)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    const int32_t row_step = s->stride_h * in_w;
    uint16_t cols[TABLE];
    taps_t a = *acc;
    int32_t oy, ox, o, corner = -s->pad_top * in_w - s->pad_left;
    column_masks(s, cols);
    for (oy = 0; oy < s->out_h; ++oy, corner += row_step, dy += out_w) {
        const uint32_t rows = row_mask(s, oy);
        for (ox = 0, o = corner; ox < out_w; ++ox, o += sw) {
            const uint32_t mask = rows & cols[ox];
            const float d = dy[ox];
            PIXEL_TAPS(mask, WEIGHT_OFFSETS)
        }
    }
    *acc = a;
}

/* *acc += the weight gradient of dy and x_c over the rows of geometry g. */
static void weight_map(const mdy_conv_shape_t *s, const geom_t *g, const float *dy,
                       const float *x_c, taps_t *acc)
{
    const int32_t in_w = s->in_w, out_w = s->out_w, sw = s->stride_w;
    taps_t a = *acc;
    int32_t oy, ox;
    for (oy = 0; oy < s->out_h; ++oy, dy += out_w) {
        const row_t r = row_at(s, g, oy);
        const float *x0 = x_c + r.at[0], *x1 = x_c + r.at[1], *x2 = x_c + r.at[2];
        WEIGHT_BORDER(0, r.lo, g->left)
        ox = r.lo;
        if (r.rows == ALL) {
            for (; sw == 1 && ox + 3 <= r.hi; ox += 3, x0 += 3, x1 += 3, x2 += 3) {
                const float d0 = dy[ox], d1 = dy[ox + 1], d2 = dy[ox + 2];
                WEIGHT3_ROW(0);
                WEIGHT3_ROW(1);
                WEIGHT3_ROW(2);
            }
            for (; sw == 2 && ox + 2 <= r.hi; ox += 2, x0 += 4, x1 += 4, x2 += 4) {
                const float d0 = dy[ox], d1 = dy[ox + 1];
                WEIGHT2_ROW(0);
                WEIGHT2_ROW(1);
                WEIGHT2_ROW(2);
            }
            WEIGHT_RUN(ALL)
        } else {
            WEIGHT_RUN(r.rows)
        }
        WEIGHT_BORDER(r.hi, out_w, g->right)
    }
    *acc = a;
}

int mdy_conv3x3_backward_weight(const mdy_conv_shape_t *s, const float *dy_o,
                                const float *x_c, float *g_out)
{
    geom_t g;
    taps_t a;
    if (!FAST_PATHS || s->k_h != K || s->k_w != K) {
        return 0;
    }
    if (s->out_h * s->out_w <= TABLE) {
        load_taps(&a, g_out);
        weight_small(s, dy_o, x_c, &a);
    } else if (geometry(s, &g)) {
        load_taps(&a, g_out);
        weight_map(s, &g, dy_o, x_c, &a);
    } else {
        return 0;
    }
    store_taps(&a, g_out);
    return 1;
}

/* The widest input map whose window rows outside the input a zero row stands for. */
#define ZERO_ROW 64

/* The zero row (read only: in flash, no stack). */
static const float zero_row[ZERO_ROW];

/* Output columns of the weight gradient from zero rows: interior [lo, hi) and the kx mask
   (bit kx: that window column inside the input) of each border column. */
typedef struct {
    int32_t lo, hi;
    uint8_t left[EDGE], right[EDGE];
} columns_t;

/* Taps (ky, kx) of window column kx of all three window rows, at cell o of rows x0 .. x2. */
#define COLUMN_TAP(kx) \
    a.t[kx] += d * x0[o + kx]; a.t[3 + kx] += d * x1[o + kx]; a.t[6 + kx] += d * x2[o + kx];

/* A border pixel (error d, window at cell o) with the window columns of mask m, kx ascending
   within each window row, the padding-of-one masks unrolled. Accumulators are independent,
   so only each one's order (the pixels') matters. */
#define COLUMN_TAPS(m) switch (m) { \
        case 0x6u: COLUMN_TAP(1) COLUMN_TAP(2) break; \
        case 0x3u: COLUMN_TAP(0) COLUMN_TAP(1) break; \
        default: \
            if ((m) & 1u) { COLUMN_TAP(0) } \
            if ((m) & 2u) { COLUMN_TAP(1) } \
            if ((m) & 4u) { COLUMN_TAP(2) } \
            break; \
    }

/* The kx mask of an output column whose window starts at input column start. */
static inline uint8_t column_mask(int32_t start, int32_t in_w)
{
    return (uint8_t)axis_mask(start, in_w);
}

/* The columns of s; 0 when a side has more than EDGE border columns. */
static int columns(const mdy_conv_shape_t *s, columns_t *c)
{
    int32_t ox;
    interior(s->in_w, s->out_w, s->stride_w, s->pad_left, &c->lo, &c->hi);
    if (c->lo > EDGE || s->out_w - c->hi > EDGE) {
        return 0;
    }
    for (ox = 0; ox < c->lo; ++ox) {
        c->left[ox] = column_mask(ox * s->stride_w - s->pad_left, s->in_w);
    }
    for (ox = c->hi; ox < s->out_w; ++ox) {
        c->right[ox - c->hi] = column_mask(ox * s->stride_w - s->pad_left, s->in_w);
    }
    return 1;
}

/* Input row iy of x_c, or the zero row when it lies in the padding. */
static inline const float *input_row(const float *x_c, const float *zero, int32_t iy,
                                     int32_t in_h, int32_t in_w)
{
    return iy >= 0 && iy < in_h ? x_c + iy * in_w : zero;
}

/*
 * *acc += the weight gradient of dy and x_c, in raster order, the window rows outside the
 * input read from zero (a zero row of in_w floats), border columns through their kx masks.
 * A tap on a zero row adds d * 0, which leaves its accumulator unchanged: d finite makes it
 * +-0, and an accumulator that is not -0 does not change by adding +-0 (x + 0 == x for
 * x != 0, +0 + -0 == +0); it is never -0 if it is not -0 on entry, since a round-to-nearest
 * sum is -0 only when both terms are. So every accumulator takes the general loops' terms in
 * their order, bit for bit.
 */
static void weight_zero_rows(const mdy_conv_shape_t *s, const columns_t *c, const float *zero,
                             const float *dy, const float *x_c, taps_t *acc)
{
    const int32_t sw = s->stride_w, in_h = s->in_h, in_w = s->in_w, out_w = s->out_w, out_h = s->out_h;
    const int32_t lo = c->lo, hi = c->hi, pad_left = s->pad_left, sh = s->stride_h;
    const int32_t first = lo < hi ? lo * sw - pad_left : 0;
    taps_t a = *acc;
    int32_t oy, ox, o, iy = -s->pad_top;
    for (oy = 0; oy < out_h; ++oy, dy += out_w, iy += sh) {
        const float *r0 = input_row(x_c, zero, iy, in_h, in_w);
        const float *r1 = input_row(x_c, zero, iy + 1, in_h, in_w);
        const float *r2 = input_row(x_c, zero, iy + 2, in_h, in_w);
        const float *x0 = r0, *x1 = r1, *x2 = r2;
        for (ox = 0, o = -pad_left; ox < lo; ++ox, o += sw) {
            const uint32_t m = c->left[ox];
            const float d = dy[ox];
            COLUMN_TAPS(m)
        }
        x0 = r0 + first;
        x1 = r1 + first;
        x2 = r2 + first;
        for (; sw == 1 && ox + 3 <= hi; ox += 3, x0 += 3, x1 += 3, x2 += 3) {
            const float d0 = dy[ox], d1 = dy[ox + 1], d2 = dy[ox + 2];
            WEIGHT3_ROW(0);
            WEIGHT3_ROW(1);
            WEIGHT3_ROW(2);
        }
        for (; sw == 2 && ox + 2 <= hi; ox += 2, x0 += 4, x1 += 4, x2 += 4) {
            const float d0 = dy[ox], d1 = dy[ox + 1];
            WEIGHT2_ROW(0);
            WEIGHT2_ROW(1);
            WEIGHT2_ROW(2);
        }
        for (; ox < hi; ++ox, x0 += sw, x1 += sw, x2 += sw) {
            const float d = dy[ox];
            EACH_ROW(ALL, WEIGHT_REGISTERS);
        }
        x0 = r0;
        x1 = r1;
        x2 = r2;
        for (o = hi * sw - pad_left; ox < out_w; ++ox, o += sw) {
            const uint32_t m = c->right[ox - hi];
            const float d = dy[ox];
            COLUMN_TAPS(m)
        }
    }
    *acc = a;
}

/* Stride 1, interior: pixels ox .. ox + 3 (errors d0 .. d3) on window row ky, its six cells
   loaded once; each accumulator still takes the pixels in order. */
#define WEIGHT4_ROW(ky) do { \
        const float c0 = x##ky[0], c1 = x##ky[1], c2 = x##ky[2], c3 = x##ky[3]; \
        const float c4 = x##ky[4], c5 = x##ky[5]; \
        a.t[3 * ky] += d0 * c0; a.t[3 * ky] += d1 * c1; \
        a.t[3 * ky] += d2 * c2; a.t[3 * ky] += d3 * c3; \
        a.t[3 * ky + 1] += d0 * c1; a.t[3 * ky + 1] += d1 * c2; \
        a.t[3 * ky + 1] += d2 * c3; a.t[3 * ky + 1] += d3 * c4; \
        a.t[3 * ky + 2] += d0 * c2; a.t[3 * ky + 2] += d1 * c3; \
        a.t[3 * ky + 2] += d2 * c4; a.t[3 * ky + 2] += d3 * c5; \
    } while (0)

/* Stride 1, interior: pixels ox, ox + 1 on window row ky, its four cells loaded once. */
#define WEIGHT_PAIR_ROW(ky) do { \
        const float c0 = x##ky[0], c1 = x##ky[1], c2 = x##ky[2], c3 = x##ky[3]; \
        a.t[3 * ky] += d0 * c0; a.t[3 * ky] += d1 * c1; \
        a.t[3 * ky + 1] += d0 * c1; a.t[3 * ky + 1] += d1 * c2; \
        a.t[3 * ky + 2] += d0 * c2; a.t[3 * ky + 2] += d1 * c3; \
    } while (0)

/* Rows of four output pixels with a padding of one column per side (stride 1: windows from
   input column -1, four input cells c0 .. c3), or stride 2 (eight cells c0 .. c7) padded on
   the right only (windows from column 0: ROW4 1) or on the left only (from column -1: ROW4 2,
   the *_2L blocks): whole rows unrolled, each window row's cells loaded once. */
#define ROW4(SW, out_w, lo, hi) \
    ((out_w) != 4 ? 0 : (SW) == 1 ? (lo) == 1 && (hi) == 3 \
     : (lo) == 0 && (hi) == 3 ? 1 : (lo) == 1 && (hi) == 4 ? 2 : 0)

/* Forward, window row ky (cells r##ky, weights w0 .. w2) into pixels a0 .. a3, each pixel's
   taps kx ascending. */
#define FORWARD_ROW4_1(ky) do { \
        const float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        a0 += c0 * w1; a0 += c1 * w2; \
        a1 += c0 * w0; a1 += c1 * w1; a1 += c2 * w2; \
        a2 += c1 * w0; a2 += c2 * w1; a2 += c3 * w2; \
        a3 += c2 * w0; a3 += c3 * w1; \
    } while (0)
#define FORWARD_ROW4_2(ky) do { \
        const float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        const float c4 = r##ky[4], c5 = r##ky[5], c6 = r##ky[6], c7 = r##ky[7]; \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        a0 += c0 * w0; a0 += c1 * w1; a0 += c2 * w2; \
        a1 += c2 * w0; a1 += c3 * w1; a1 += c4 * w2; \
        a2 += c4 * w0; a2 += c5 * w1; a2 += c6 * w2; \
        a3 += c6 * w0; a3 += c7 * w1; \
    } while (0)

#define FORWARD_ROW4_2L(ky) do { \
        const float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        const float c4 = r##ky[4], c5 = r##ky[5], c6 = r##ky[6], c7 = r##ky[7]; \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        a0 += c0 * w1; a0 += c1 * w2; \
        a1 += c1 * w0; a1 += c2 * w1; a1 += c3 * w2; \
        a2 += c3 * w0; a2 += c4 * w1; a2 += c5 * w2; \
        a3 += c5 * w0; a3 += c6 * w1; a3 += c7 * w2; \
    } while (0)

/* Weight gradient, window row ky: pixels d0 .. d3 onto its three accumulators, each taking
   the pixels in order. */
#define WEIGHT_ROW4_1(ky) do { \
        const float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        a.t[3 * ky] += d1 * c0; a.t[3 * ky] += d2 * c1; a.t[3 * ky] += d3 * c2; \
        a.t[3 * ky + 1] += d0 * c0; a.t[3 * ky + 1] += d1 * c1; \
        a.t[3 * ky + 1] += d2 * c2; a.t[3 * ky + 1] += d3 * c3; \
        a.t[3 * ky + 2] += d0 * c1; a.t[3 * ky + 2] += d1 * c2; a.t[3 * ky + 2] += d2 * c3; \
    } while (0)
#define WEIGHT_ROW4_2(ky) do { \
        const float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        const float c4 = r##ky[4], c5 = r##ky[5], c6 = r##ky[6], c7 = r##ky[7]; \
        a.t[3 * ky] += d0 * c0; a.t[3 * ky] += d1 * c2; \
        a.t[3 * ky] += d2 * c4; a.t[3 * ky] += d3 * c6; \
        a.t[3 * ky + 1] += d0 * c1; a.t[3 * ky + 1] += d1 * c3; \
        a.t[3 * ky + 1] += d2 * c5; a.t[3 * ky + 1] += d3 * c7; \
        a.t[3 * ky + 2] += d0 * c2; a.t[3 * ky + 2] += d1 * c4; a.t[3 * ky + 2] += d2 * c6; \
    } while (0)

#define WEIGHT_ROW4_2L(ky) do { \
        const float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        const float c4 = r##ky[4], c5 = r##ky[5], c6 = r##ky[6], c7 = r##ky[7]; \
        a.t[3 * ky] += d1 * c1; a.t[3 * ky] += d2 * c3; a.t[3 * ky] += d3 * c5; \
        a.t[3 * ky + 1] += d0 * c0; a.t[3 * ky + 1] += d1 * c2; \
        a.t[3 * ky + 1] += d2 * c4; a.t[3 * ky + 1] += d3 * c6; \
        a.t[3 * ky + 2] += d0 * c1; a.t[3 * ky + 2] += d1 * c3; \
        a.t[3 * ky + 2] += d2 * c5; a.t[3 * ky + 2] += d3 * c7; \
    } while (0)

/* Input error (stride 2), window row ky: the scatter of pixels d0 .. d3 into its eight cells,
   each cell taking the pixels in order. */
#define INPUT_ROW4_2(ky) do { \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        float c4 = r##ky[4], c5 = r##ky[5], c6 = r##ky[6], c7 = r##ky[7]; \
        c0 += d0 * w0; c1 += d0 * w1; c2 += d0 * w2; \
        c2 += d1 * w0; c3 += d1 * w1; c4 += d1 * w2; \
        c4 += d2 * w0; c5 += d2 * w1; c6 += d2 * w2; \
        c6 += d3 * w0; c7 += d3 * w1; \
        r##ky[0] = c0; r##ky[1] = c1; r##ky[2] = c2; r##ky[3] = c3; \
        r##ky[4] = c4; r##ky[5] = c5; r##ky[6] = c6; r##ky[7] = c7; \
    } while (0)
#define INPUT_ROW4_2L(ky) do { \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        float c0 = r##ky[0], c1 = r##ky[1], c2 = r##ky[2], c3 = r##ky[3]; \
        float c4 = r##ky[4], c5 = r##ky[5], c6 = r##ky[6], c7 = r##ky[7]; \
        c0 += d0 * w1; c1 += d0 * w2; \
        c1 += d1 * w0; c2 += d1 * w1; c3 += d1 * w2; \
        c3 += d2 * w0; c4 += d2 * w1; c5 += d2 * w2; \
        c5 += d3 * w0; c6 += d3 * w1; c7 += d3 * w2; \
        r##ky[0] = c0; r##ky[1] = c1; r##ky[2] = c2; r##ky[3] = c3; \
        r##ky[4] = c4; r##ky[5] = c5; r##ky[6] = c6; r##ky[7] = c7; \
    } while (0)

/* The selected channels of a multi-channel weight gradient (mdy_conv3x3_backward_weights). */
typedef struct {
    const float *dy;
    uint32_t n;
    const uint16_t *channels;
    uint32_t first_channel;
    float *pool;
    const uint32_t *offsets;
    uint32_t x_offset;
} slots_t;

/* For each output channel m of each selected slot j: its nine gradients in registers (a),
   its error map dy_m and input map x_c, then the statements given. */
#define EACH_SLOT(s, job, ...) do { \
        const int32_t cpg_ = (s)->in_c / (s)->groups, opg_ = (s)->out_c / (s)->groups; \
        const int32_t out_hw_ = (s)->out_h * (s)->out_w; \
        uint32_t j_; \
        int32_t m_; \
        for (j_ = 0; j_ < (job)->n; ++j_) { \
            const int32_t ch_ = (int32_t)((job)->channels[j_] - (job)->first_channel); \
            float *slot_ = (job)->pool + (job)->offsets[j_]; \
            const float *x_c = slot_ + (job)->x_offset; \
            const float *dy_m = (job)->dy + (ch_ / cpg_) * opg_ * out_hw_; \
            for (m_ = 0; m_ < opg_; ++m_, slot_ += K * K, dy_m += out_hw_) { \
                taps_t a; \
                load_taps(&a, slot_); \
                __VA_ARGS__ \
                store_taps(&a, slot_); \
            } \
        } \
    } while (0)

/*
 * weight_zero_rows over every slot for a padding of at most one column per side (lo <= 1 with
 * the left mask kx 1, 2; at most one right border column, with kx 0, 1), the column stride a
 * constant SW (1 or 2): the border pixels unrolled, the interior in blocks of 4, 2 and 1
 * pixels (stride 1) or 2 and 1 (stride 2); the row setup computed once per call.
 */
#define WEIGHT_EDGES(name, SW) \
static void name(const mdy_conv_shape_t *s, const slots_t *job, int32_t lo, int32_t hi, \
                 const float *zero) \
{ \
    const int32_t in_h = s->in_h, in_w = s->in_w, out_w = s->out_w, sh = s->stride_h; \
    const int32_t out_h = s->out_h, top = -s->pad_top; \
    const int32_t first = lo < hi ? lo * SW - s->pad_left : 0, o = hi * SW - s->pad_left; \
    const int right = hi < out_w, row4 = ROW4(SW, out_w, lo, hi); \
    EACH_SLOT(s, job, { \
        const float *dy = dy_m; \
        int32_t oy, ox, iy = top; \
        for (oy = 0; oy < out_h; ++oy, dy += out_w, iy += sh) { \
            const float *r0 = input_row(x_c, zero, iy, in_h, in_w); \
            const float *r1 = input_row(x_c, zero, iy + 1, in_h, in_w); \
            const float *r2 = input_row(x_c, zero, iy + 2, in_h, in_w); \
            const float *x0 = r0 + first, *x1 = r1 + first, *x2 = r2 + first; \
            if (row4) { \
                const float d0 = dy[0], d1 = dy[1], d2 = dy[2], d3 = dy[3]; \
                if (row4 == 1) { \
                    WEIGHT_ROW4_##SW(0); \
                    WEIGHT_ROW4_##SW(1); \
                    WEIGHT_ROW4_##SW(2); \
                } else { \
                    WEIGHT_ROW4_2L(0); \
                    WEIGHT_ROW4_2L(1); \
                    WEIGHT_ROW4_2L(2); \
                } \
                continue; \
            } \
            if (lo) { \
                const float d = dy[0]; \
                a.t[1] += d * r0[0]; a.t[2] += d * r0[1]; \
                a.t[4] += d * r1[0]; a.t[5] += d * r1[1]; \
                a.t[7] += d * r2[0]; a.t[8] += d * r2[1]; \
            } \
            ox = lo; \
            for (; SW == 1 && ox + 4 <= hi; ox += 4, x0 += 4, x1 += 4, x2 += 4) { \
                const float d0 = dy[ox], d1 = dy[ox + 1], d2 = dy[ox + 2], d3 = dy[ox + 3]; \
                WEIGHT4_ROW(0); \
                WEIGHT4_ROW(1); \
                WEIGHT4_ROW(2); \
            } \
            if (SW == 1 && ox + 2 <= hi) { \
                const float d0 = dy[ox], d1 = dy[ox + 1]; \
                WEIGHT_PAIR_ROW(0); \
                WEIGHT_PAIR_ROW(1); \
                WEIGHT_PAIR_ROW(2); \
                ox += 2; x0 += 2; x1 += 2; x2 += 2; \
            } \
            for (; SW == 2 && ox + 2 <= hi; ox += 2, x0 += 4, x1 += 4, x2 += 4) { \
                const float d0 = dy[ox], d1 = dy[ox + 1]; \
                WEIGHT2_ROW(0); \
                WEIGHT2_ROW(1); \
                WEIGHT2_ROW(2); \
            } \
            if (ox < hi) { \
                const float d = dy[ox]; \
                EACH_ROW(ALL, WEIGHT_REGISTERS); \
            } \
            if (right) { \
                const float d = dy[hi]; \
                a.t[0] += d * r0[o]; a.t[1] += d * r0[o + 1]; \
                a.t[3] += d * r1[o]; a.t[4] += d * r1[o + 1]; \
                a.t[6] += d * r2[o]; a.t[7] += d * r2[o + 1]; \
            } \
        } \
    }); \
}
WEIGHT_EDGES(weight_edges_1, 1)
WEIGHT_EDGES(weight_edges_2, 2)

static int edges(const mdy_conv_shape_t *s, columns_t *c);

int mdy_conv3x3_backward_weights(const mdy_conv_shape_t *s, const float *dy, uint32_t n,
                                 const uint16_t *channels, uint32_t first_channel, float *pool,
                                 const uint32_t *offsets, uint32_t x_offset)
{
    const slots_t job = {dy, n, channels, first_channel, pool, offsets, x_offset};
    const float *zero = zero_row;
    columns_t c;
    if (!FAST_PATHS || s->k_h != K || s->k_w != K || s->in_w > ZERO_ROW || !columns(s, &c)) {
        return 0;
    }
    if (edges(s, &c)) {
        if (s->stride_w == 1) {
            weight_edges_1(s, &job, c.lo, c.hi, zero);
        } else {
            weight_edges_2(s, &job, c.lo, c.hi, zero);
        }
    } else {
        EACH_SLOT(s, &job, weight_zero_rows(s, &c, zero, dy_m, x_c, &a););
    }
    return 1;
}

/* 1 when v is -0. */
static inline int negative_zero(float v)
{
    return v == 0.0f && 1.0f / v < 0.0f;
}

/* 1 when the nine taps of w_c are finite (then 0 * w is +-0). */
static inline int finite_taps(const float *w_c)
{
    float z = w_c[0] * 0.0f;
    z += w_c[1] * 0.0f;
    z += w_c[2] * 0.0f;
    z += w_c[3] * 0.0f;
    z += w_c[4] * 0.0f;
    z += w_c[5] * 0.0f;
    z += w_c[6] * 0.0f;
    z += w_c[7] * 0.0f;
    z += w_c[8] * 0.0f;
    return z == 0.0f;
}

/*
 * The depthwise forward with a padding of at most one column per side (as WEIGHT_EDGES), the
 * column stride a constant SW: window rows in the padding read from a zero row, border pixels
 * unrolled, the interior in blocks. A zero row's tap adds x * w = +-0 (w finite) to a sum that
 * started at a bias other than -0, so is never -0 (a round-to-nearest sum is -0 only when both
 * terms are), which leaves it unchanged: every pixel takes the general loops' terms in their
 * order, bit for bit. A channel whose bias is -0 or whose filter is not finite runs by plan p.
 */
#define FORWARD_EDGES(name, SW) \
static void name(const mdy_conv_shape_t *s, const plan_t *p, int32_t lo, int32_t hi, \
                 const float *zero, const float *x, const float *w, const float *b, float *y, \
                 int rotated) \
{ \
    const int32_t in_h = s->in_h, in_w = s->in_w, out_w = s->out_w, sh = s->stride_h; \
    const int32_t out_h = s->out_h, top = -s->pad_top, in_hw = in_h * in_w; \
    const int32_t first = lo < hi ? lo * SW - s->pad_left : 0, o = hi * SW - s->pad_left; \
    const int right = hi < out_w, row4 = ROW4(SW, out_w, lo, hi); \
    int32_t ch; \
    for (ch = 0; ch < s->out_c; ++ch, x += in_hw, w += K * K) { \
        const float bias = b != NULL ? b[ch] : 0.0f; \
        taps_t f; \
        int32_t oy, ox, iy = top; \
        if (negative_zero(bias) || !finite_taps(w)) { \
            forward_channel(s, p, x, w, bias, y, rotated); \
            y += out_h * out_w; \
            continue; \
        } \
        if (rotated) { \
            load_rotated(&f, w); \
        } else { \
            load_taps(&f, w); \
        } \
        for (oy = 0; oy < out_h; ++oy, y += out_w, iy += sh) { \
            const float *r0 = input_row(x, zero, iy, in_h, in_w); \
            const float *r1 = input_row(x, zero, iy + 1, in_h, in_w); \
            const float *r2 = input_row(x, zero, iy + 2, in_h, in_w); \
            const float *x0 = r0 + first, *x1 = r1 + first, *x2 = r2 + first; \
            if (row4) { \
                float a0 = bias, a1 = bias, a2 = bias, a3 = bias; \
                if (row4 == 1) { \
                    FORWARD_ROW4_##SW(0); \
                    FORWARD_ROW4_##SW(1); \
                    FORWARD_ROW4_##SW(2); \
                } else { \
                    FORWARD_ROW4_2L(0); \
                    FORWARD_ROW4_2L(1); \
                    FORWARD_ROW4_2L(2); \
                } \
                y[0] = a0; \
                y[1] = a1; \
                y[2] = a2; \
                y[3] = a3; \
                continue; \
            } \
            if (lo) { \
                float acc = bias; \
                acc += r0[0] * f.t[1]; acc += r0[1] * f.t[2]; \
                acc += r1[0] * f.t[4]; acc += r1[1] * f.t[5]; \
                acc += r2[0] * f.t[7]; acc += r2[1] * f.t[8]; \
                y[0] = acc; \
            } \
            ox = lo; \
            for (; SW == 1 && ox + 3 <= hi; ox += 3, x0 += 3, x1 += 3, x2 += 3) { \
                float a0 = bias, a1 = bias, a2 = bias; \
                FORWARD3_ROW(0); \
                FORWARD3_ROW(1); \
                FORWARD3_ROW(2); \
                y[ox] = a0; \
                y[ox + 1] = a1; \
                y[ox + 2] = a2; \
            } \
            for (; SW == 2 && ox + 2 <= hi; ox += 2, x0 += 4, x1 += 4, x2 += 4) { \
                float a0 = bias, a1 = bias; \
                FORWARD2_ROW(0); \
                FORWARD2_ROW(1); \
                FORWARD2_ROW(2); \
                y[ox] = a0; \
                y[ox + 1] = a1; \
            } \
            for (; ox < hi; ++ox, x0 += SW, x1 += SW, x2 += SW) { \
                float acc = bias; \
                EACH_ROW(ALL, FORWARD_REGISTERS); \
                y[ox] = acc; \
            } \
            if (right) { \
                float acc = bias; \
                acc += r0[o] * f.t[0]; acc += r0[o + 1] * f.t[1]; \
                acc += r1[o] * f.t[3]; acc += r1[o + 1] * f.t[4]; \
                acc += r2[o] * f.t[6]; acc += r2[o + 1] * f.t[7]; \
                y[hi] = acc; \
            } \
        } \
    } \
}
FORWARD_EDGES(forward_edges_1, 1)
FORWARD_EDGES(forward_edges_2, 2)

/* The shapes of WEIGHT_EDGES: stride 1 or 2, at most one border column per side, masks of a
   padding of one; c their columns. */
static int edges(const mdy_conv_shape_t *s, columns_t *c)
{
    return s->k_h == K && s->k_w == K && s->in_w <= ZERO_ROW && columns(s, c) && c->lo <= 1
        && s->out_w - c->hi <= 1 && (c->lo == 0 || c->left[0] == 0x6u)
        && (c->hi == s->out_w || c->right[0] == 0x3u)
        && (s->stride_w == 1 || s->stride_w == 2);
}

/* The depthwise forward by FORWARD_EDGES (the filters rotated: rotated); 0, touching nothing,
   for other shapes. */
static int forward_edges(const mdy_conv_shape_t *s, const plan_t *p, const float *x,
                         const float *w, const float *b, float *y, int rotated)
{
    columns_t c;
    if (!edges(s, &c)) {
        return 0;
    }
    if (s->stride_w == 1) {
        forward_edges_1(s, p, c.lo, c.hi, zero_row, x, w, b, y, rotated);
    } else {
        forward_edges_2(s, p, c.lo, c.hi, zero_row, x, w, b, y, rotated);
    }
    return 1;
}

/* Input row iy of dx_c, or the trash row (whose sums are discarded) when it lies in the
   padding. */
static inline float *output_row(float *dx_c, float *trash, int32_t iy, int32_t in_h,
                                int32_t in_w)
{
    return iy >= 0 && iy < in_h ? dx_c + iy * in_w : trash;
}

/*
 * The stride-2 depthwise input error with a padding of at most one column per side (as
 * WEIGHT_EDGES): the scatter in raster order, window rows in the padding written to a trash
 * row, border pixels unrolled, the interior in blocks of two pixels. Every cell of dx takes
 * the same terms in the same order as in the general loops: the same bits, with no condition.
 */
/* The columns of a stride-2 row of input_edges_2: interior [lo, hi), the offset first of
   pixel lo's window, o of the right border pixel's (right: one), row4 (ROW4). */
typedef struct {
    int32_t lo, hi, first, o, right, row4, out_w;
} edge_row_t;

/* One output row (errors dy) scattered into window rows r0 .. r2 (the terms added onto them). */
#define SCATTER_ROW2(dy, r0, r1, r2) do { \
    const int32_t lo = e.lo, hi = e.hi, o = e.o; \
    float *dx0 = r0 + e.first, *dx1 = r1 + e.first, *dx2 = r2 + e.first; \
    int32_t ox; \
    if (e.row4) { \
        const float d0 = dy[0], d1 = dy[1], d2 = dy[2], d3 = dy[3]; \
        if (e.row4 == 1) { \
            INPUT_ROW4_2(0); \
            INPUT_ROW4_2(1); \
            INPUT_ROW4_2(2); \
        } else { \
            INPUT_ROW4_2L(0); \
            INPUT_ROW4_2L(1); \
            INPUT_ROW4_2L(2); \
        } \
    } else { \
    if (lo) { \
        const float d = dy[0]; \
        r0[0] += d * f.t[1]; r0[1] += d * f.t[2]; \
        r1[0] += d * f.t[4]; r1[1] += d * f.t[5]; \
        r2[0] += d * f.t[7]; r2[1] += d * f.t[8]; \
    } \
    for (ox = lo; ox + 2 <= hi; ox += 2, dx0 += 4, dx1 += 4, dx2 += 4) { \
        const float d0 = dy[ox], d1 = dy[ox + 1]; \
        INPUT2_ROW(0); \
        INPUT2_ROW(1); \
        INPUT2_ROW(2); \
    } \
    for (; ox < hi; ++ox, dx0 += 2, dx1 += 2, dx2 += 2) { \
        const float d = dy[ox]; \
        EACH_ROW(ALL, INPUT_REGISTERS); \
    } \
    if (e.right) { \
        const float d = dy[hi]; \
        r0[o] += d * f.t[0]; r0[o + 1] += d * f.t[1]; \
        r1[o] += d * f.t[3]; r1[o + 1] += d * f.t[4]; \
        r2[o] += d * f.t[6]; r2[o + 1] += d * f.t[7]; \
    } \
    } \
    } while (0)

/* Window row ky (cells dx##ky, carry k##ky: the sum of its first cell so far) of a row no
   earlier pixel touched: its other cells start at +0, as zeroed. */
#define INPUT2_FRESH(ky) do { \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        float c0 = k##ky, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f, c4 = 0.0f; \
        c0 += d0 * w0; c1 += d0 * w1; c2 += d0 * w2; \
        c2 += d1 * w0; c3 += d1 * w1; c4 += d1 * w2; \
        dx##ky[0] = c0; dx##ky[1] = c1; dx##ky[2] = c2; dx##ky[3] = c3; k##ky = c4; \
    } while (0)
#define INPUT1_FRESH(ky) do { \
        float c0 = k##ky, c1 = 0.0f, c2 = 0.0f; \
        c0 += d * f.t[3 * ky]; c1 += d * f.t[3 * ky + 1]; c2 += d * f.t[3 * ky + 2]; \
        dx##ky[0] = c0; dx##ky[1] = c1; k##ky = c2; \
    } while (0)

/* INPUT_ROW4_2 / INPUT_ROW4_2L on a row no earlier pixel touched: cells start at +0. */
#define INPUT_ROW4_FRESH(ky, row4) do { \
        const float w0 = f.t[3 * ky], w1 = f.t[3 * ky + 1], w2 = f.t[3 * ky + 2]; \
        float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f, c4 = 0.0f, c5 = 0.0f, c6 = 0.0f; \
        float c7 = 0.0f; \
        if (row4 == 1) { \
            c0 += d0 * w0; c1 += d0 * w1; c2 += d0 * w2; \
            c2 += d1 * w0; c3 += d1 * w1; c4 += d1 * w2; \
            c4 += d2 * w0; c5 += d2 * w1; c6 += d2 * w2; \
            c6 += d3 * w0; c7 += d3 * w1; \
        } else { \
            c0 += d0 * w1; c1 += d0 * w2; \
            c1 += d1 * w0; c2 += d1 * w1; c3 += d1 * w2; \
            c3 += d2 * w0; c4 += d2 * w1; c5 += d2 * w2; \
            c5 += d3 * w0; c6 += d3 * w1; c7 += d3 * w2; \
        } \
        r##ky[0] = c0; r##ky[1] = c1; r##ky[2] = c2; r##ky[3] = c3; \
        r##ky[4] = c4; r##ky[5] = c5; r##ky[6] = c6; r##ky[7] = c7; \
    } while (0)

/*
 * One output row scattered into r0 (added onto) and r1, r2 (rows no earlier pixel touched:
 * written, each cell's sum started at +0 as if zeroed, its later terms kept in a register,
 * cells no window reaches set to +0); in_w cells per row.
 */
#define FRESH_ROW2(dy, r0, r1, r2) do { \
    const int32_t lo = e.lo, hi = e.hi, o = e.o; \
    float *dx0 = r0 + e.first, *dx1 = r1 + e.first, *dx2 = r2 + e.first; \
    float k1 = 0.0f, k2 = 0.0f; \
    int32_t ox, end; \
    if (e.row4) { \
        const float d0 = dy[0], d1 = dy[1], d2 = dy[2], d3 = dy[3]; \
        if (e.row4 == 1) { \
            INPUT_ROW4_2(0); \
        } else { \
            INPUT_ROW4_2L(0); \
        } \
        INPUT_ROW4_FRESH(1, e.row4); \
        INPUT_ROW4_FRESH(2, e.row4); \
        end = 8; \
    } else { \
        if (lo) { \
            const float d = dy[0]; \
            r0[0] += d * f.t[1]; r0[1] += d * f.t[2]; \
            r1[0] = 0.0f + d * f.t[4]; k1 = 0.0f + d * f.t[5]; \
            r2[0] = 0.0f + d * f.t[7]; k2 = 0.0f + d * f.t[8]; \
        } \
        for (ox = lo; ox + 2 <= hi; ox += 2, dx0 += 4, dx1 += 4, dx2 += 4) { \
            const float d0 = dy[ox], d1 = dy[ox + 1]; \
            INPUT2_ROW(0); \
            INPUT2_FRESH(1); \
            INPUT2_FRESH(2); \
        } \
        for (; ox < hi; ++ox, dx0 += 2, dx1 += 2, dx2 += 2) { \
            const float d = dy[ox]; \
            dx0[0] += d * f.t[0]; dx0[1] += d * f.t[1]; dx0[2] += d * f.t[2]; \
            INPUT1_FRESH(1); \
            INPUT1_FRESH(2); \
        } \
        if (e.right) { \
            const float d = dy[hi]; \
            r0[o] += d * f.t[0]; r0[o + 1] += d * f.t[1]; \
            r1[o] = k1 + d * f.t[3]; r1[o + 1] = 0.0f + d * f.t[4]; \
            r2[o] = k2 + d * f.t[6]; r2[o + 1] = 0.0f + d * f.t[7]; \
            end = o + 2; \
        } else {  /* column 2 of the last pixel, at o */ \
            end = 0; \
            if (hi > 0 && o >= 0 && o < in_w) { \
                r1[o] = k1; \
                r2[o] = k2; \
                end = o + 1; \
            } \
        } \
    } \
    for (; end < in_w; ++end) { \
        r1[end] = 0.0f; \
        r2[end] = 0.0f; \
    } \
    } while (0)

static void input_edges_2(const mdy_conv_shape_t *s, int32_t lo, int32_t hi, float *trash,
                          const float *dy, const float *w, float *dx)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_w = s->out_w, sh = s->stride_h;
    const int32_t out_h = s->out_h, top = -s->pad_top, in_hw = in_h * in_w;
    const int32_t first = lo < hi ? lo * 2 - s->pad_left : 0, o = hi * 2 - s->pad_left;
    const int right = hi < out_w, row4 = ROW4(2, out_w, lo, hi);
    int32_t ch;
    for (ch = 0; ch < s->out_c; ++ch, dx += in_hw, w += K * K) {
        taps_t f;
        int32_t oy, ox, iy = top;
        load_taps(&f, w);
        for (oy = 0; oy < out_h; ++oy, dy += out_w, iy += sh) {
            float *r0 = output_row(dx, trash, iy, in_h, in_w);
            float *r1 = output_row(dx, trash, iy + 1, in_h, in_w);
            float *r2 = output_row(dx, trash, iy + 2, in_h, in_w);
            float *dx0 = r0 + first, *dx1 = r1 + first, *dx2 = r2 + first;
            if (row4) {
                const float d0 = dy[0], d1 = dy[1], d2 = dy[2], d3 = dy[3];
                if (row4 == 1) {
                    INPUT_ROW4_2(0);
                    INPUT_ROW4_2(1);
                    INPUT_ROW4_2(2);
                } else {
                    INPUT_ROW4_2L(0);
                    INPUT_ROW4_2L(1);
                    INPUT_ROW4_2L(2);
                }
                continue;
            }
            if (lo) {
                const float d = dy[0];
                r0[0] += d * f.t[1]; r0[1] += d * f.t[2];
                r1[0] += d * f.t[4]; r1[1] += d * f.t[5];
                r2[0] += d * f.t[7]; r2[1] += d * f.t[8];
            }
            for (ox = lo; ox + 2 <= hi; ox += 2, dx0 += 4, dx1 += 4, dx2 += 4) {
                const float d0 = dy[ox], d1 = dy[ox + 1];
                INPUT2_ROW(0);
                INPUT2_ROW(1);
                INPUT2_ROW(2);
            }
            for (; ox < hi; ++ox, dx0 += 2, dx1 += 2, dx2 += 2) {
                const float d = dy[ox];
                EACH_ROW(ALL, INPUT_REGISTERS);
            }
            if (right) {
                const float d = dy[hi];
                r0[o] += d * f.t[0]; r0[o + 1] += d * f.t[1];
                r1[o] += d * f.t[3]; r1[o + 1] += d * f.t[4];
                r2[o] += d * f.t[6]; r2[o + 1] += d * f.t[7];
            }
        }
    }
}

static void zero_cells(float *v, int32_t n);

static void input_fresh_2(const mdy_conv_shape_t *s, const edge_row_t *edge, float *trash,
                          const float *dy, const float *w, float *dx)
{
    const int fresh = 1;
    const edge_row_t e = *edge;
    const int32_t in_h = s->in_h, in_w = s->in_w, out_w = s->out_w, sh = s->stride_h;
    const int32_t out_h = s->out_h, top = -s->pad_top, in_hw = in_h * in_w;
    int32_t ch, i;
    for (ch = 0; ch < s->out_c; ++ch, dx += in_hw, w += K * K) {
        taps_t f;
        int32_t oy, iy = top;
        load_taps(&f, w);
        for (oy = 0; oy < out_h; ++oy, dy += out_w, iy += sh) {
            float *r0 = output_row(dx, trash, iy, in_h, in_w);
            float *r1 = output_row(dx, trash, iy + 1, in_h, in_w);
            float *r2 = output_row(dx, trash, iy + 2, in_h, in_w);
            if (fresh && (oy > 0 || iy < 0) && iy + 2 < in_h) {  /* r0 added onto, r1, r2 new */
                FRESH_ROW2(dy, r0, r1, r2);
                continue;
            }
            if (fresh) {  /* the first row, or rows past the map: zero the new ones first */
                for (i = oy == 0 ? 0 : 1; i < K; ++i) {
                    if (iy + i >= 0 && iy + i < in_h) {
                        zero_cells(dx + (iy + i) * in_w, in_w);
                    }
                }
            }
            SCATTER_ROW2(dy, r0, r1, r2);
        }
        for (iy += 1; fresh && iy < in_h; ++iy) {  /* rows past every window */
            if (iy >= 0) {
                zero_cells(dx + iy * in_w, in_w);
            }
        }
    }
}

/* input_fresh_2 for rows of four pixels (ROW4 row4): each regular output row adds onto its
   first window row and writes the two new ones whole (eight cells, the rest of a row +0). */
static void input_fresh4_2(const mdy_conv_shape_t *s, int32_t row4, float *trash,
                           const float *dy, const float *w, float *dx)
{
    const int32_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, in_hw = in_h * in_w;
    int32_t ch, i;
    for (ch = 0; ch < s->out_c; ++ch, dx += in_hw, w += K * K) {
        taps_t f;
        int32_t oy, iy = -s->pad_top;
        load_taps(&f, w);
        for (oy = 0; oy < out_h; ++oy, dy += 4, iy += 2) {
            float *r0 = output_row(dx, trash, iy, in_h, in_w);
            float *r1 = output_row(dx, trash, iy + 1, in_h, in_w);
            float *r2 = output_row(dx, trash, iy + 2, in_h, in_w);
            const float d0 = dy[0], d1 = dy[1], d2 = dy[2], d3 = dy[3];
            if ((oy > 0 || iy < 0) && iy + 2 < in_h) {
                if (row4 == 1) {
                    INPUT_ROW4_2(0);
                } else {
                    INPUT_ROW4_2L(0);
                }
                INPUT_ROW4_FRESH(1, row4);
                INPUT_ROW4_FRESH(2, row4);
                for (i = 8; i < in_w; ++i) {
                    r1[i] = 0.0f;
                    r2[i] = 0.0f;
                }
                continue;
            }
            for (i = oy == 0 ? 0 : 1; i < K; ++i) {
                if (iy + i >= 0 && iy + i < in_h) {
                    zero_cells(dx + (iy + i) * in_w, in_w);
                }
            }
            if (row4 == 1) {
                INPUT_ROW4_2(0);
                INPUT_ROW4_2(1);
                INPUT_ROW4_2(2);
            } else {
                INPUT_ROW4_2L(0);
                INPUT_ROW4_2L(1);
                INPUT_ROW4_2L(2);
            }
        }
        for (iy += 1; iy < in_h; ++iy) {  /* rows past every window */
            if (iy >= 0) {
                zero_cells(dx + iy * in_w, in_w);
            }
        }
    }
}

/* The cells of v (n) set to +0. */
static void zero_cells(float *v, int32_t n)
{
    int32_t i;
    for (i = 0; i + 4 <= n; i += 4) {
        v[i] = 0.0f;
        v[i + 1] = 0.0f;
        v[i + 2] = 0.0f;
        v[i + 3] = 0.0f;
    }
    for (; i < n; ++i) {
        v[i] = 0.0f;
    }
}

/* The depthwise input error by input_edges_2 (stride 2), onto dx or, fresh, overwriting it
   (each row's cells starting at +0 at their first term, as zeroing dx first); 0, touching
   nothing, for other shapes. */
static int input_edges(const mdy_conv_shape_t *s, const float *dy, const float *w, float *dx,
                       int fresh)
{
    float trash[ZERO_ROW];
    columns_t c;
    edge_row_t e;
    if (s->stride_w != 2 || (fresh && s->stride_h != 2) || !edges(s, &c)) {
        return 0;
    }
    zero_cells(trash, s->in_w);
    e.lo = c.lo;
    e.hi = c.hi;
    e.first = c.lo < c.hi ? c.lo * 2 - s->pad_left : 0;
    e.o = c.hi * 2 - s->pad_left;
    e.right = c.hi < s->out_w;
    e.out_w = s->out_w;
    e.row4 = ROW4(2, s->out_w, c.lo, c.hi);
    if (!fresh) {
        input_edges_2(s, c.lo, c.hi, trash, dy, w, dx);
    } else if (e.row4) {
        input_fresh4_2(s, e.row4, trash, dy, w, dx);
    } else {
        input_fresh_2(s, &e, trash, dy, w, dx);
    }
    return 1;
}

int mdy_conv3x3_depthwise_backward_input_fresh(const mdy_conv_shape_t *s, const float *dy,
                                               const float *w, float *dx)
{
    input_plan_t p;
    if (s->groups != s->in_c || s->out_c != s->in_c || !input_plan(s, &p)) {
        return 0;
    }
    return p.gather ? forward_edges(&p.t, &p.p, dy, w, NULL, dx, 1)
                    : input_edges(s, dy, w, dx, 1);
}
