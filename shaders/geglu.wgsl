// GEGLU (diffusers' FeedForward "geglu"): out[r, j] = x[r, j] * gelu(x[r, inner + j]), exact
// (erf) GELU as torch's default. Saves the two chunk copies, the GELU temporary and the product
// pass of the tensor-op version: one read of x, one write of out.
//
// Template: {{enable}}, {{elem}} (f32 | f16 storage; arithmetic in f32), {{wg}} workgroup size.
//
// Bindings (group 0, all read_write: burn may pack several tensors in one buffer):
//   0 x       [rows, 2 * inner] contiguous
//   1 out     [rows, inner] contiguous
//   2 params  u32 [rows, inner]
// Dispatch: (min(g, 65535), ceil(g / 65535), 1) workgroups of (wg, 1, 1) with
// g = ceil(rows * inner / wg); invocation index = (y * num_workgroups.x + x) * wg + local.
{{enable}}

alias E = {{elem}};
const WG: u32 = {{wg}}u;

@group(0) @binding(0) var<storage, read_write> x: array<E>;
@group(0) @binding(1) var<storage, read_write> out: array<E>;
@group(0) @binding(2) var<storage, read_write> params: array<u32>;

// erf by Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7): WGSL has no erf builtin.
fn erf(z: f32) -> f32 {
    let a = abs(z);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    return sign(z) * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size({{wg}}, 1, 1)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let rows = params[0];
    let inner = params[1];
    let idx = (wid.y * groups.x + wid.x) * WG + lid;
    if (idx >= rows * inner) { return; }
    let r = idx / inner;
    let j = idx % inner;
    let hidden = f32(x[r * 2u * inner + j]);
    let gate = f32(x[r * 2u * inner + inner + j]);
    let gelu = 0.5 * gate * (1.0 + erf(gate * 0.70710678118654752));
    out[idx] = E(hidden * gelu);
}
