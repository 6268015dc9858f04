// Attention probabilities averaged over heads, for the lifelong parts that read (cross-)attention
// maps: probs[b, i, j] = mean_h exp(s_hij - max_hi) / sum_hi, with s as in attention.wgsl and the
// row max and sum taken from the stats attention.wgsl wrote. Run only when the caller asks, after
// attention.wgsl; costs one more q.k pass and stores [b, n, m] (never [b, h, n, m]).
//
// Template: {{enable}}, {{elem}}, {{wg}}, {{d}}, {{d4}} as in attention.wgsl.
//
// Bindings (group 0, all read_write, see attention.wgsl):
//   0 q          [b, h, n, d], strides in params
//   1 k          [b, h, m, d], strides in params
//   2 bias       [b, m, bias_h, bias_w] (dummy unless flags & 1)
//   3 key_scale  [b, m] (dummy unless flags & 2)
//   4 stats      f32 [b * h, n, 2] from attention.wgsl
//   5 probs      f32 [b, n, m] contiguous
//   6 params     u32, same layout as attention.wgsl
// Dispatch: (ceil(m / wg), n, b) workgroups of (wg, 1, 1); one invocation per (b, i, j).
{{enable}}

alias E = {{elem}};
const WG: u32 = {{wg}}u;
const D: u32 = {{d}}u;
const D4: u32 = {{d4}}u;

const P_M: u32 = 1u;
const P_HEADS: u32 = 2u;
const P_FLAGS: u32 = 3u;
const P_SCALE: u32 = 4u;
const P_Q: u32 = 5u;
const P_K: u32 = 8u;
const P_GRID_H: u32 = 14u;
const P_GRID_W: u32 = 15u;
const P_BIAS_H: u32 = 16u;
const P_BIAS_W: u32 = 17u;

@group(0) @binding(0) var<storage, read_write> q: array<E>;
@group(0) @binding(1) var<storage, read_write> k: array<E>;
@group(0) @binding(2) var<storage, read_write> bias: array<E>;
@group(0) @binding(3) var<storage, read_write> key_scale: array<E>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
@group(0) @binding(5) var<storage, read_write> probs: array<f32>;
@group(0) @binding(6) var<storage, read_write> params: array<u32>;

// Bilinear sample of bias map (b, key) at query `row` (align_corners = false, clamped at 0),
// the same taps as attention.wgsl.
fn axis_taps(o: u32, dst: u32, src: u32) -> vec3<f32> {
    let pos = max((f32(o) + 0.5) * f32(src) / f32(dst) - 0.5, 0.0);
    let lo = min(u32(floor(pos)), src - 1u);
    let hi = min(lo + 1u, src - 1u);
    return vec3<f32>(f32(lo), f32(hi), pos - f32(lo));
}

fn bias_at(row: u32, b: u32, key: u32) -> f32 {
    let gw = params[P_GRID_W];
    let bh = params[P_BIAS_H];
    let bw = params[P_BIAS_W];
    let y = axis_taps(row / gw, params[P_GRID_H], bh);
    let x = axis_taps(row % gw, gw, bw);
    let base = (b * params[P_M] + key) * bh * bw;
    let y0 = base + u32(y.x) * bw;
    let y1 = base + u32(y.y) * bw;
    let top = (1.0 - x.z) * f32(bias[y0 + u32(x.x)]) + x.z * f32(bias[y0 + u32(x.y)]);
    let bottom = (1.0 - x.z) * f32(bias[y1 + u32(x.x)]) + x.z * f32(bias[y1 + u32(x.y)]);
    return (1.0 - y.z) * top + y.z * bottom;
}

@compute @workgroup_size({{wg}}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let m = params[P_M];
    let j = wid.x * WG + lid;
    if (j >= m) { return; }
    let i = wid.y;
    let n = params[0u];
    let b = wid.z;
    let heads = params[P_HEADS];
    let flags = params[P_FLAGS];
    let scale = bitcast<f32>(params[P_SCALE]);

    var extra = 0.0;
    if ((flags & 1u) != 0u) { extra = bias_at(i, b, j); }
    var key_mult = 1.0;
    if ((flags & 2u) != 0u) { key_mult = f32(key_scale[b * m + j]); }

    var total = 0.0;
    for (var h = 0u; h < heads; h++) {
        let qb = b * params[P_Q] + h * params[P_Q + 1u] + i * params[P_Q + 2u];
        let kb = b * params[P_K] + h * params[P_K + 1u] + j * params[P_K + 2u];
        var qk = 0.0;
        for (var d = 0u; d < D; d++) { qk += f32(q[qb + d]) * f32(k[kb + d]); }
        let score = qk * scale * key_mult + extra;
        let st = 2u * ((b * heads + h) * n + i);
        total += exp(score - stats[st]) / stats[st + 1u];
    }
    probs[(b * n + i) * m + j] = total / f32(heads);
}
