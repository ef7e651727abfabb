/* augkd's fused augmentation kernel: every op step of every image of a uint8 RGB batch in one call.
 *
 * The batched torch functions in augkd/augment/functional.py are the reference: this file computes the same
 * bytes (and so Pillow's) one image at a time, all steps of an image while it sits in the cache, with no sort,
 * no gather and no temporary tensors. The Python side (augkd/augment/kernel.py) maps levels to arguments with
 * the op tables and precomputes everything that involves float64 trigonometry or Pillow's 16.16 fixed point,
 * so this file only does integer and float32 pixel arithmetic.
 *
 * Exactness rules (do not build with -ffast-math or FMA contraction): the enhance blends are Pillow's float32
 * (x - d) * f + d with each operation rounded on its own; every other op is integer arithmetic.
 *
 * Layout of the per-(image, step) parameters, entry e = image * steps + step:
 *   kind[e]        the op (KIND_* below), -1 = leave the image alone
 *   iarg[e * 6..]  integer arguments (see each case in apply_one)
 *   farg[e]        the enhance factor (color, contrast, brightness, sharpness)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    KIND_INVERT = 0,
    KIND_AUTOCONTRAST = 1,
    KIND_EQUALIZE = 2,
    KIND_ROTATE = 3,
    KIND_SOLARIZE = 4,
    KIND_POSTERIZE = 5,
    KIND_COLOR = 6,
    KIND_CONTRAST = 7,
    KIND_BRIGHTNESS = 8,
    KIND_SHARPNESS = 9,
    KIND_SHEAR_X = 10,
    KIND_SHEAR_Y = 11,
    KIND_TRANSLATE_X = 12,
    KIND_TRANSLATE_Y = 13,
    KIND_CUTOUT = 14,
};

#define IARGS 6

int augkd_kernel_version(void) { return 1; }

/* float32 clamped to [0, 255] and truncated: torch's clamp_ then float -> int16 -> uint8. */
static inline uint8_t store_floor(float v) {
    if (v < 0.0f) v = 0.0f;
    if (v > 255.0f) v = 255.0f;
    return (uint8_t)(int)v;
}

/* Pillow's convert("L"): (19595 R + 38470 G + 7471 B + 0x8000) >> 16. */
static inline int luma(int r, int g, int b) { return (19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16; }

static inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : (v > hi ? hi : v); }

static void apply_lut(uint8_t *plane, int64_t n, const uint8_t *lut) {
    for (int64_t i = 0; i < n; i++) plane[i] = lut[plane[i]];
}

static void autocontrast(uint8_t *img, int c, int64_t hw) {
    uint8_t lut[256];
    for (int ch = 0; ch < c; ch++) {
        uint8_t *p = img + ch * hw;
        int lo = 255, hi = 0;
        for (int64_t i = 0; i < hw; i++) {
            if (p[i] < lo) lo = p[i];
            if (p[i] > hi) hi = p[i];
        }
        if (hi <= lo) continue;
        double scale = 255.0 / (double)(hi - lo);
        double offset = -(double)lo * scale;
        for (int v = 0; v < 256; v++) {
            double t = (double)v * scale;
            t = t + offset;
            int64_t q = (int64_t)t; /* trunc */
            lut[v] = (uint8_t)clamp64(q, 0, 255);
        }
        apply_lut(p, hw, lut);
    }
}

static void equalize(uint8_t *img, int c, int64_t hw) {
    int64_t hist[256];
    uint8_t lut[256];
    for (int ch = 0; ch < c; ch++) {
        uint8_t *p = img + ch * hw;
        memset(hist, 0, sizeof hist);
        for (int64_t i = 0; i < hw; i++) hist[p[i]]++;
        int last = 255;
        while (last > 0 && hist[last] == 0) last--;
        int64_t step = (hw - hist[last]) / 255;
        if (step == 0) continue;
        int64_t before = step / 2;
        for (int v = 0; v < 256; v++) {
            int64_t q = before / step;
            lut[v] = (uint8_t)(q > 255 ? 255 : q);
            before += hist[v];
        }
        apply_lut(p, hw, lut);
    }
}

/* Image.blend(degenerate, image, f) for RGB: out = (x - d) * f + d in float32, d = 0 (brightness), the pixel's
 * luma (color) or the image's mean luma (contrast). */
static void blend_brightness(uint8_t *img, int c, int64_t hw, float f) {
    for (int64_t i = 0; i < c * hw; i++) img[i] = store_floor((float)img[i] * f);
}

