// Fused scaled-dot-product attention: flash-style online softmax over tiles of keys, so the
// [n, m] score matrix never exists in memory. One invocation owns ROWS query rows (1 on GPUs,
// 8 or 16 on CPU drivers: src/kernels/attention.rs, Layout::tiling): their q and output
// accumulators live in registers; a workgroup shares each tile of K and V through workgroup
// memory (2 * TK * D4 * 16 bytes <= 16 KiB, WebGPU's default limit).
//
// Score of query i and key j:  s_ij = scale * key_scale[b, j] * (q_i . k_j) + bias[b, j](i)
// where bias[b, j] is a low-resolution map, bilinearly upsampled (align_corners = false, as
// torch's F.interpolate) to the query grid [grid_h, grid_w] in-kernel.
//
// Template: {{enable}} ("enable f16;" or ""), {{elem}} (f32 | f16: storage type of q, k, v,
// out, bias, key_scale; arithmetic is always f32), {{wg}} workgroup size, {{d}} head dim,
// {{d4}} = ceil(d / 4), {{tk}} keys per tile (a multiple of {{kb}}, the keys per inner step), {{steered}}
// (false: bias and key scale compiled out), {{rows}} query rows per
// invocation, and three blocks unrolled over rows and the d4 vec4 slices of a head row, named
// init, tile and finish (written by src/kernels/attention.rs). Unrolled, each row's q and
// accumulator are plain locals (registers, or vector spill slots) rather than arrays indexed in
// loops, which CPU Vulkan drivers such as lavapipe turn into per-lane gathers; and each value
// read from workgroup memory is reused for every row of the invocation, the register tiling
// that makes the tensor-op matmul fast there.
//
// Bindings (group 0; all read_write because burn may pack several tensors in one buffer):
//   0 q          [b, h, n, d], any strides with unit stride on d (strides in params)
//   1 k          [b, h, m, d], idem
//   2 v          [b, h, m, d], idem
//   3 out        [b, h, n, d] contiguous
//   4 bias       [b, m, bias_h, bias_w] contiguous (a 1-element dummy unless flags & 1)
//   5 key_scale  [b, m] contiguous (dummy unless flags & 2)
//   6 stats      f32 [b * h, n, 2]: final row max and row sum (written only if flags & 4)
//   7 params     u32, see P_* below
// Dispatch: (ceil(n / (wg * rows)), b * h, 1) workgroups of (wg, 1, 1).
{{enable}}

alias E = {{elem}};
const WG: u32 = {{wg}}u;
const D: u32 = {{d}}u;
const D4: u32 = {{d4}}u;
const TK: u32 = {{tk}}u;
const TILE: u32 = TK * D4;
// Query rows per invocation.
const ROWS: u32 = {{rows}}u;
// A plain kernel has no steering code at all: on lavapipe the never-taken branch alone cost
// 40% of the time (1024x1024, d=40: 131 ms -> 75 ms without it).
const STEERED: bool = {{steered}};
// Stands in for -inf: exp(NEG - x) is 0 for every finite score.
const NEG: f32 = -3.0e38;

const P_N: u32 = 0u;
const P_M: u32 = 1u;
const P_HEADS: u32 = 2u;
const P_FLAGS: u32 = 3u;
const P_SCALE: u32 = 4u;
const P_Q: u32 = 5u;   // q strides (batch, head, row), then k at 8, v at 11
const P_K: u32 = 8u;
const P_V: u32 = 11u;
const P_GRID_H: u32 = 14u;
const P_GRID_W: u32 = 15u;
const P_BIAS_H: u32 = 16u;
const P_BIAS_W: u32 = 17u;

@group(0) @binding(0) var<storage, read_write> q: array<E>;
@group(0) @binding(1) var<storage, read_write> k: array<E>;
@group(0) @binding(2) var<storage, read_write> v: array<E>;
@group(0) @binding(3) var<storage, read_write> out: array<E>;
@group(0) @binding(4) var<storage, read_write> bias: array<E>;
@group(0) @binding(5) var<storage, read_write> key_scale: array<E>;
@group(0) @binding(6) var<storage, read_write> stats: array<f32>;
@group(0) @binding(7) var<storage, read_write> params: array<u32>;

var<workgroup> k_tile: array<vec4<f32>, TILE>;
var<workgroup> v_tile: array<vec4<f32>, TILE>;

// Bilinear taps of one query position into the low-resolution bias map.
struct Taps {
    i00: u32, i01: u32, i10: u32, i11: u32,
    w00: f32, w01: f32, w10: f32, w11: f32,
}

// Source coordinate of output cell `o` when `src` cells are stretched over `dst` (half-pixel
// centres, clamped at 0 as torch does), returned as (lower index, upper index, upper weight).
fn axis_taps(o: u32, dst: u32, src: u32) -> vec3<f32> {
    let pos = max((f32(o) + 0.5) * f32(src) / f32(dst) - 0.5, 0.0);
    let lo = min(u32(floor(pos)), src - 1u);
    let hi = min(lo + 1u, src - 1u);
    return vec3<f32>(f32(lo), f32(hi), pos - f32(lo));
}

