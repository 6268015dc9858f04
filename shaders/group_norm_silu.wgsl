// GroupNorm (torch.nn.GroupNorm, affine, biased variance) with an optional fused SiLU.
// One workgroup normalises one (sample, group): two reductions through workgroup memory (mean,
// then the variance about it, as torch's two-pass var does, for accuracy), then one write pass.
//
// Template: {{enable}}, {{elem}} (f32 | f16 storage; arithmetic in f32), {{wg}} workgroup size
// (a power of two).
//
// Bindings (group 0, all read_write: burn may pack several tensors in one buffer):
//   0 x       [n, c, hw] contiguous
//   1 weight  [c]
//   2 bias    [c]
//   3 out     [n, c, hw] contiguous
//   4 params  u32 [c, hw, groups, silu (0 | 1), eps as f32 bits]
// Dispatch: (groups, n, 1) workgroups of (wg, 1, 1).
{{enable}}

alias E = {{elem}};
const WG: u32 = {{wg}}u;

@group(0) @binding(0) var<storage, read_write> x: array<E>;
@group(0) @binding(1) var<storage, read_write> weight: array<E>;
@group(0) @binding(2) var<storage, read_write> bias: array<E>;
@group(0) @binding(3) var<storage, read_write> out: array<E>;
@group(0) @binding(4) var<storage, read_write> params: array<u32>;

var<workgroup> partial: array<f32, WG>;

// Sum of `value` over the workgroup; every invocation gets the total.
fn workgroup_sum(lid: u32, value: f32) -> f32 {
    partial[lid] = value;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) { partial[lid] += partial[lid + stride]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size({{wg}}, 1, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let c = params[0];
    let hw = params[1];
    let groups = params[2];
    let silu = params[3] != 0u;
    let eps = bitcast<f32>(params[4]);
    let per_group = c / groups;
    let count = per_group * hw;
    let base = (wid.y * c + wid.x * per_group) * hw;

    var sum = 0.0;
    for (var e = lid; e < count; e += WG) { sum += f32(x[base + e]); }
    let mean = workgroup_sum(lid, sum) / f32(count);

    var sq = 0.0;
    for (var e = lid; e < count; e += WG) {
        let dev = f32(x[base + e]) - mean;
        sq += dev * dev;
    }
    let inv_std = 1.0 / sqrt(workgroup_sum(lid, sq) / f32(count) + eps);

    for (var e = lid; e < count; e += WG) {
        let ch = wid.x * per_group + e / hw;
        var y = (f32(x[base + e]) - mean) * inv_std * f32(weight[ch]) + f32(bias[ch]);
        if (silu) { y = y / (1.0 + exp(-y)); }
        out[base + e] = E(y);
    }
}