static void blend_color(uint8_t *img, int64_t hw, float f) {
    uint8_t *r = img, *g = img + hw, *b = img + 2 * hw;
    for (int64_t i = 0; i < hw; i++) {
        int l = luma(r[i], g[i], b[i]);
        float d = (float)l;
        r[i] = store_floor((float)(r[i] - l) * f + d);
        g[i] = store_floor((float)(g[i] - l) * f + d);
        b[i] = store_floor((float)(b[i] - l) * f + d);
    }
}

static void blend_contrast(uint8_t *img, int64_t hw, float f) {
    uint8_t *r = img, *g = img + hw, *b = img + 2 * hw;
    int64_t sum = 0;
    for (int64_t i = 0; i < hw; i++) sum += luma(r[i], g[i], b[i]);
    int mean = (int)((2 * sum + hw) / (2 * hw)); /* int(mean + 0.5) */
    float d = (float)mean;
    for (int64_t i = 0; i < 3 * hw; i++) img[i] = store_floor((float)(img[i] - mean) * f + d);
}

/* ImageEnhance.Sharpness: blend with the SMOOTH filter (3x3 of ones, 5 in the middle, / 13, rounded); the
 * one-pixel border is left as is. round(S / 13) = (S + 6) / 13 exactly: 13 is odd, so there is no tie. */
static void sharpness(uint8_t *img, uint8_t *src, int c, int h, int w, float f) {
    if (h < 3 || w < 3) return;
    int64_t hw = (int64_t)h * w;
    memcpy(src, img, (size_t)(c * hw));
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *s = src + ch * hw;
        uint8_t *o = img + ch * hw;
        for (int y = 1; y < h - 1; y++) {
            const uint8_t *up = s + (int64_t)(y - 1) * w, *mid = s + (int64_t)y * w, *down = s + (int64_t)(y + 1) * w;
            for (int x = 1; x < w - 1; x++) {
                int sum = up[x - 1] + up[x] + up[x + 1] + mid[x - 1] + 5 * mid[x] + mid[x + 1] + down[x - 1] +
                          down[x] + down[x + 1];
                int smooth = (sum + 6) / 13;
                o[(int64_t)y * w + x] = store_floor((float)(mid[x] - smooth) * f + (float)smooth);
            }
        }
    }
}

/* out[y][x] = in[y][x + shift(y)], fill outside; shift(y) = clamp((base + y * step) >> 16, -w, w). A translate
 * is the same with step 0 and the shift in base (already clamped). */
static void shift_rows(uint8_t *img, uint8_t *src, int c, int h, int w, int64_t base, int64_t step, int fixed,
                       uint8_t fill) {
    int64_t hw = (int64_t)h * w;
    memcpy(src, img, (size_t)(c * hw));
    for (int y = 0; y < h; y++) {
        int64_t s = fixed ? clamp64((base + (int64_t)y * step) >> 16, -w, w) : base;
        int64_t lo = s < 0 ? -s : 0;      /* first x whose source is inside */
        int64_t hi = s > 0 ? w - s : w;   /* one past the last */
        for (int ch = 0; ch < c; ch++) {
            uint8_t *o = img + ch * hw + (int64_t)y * w;
            const uint8_t *in = src + ch * hw + (int64_t)y * w;
            if (lo > 0) memset(o, fill, (size_t)(lo < w ? lo : w));
            if (hi > lo) memcpy(o + lo, in + lo + s, (size_t)(hi - lo));
            if (hi < w) {
                int64_t from = hi > 0 ? hi : 0;
                memset(o + from, fill, (size_t)(w - from));
            }
        }
    }
}

/* out[y][x] = in[y + k(x)][x], fill outside; k(x) = clamp((base + x * step) >> 16, -h, h). */
static void shear_y(uint8_t *img, uint8_t *src, int c, int h, int w, int64_t base, int64_t step, uint8_t fill,
                    int64_t *k) {
    int64_t hw = (int64_t)h * w;
    memcpy(src, img, (size_t)(c * hw));
    for (int x = 0; x < w; x++) k[x] = clamp64((base + (int64_t)x * step) >> 16, -h, h);
    for (int ch = 0; ch < c; ch++) {
        const uint8_t *in = src + ch * hw;
        uint8_t *o = img + ch * hw;
        for (int y = 0; y < h; y++) {
            for (int x = 0; x < w; x++) {
                int64_t sy = y + k[x];
                o[(int64_t)y * w + x] = (sy >= 0 && sy < h) ? in[sy * w + x] : fill;
            }
        }
    }
}

/* out[y][x] = in[sy][sx] with (sx, sy) from Pillow's fixed-point affine loop, in a one-pixel fill border:
 * s = (base + y * step_row + x * step_col) >> 16 clamped to [0, side + 1], 0 and side + 1 being the border. */
