/* Tapedeck: WebAssembly SIMD kernels for LAME (see wasm_simd.c). */
#ifndef LAME_WASM_SIMD_H
#define LAME_WASM_SIMD_H
#ifdef __wasm_simd128__
#include <wasm_simd128.h>

void    init_xrpow_core_wasm_simd(gr_info * const cod_info, FLOAT xrpow[576], int upper,
                                  FLOAT * sum);
int     fht_stage_wasm_simd(FLOAT * fz, FLOAT const *fn, int st, FLOAT const *tri, int kx,
                            int k1, int k2, int k3, int k4, FLOAT * c1, FLOAT * s1);

/* takehiro.c's ix_max (the largest of the quantized values in [ix, end), which are
 * >= 0), four values at a time. */
static inline int
ix_max_wasm_simd(const int *ix, const int *end)
{
    v128_t  vmax = wasm_i32x4_splat(0);
    int     max;
    while (end - ix >= 4) {
        vmax = wasm_i32x4_max(vmax, wasm_v128_load(ix));
        ix += 4;
    }
    vmax = wasm_i32x4_max(vmax, wasm_i32x4_shuffle(vmax, vmax, 2, 3, 0, 1));
    vmax = wasm_i32x4_max(vmax, wasm_i32x4_shuffle(vmax, vmax, 1, 0, 3, 2));
    max = wasm_i32x4_extract_lane(vmax, 0);
    for (; ix < end; ix++)
        if (max < *ix)
            max = *ix;
    return max;
}
#endif
#endif