fn bias_taps(row: u32) -> Taps {
    let gw = params[P_GRID_W];
    let bh = params[P_BIAS_H];
    let bw = params[P_BIAS_W];
    let y = axis_taps(row / gw, params[P_GRID_H], bh);
    let x = axis_taps(row % gw, gw, bw);
    let y0 = u32(y.x) * bw;
    let y1 = u32(y.y) * bw;
    return Taps(
        y0 + u32(x.x), y0 + u32(x.y), y1 + u32(x.x), y1 + u32(x.y),
        (1.0 - y.z) * (1.0 - x.z), (1.0 - y.z) * x.z, y.z * (1.0 - x.z), y.z * x.z,
    );
}

fn bias_at(t: Taps, b: u32, key: u32) -> f32 {
    let base = (b * params[P_M] + key) * params[P_BIAS_H] * params[P_BIAS_W];
    return t.w00 * f32(bias[base + t.i00]) + t.w01 * f32(bias[base + t.i01])
         + t.w10 * f32(bias[base + t.i10]) + t.w11 * f32(bias[base + t.i11]);
}

// Four consecutive head-dim values starting at 4 * c, zero past D.
fn load_q(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < D) { r[i] = f32(q[base + 4u * c + i]); }
    }
    return r;
}

fn load_k(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < D) { r[i] = f32(k[base + 4u * c + i]); }
    }
    return r;
}

fn load_v(base: u32, c: u32) -> vec4<f32> {
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < D) { r[i] = f32(v[base + 4u * c + i]); }
    }
    return r;
}

// Writes the four head-dim values of slice c of an output row, dropping those past D.
fn store(base: u32, c: u32, val: vec4<f32>) {
    for (var i = 0u; i < 4u; i++) {
        if (4u * c + i < D) { out[base + 4u * c + i] = E(val[i]); }
    }
}

// Cooperative load of keys [t0, t0 + count) of this (batch, head) into workgroup memory; the
// rest of the tile is zeroed so masked keys multiply finite values.
fn load_tile(lid: u32, b: u32, h: u32, t0: u32, count: u32) {
    for (var e = lid; e < TILE; e += WG) {
        let t = e / D4;
        let c = e % D4;
        var kv = vec4<f32>(0.0);
        var vv = vec4<f32>(0.0);
        if (t < count) {
            kv = load_k(b * params[P_K] + h * params[P_K + 1u] + (t0 + t) * params[P_K + 2u], c);
            vv = load_v(b * params[P_V] + h * params[P_V + 1u] + (t0 + t) * params[P_V + 2u], c);
        }
        k_tile[e] = kv;
        v_tile[e] = vv;
    }
}

// Key scale, bias and masking of keys past the tile for the four scores of keys key0..key0+3.
fn steer(raw: vec4<f32>, flags: u32, taps: Taps, b: u32, key0: u32, end: u32) -> vec4<f32> {
    var s = raw;
    let m = params[P_M];
    if (STEERED && (flags & 3u) != 0u) {
        for (var i = 0u; i < 4u; i++) {
            let key = min(key0 + i, m - 1u);
            if ((flags & 2u) != 0u) { s[i] *= f32(key_scale[b * m + key]); }
            if ((flags & 1u) != 0u) { s[i] += bias_at(taps, b, key); }
        }
    }
    let keys = vec4<u32>(key0) + vec4<u32>(0u, 1u, 2u, 3u);
    return select(vec4<f32>(NEG), s, keys < vec4<u32>(end));
}

@compute @workgroup_size({{wg}}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n = params[P_N];
    let m = params[P_M];
    let flags = params[P_FLAGS];
    let bh = wid.y;
    let b = bh / params[P_HEADS];
    let h = bh % params[P_HEADS];
    // The softmax scale is folded into q once instead of into every score.
    let scale = bitcast<f32>(params[P_SCALE]);
    // Invocation lid owns rows first + lid + WG * r for r < ROWS. Rows past n are computed on a
    // clamped row (their lanes must still load tiles and meet every barrier) and not written.
    let first = wid.x * WG * ROWS;
{{init}}
    for (var t0 = 0u; t0 < m; t0 += TK) {
        let count = min(TK, m - t0);
        workgroupBarrier();
        load_tile(lid, b, h, t0, count);
        workgroupBarrier();
        // {{kb}} keys at a time: each row's scores form vec4s and its running sums are rescaled
        // once per {{kb}} keys; every K and V value read from the tile serves all ROWS rows.
        for (var t = 0u; t < count; t += {{kb}}u) {
            let o = t * D4;
{{tile}}
        }
    }
{{finish}}
}