static void rotate(uint8_t *img, uint8_t *src, int c, int h, int w, const int64_t *a, uint8_t fill) {
    int64_t hw = (int64_t)h * w;
    int64_t bx = a[0], by = a[1], xcol = a[2], xrow = a[3], ycol = a[4], yrow = a[5];
    memcpy(src, img, (size_t)(c * hw));
    for (int y = 0; y < h; y++) {
        int64_t rx = bx + (int64_t)y * xrow, ry = by + (int64_t)y * yrow;
        for (int x = 0; x < w; x++) {
            int64_t sx = clamp64((rx + (int64_t)x * xcol) >> 16, 0, (int64_t)w + 1);
            int64_t sy = clamp64((ry + (int64_t)x * ycol) >> 16, 0, (int64_t)h + 1);
            int inside = sx >= 1 && sx <= w && sy >= 1 && sy <= h;
            int64_t at = (sy - 1) * w + (sx - 1);
            for (int ch = 0; ch < c; ch++) img[ch * hw + (int64_t)y * w + x] = inside ? src[ch * hw + at] : fill;
        }
    }
}

static void cutout(uint8_t *img, int c, int h, int w, const int64_t *a, uint8_t fill) {
    int64_t y0 = clamp64(a[0], 0, h), x0 = clamp64(a[1], 0, w), y1 = clamp64(a[2], 0, h), x1 = clamp64(a[3], 0, w);
    if (y1 <= y0 || x1 <= x0) return;
    int64_t hw = (int64_t)h * w;
    for (int ch = 0; ch < c; ch++)
        for (int64_t y = y0; y < y1; y++) memset(img + ch * hw + y * w + x0, fill, (size_t)(x1 - x0));
}

static void apply_one(uint8_t *img, uint8_t *src, int64_t *k, int c, int h, int w, int kind, const int64_t *a,
                      float f, uint8_t fill) {
    int64_t hw = (int64_t)h * w;
    int64_t n = c * hw;
    switch (kind) {
        case KIND_INVERT:
            for (int64_t i = 0; i < n; i++) img[i] = (uint8_t)(255 - img[i]);
            break;
        case KIND_AUTOCONTRAST:
            autocontrast(img, c, hw);
            break;
        case KIND_EQUALIZE:
            equalize(img, c, hw);
            break;
        case KIND_ROTATE:
            rotate(img, src, c, h, w, a, fill);
            break;
        case KIND_SOLARIZE: {
            int64_t t = a[0];
            for (int64_t i = 0; i < n; i++) img[i] = img[i] >= t ? (uint8_t)(255 - img[i]) : img[i];
            break;
        }
        case KIND_POSTERIZE: {
            uint8_t mask = (uint8_t)a[0];
            for (int64_t i = 0; i < n; i++) img[i] &= mask;
            break;
        }
        case KIND_COLOR:
            blend_color(img, hw, f);
            break;
        case KIND_CONTRAST:
            blend_contrast(img, hw, f);
            break;
        case KIND_BRIGHTNESS:
            blend_brightness(img, c, hw, f);
            break;
        case KIND_SHARPNESS:
            sharpness(img, src, c, h, w, f);
            break;
        case KIND_SHEAR_X:
            shift_rows(img, src, c, h, w, a[0], a[1], 1, fill);
            break;
        case KIND_TRANSLATE_X:
            shift_rows(img, src, c, h, w, a[0], 0, 0, fill);
            break;
        case KIND_SHEAR_Y:
            shear_y(img, src, c, h, w, a[0], a[1], fill, k);
            break;
        case KIND_TRANSLATE_Y:
            shear_y(img, src, c, h, w, a[0] * 65536, 0, fill, k);
            break;
        case KIND_CUTOUT:
            cutout(img, c, h, w, a, fill);
            break;
        default:
            break;
    }
}

/* Apply every step of images [first, last) of a contiguous uint8 (B, 3, H, W) batch, in place.
 * Returns 0, or -1 when a scratch buffer cannot be allocated. */
int augkd_apply_steps(uint8_t *images, int64_t first, int64_t last, int c, int h, int w, int steps,
                      const int32_t *kind, const int64_t *iarg, const float *farg, int fill) {
    int64_t size = (int64_t)c * h * w;
    uint8_t *src = (uint8_t *)malloc((size_t)(size > 0 ? size : 1));
    int64_t *k = (int64_t *)malloc(sizeof(int64_t) * (size_t)(w > 0 ? w : 1));
    if (src == NULL || k == NULL) {
        free(src);
        free(k);
        return -1;
    }
    for (int64_t i = first; i < last; i++) {
        for (int s = 0; s < steps; s++) {
            int64_t e = i * steps + s;
            if (kind[e] >= 0)
                apply_one(images + i * size, src, k, c, h, w, kind[e], iarg + e * IARGS, farg[e], (uint8_t)fill);
        }
    }
    free(src);
    free(k);
    return 0;
}
