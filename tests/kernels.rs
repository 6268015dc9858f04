//! The WGSL kernels (src/kernels, shaders/): every shader validated by naga without a GPU, every
//! kernel against its tensor-op twin on the wgpu adapter (lavapipe in CI) over random shapes,
//! ragged ones included, and the whole UNet with kernels on vs off.

mod common;

use burn::prelude::*;
use common::*;
use lifelong_diffusion::kernels::attention::{self as attn, AttentionControl};
use lifelong_diffusion::kernels::{self, geglu, group_norm};
use lifelong_diffusion::rng::Rng;

/// Held by the tests that read or flip the process-wide kernel switch, so they do not race
/// when the harness runs tests in parallel threads.
static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Kernel vs twin, both f32 (different summation orders only).
const TOL: f32 = 1e-4;
/// The f16 variant against the f32 twin: f16 storage rounding (2^-11) through a softmax.
const F16_TOL: f32 = 2e-2;

fn wgpu() -> Option<Device> {
    let device = devices().into_iter().find(|(name, _)| *name == "wgpu").map(|(_, d)| d);
    if device.is_none() {
        eprintln!("no wgpu adapter (or LD_TEST_BACKENDS=cpu): kernel-vs-twin checks skipped");
    }
    device
}

fn random<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(Rng::new(seed).normal_vec(n), shape), device)
}

fn check<const D: usize>(what: &str, actual: Tensor<D>, expected: Tensor<D>, tol: f32) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shape");
    let err = relative_error(&values(actual.cast(burn::tensor::DType::F32)), &values(expected));
    assert!(err <= tol, "{what}: relative error {err:e} > {tol:e}");
    eprintln!("{what}: relative error {err:e}");
}

fn validate(name: &str, source: &str, f16: bool) {
    let module = naga::front::wgsl::parse_str(source).unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let caps = if f16 { naga::valid::Capabilities::SHADER_FLOAT16 } else { naga::valid::Capabilities::empty() };
    naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(source)));
    let wg = module.entry_points[0].workgroup_size;
    assert!(wg.iter().product::<u32>() <= 256, "{name}: workgroup {wg:?} over WebGPU's 256 invocations");
}

/// Every shader, in every variant the dispatch code can render, parses and validates; the
/// attention tiles stay within WebGPU's default 16 KiB of workgroup memory.
#[test]
fn shaders_validate_with_naga() {
    for f16 in [false, true] {
        for d in [1, 3, 4, 8, 13, 16, 32, 40, 64, 80, 128, 160] {
            // Every tiling the layouts pick: GPU; CPU with 8 rows in 8- and 64-invocation
            // workgroups; CPU with 16 rows where d allows it.
            for (layout, n) in [(attn::Layout::Gpu, 4096), (attn::Layout::Cpu, 64), (attn::Layout::Cpu, 512), (attn::Layout::Cpu, 4096)] {
                for steered in [false, true] {
                    let (key, source) = attn::shader(f16, d, layout.tiling(n, d), steered);
                    validate(&key, &source, f16);
                }
            }
            let (key, source) = attn::probs_shader(f16, d);
            validate(&key, &source, f16);
            assert!(2 * 16 * attn::tile_keys(d) * d.div_ceil(4) <= 16 * 1024, "{key}: tiles over 16 KiB");
        }
        let (key, source) = group_norm::shader(f16);
        validate(&key, &source, f16);
        let (key, source) = geglu::shader(f16);
        validate(&key, &source, f16);
    }
}

/// `[b, h, n, d]` random q, k, v; q and k as head views of `[b, n, h*d]` (strided, as the model
/// passes them) when `strided`.
fn qkv(b: usize, h: usize, n: usize, m: usize, d: usize, strided: bool, device: &Device) -> [Tensor<4>; 3] {
    let heads = |t: Tensor<3>| lifelong_diffusion::model::attention::split_heads(t, h);
    if strided {
        [heads(random([b, n, h * d], 1, device)), heads(random([b, m, h * d], 2, device)), heads(random([b, m, h * d], 3, device))]
    } else {
        [random([b, h, n, d], 1, device), random([b, h, m, d], 2, device), random([b, h, m, d], 3, device)]
    }
}

/// (batch, heads, queries, keys, head dim): SD head dims, tiny ones, and sizes that are not
/// multiples of a workgroup's rows or of a key tile; 1100 queries take the CPU layout's 16-row,
/// 1024-row-workgroup tiling (at a small head dim, which compiles fast).
const SHAPES: [(usize, usize, usize, usize, usize); 9] = [
    (1, 2, 1100, 70, 8),
    (1, 1, 1, 1, 4),
    (2, 3, 67, 45, 40),
    (1, 2, 130, 77, 64),
    (2, 2, 100, 100, 80),
    (1, 2, 33, 77, 160),
    (1, 1, 200, 19, 13),
    (2, 2, 65, 130, 8),
    (1, 4, 64, 64, 32),
];

/// Both layouts (the adapter's own and the other one, forced), so the GPU layout is held to the
/// twin on lavapipe too.
#[test]
fn attention_matches_twin() {
    let Some(device) = wgpu() else { return };
    let _switch = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    for layout in [attn::Layout::Cpu, attn::Layout::Gpu] {
        attn::set_layout(Some(layout));
        for (i, &(b, h, n, m, d)) in SHAPES.iter().enumerate() {
            let [q, k, v] = qkv(b, h, n, m, d, i % 2 == 1, &device);
            let plain = AttentionControl::default();
            let fused = attn::attention_fused(q.clone(), k.clone(), v.clone(), &plain).out;
            let twin = attn::attention_twin(q, k, v, &plain).out;
            check(&format!("attention {layout:?} b{b} h{h} n{n} m{m} d{d}"), fused, twin, TOL);
        }
    }
    attn::set_layout(None);
}

#[test]
fn layout_follows_the_adapter() {
    use attn::Layout;
    assert_eq!(Layout::for_adapter("llvmpipe (LLVM 15.0.6, 256 bits)", false), Layout::Cpu);
    assert_eq!(Layout::for_adapter("SwiftShader Device (Subzero)", true), Layout::Cpu);
    assert_eq!(Layout::for_adapter("NVIDIA H100 80GB HBM3", true), Layout::Gpu);
    assert_eq!(Layout::for_adapter("Apple M2", true), Layout::Gpu);
    assert_eq!(Layout::for_adapter("some CPU adapter", false), Layout::Cpu);
}

#[test]
fn tiling_covers_queries_with_little_padding() {
    use attn::{Layout, Tiling};
    assert_eq!(Layout::Gpu.tiling(4096, 40), Tiling { rows: 1, invocations: 64 });
    assert_eq!(Layout::Cpu.tiling(1024, 80), Tiling { rows: 16, invocations: 64 });
    assert_eq!(Layout::Cpu.tiling(4096, 160), Tiling { rows: 8, invocations: 64 });
    assert_eq!(Layout::Cpu.tiling(256, 32), Tiling { rows: 8, invocations: 32 });
    assert_eq!(Layout::Cpu.tiling(1, 4), Tiling { rows: 8, invocations: 8 });
    for n in (1..5000).step_by(37) {
        for d in [8, 40, 80, 160] {
            let t = Layout::Cpu.tiling(n, d);
            let covered = n.div_ceil(t.rows_per_workgroup()) * t.rows_per_workgroup();
            // Padding is under half of what runs, except where one SIMD batch of 8 rows per lane
            // is already more than n.
            assert!(covered < 2 * n || t.invocations == 8, "n {n} d {d}: {t:?} covers {covered}");
            assert!((8..=64).contains(&t.invocations) && t.invocations.is_power_of_two());
        }
    }
}

/// Bias map, key scale and exported maps together; the maps equal the twin's softmax
/// probabilities averaged over heads.
#[test]
fn steered_attention_and_maps_match_twin() {
    let Some(device) = wgpu() else { return };
    for &(b, h, grid, m, d, bias_hw) in &[(2, 3, [7, 9], 77, 40, [3, 5]), (1, 2, [10, 13], 19, 64, [4, 4]), (1, 1, [5, 5], 30, 13, [1, 2])] {
        let n = grid[0] * grid[1];
        let [q, k, v] = qkv(b, h, n, m, d, true, &device);
        let control = AttentionControl {
            bias: Some(random([b, m, bias_hw[0], bias_hw[1]], 4, &device)),
            key_scale: Some(random([b, m], 5, &device).abs().add_scalar(0.5)),
            grid: Some(grid),
            export_probs: true,
        };
        let fused = attn::attention_fused(q.clone(), k.clone(), v.clone(), &control);
        let twin = attn::attention_twin(q, k, v, &control);
        let what = format!("steered attention b{b} h{h} grid{grid:?} m{m} d{d}");
        check(&what, fused.out, twin.out, TOL);
        let probs = fused.probs.expect("maps were asked for");
        let sums = values(probs.clone().sum_dim(2));
        assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-4), "{what}: map rows sum to 1");
        check(&format!("{what} maps"), probs, twin.probs.expect("twin maps"), TOL);
    }
}

/// Maps without steering (the per-word attention viewer's case).
#[test]
fn exported_maps_equal_twin_probabilities() {
    let Some(device) = wgpu() else { return };
    let [q, k, v] = qkv(2, 8, 96, 77, 40, true, &device);
    let control = AttentionControl { export_probs: true, ..Default::default() };
    let fused = attn::attention_fused(q.clone(), k.clone(), v.clone(), &control).probs.unwrap();
    let twin = attn::head_mean(burn::tensor::activation::softmax(attn::twin_scores(q, k, &control), 3));
    check("maps [2, 96, 77]", fused, twin, TOL);
}

#[test]
fn attention_f16_variant_matches_twin() {
    let Some(device) = wgpu() else { return };
    if !device.supports_dtype(burn::tensor::DType::F16) {
        eprintln!("adapter has no shader-f16: f16 variant not run (validated by naga only)");
        return;
    }
    let f16 = burn::tensor::DType::F16;
    for &(b, h, n, m, d) in &[(2, 2, 67, 45, 40), (1, 2, 33, 77, 160)] {
        let [q, k, v] = qkv(b, h, n, m, d, false, &device).map(|t| t.cast(f16));
        let fused = attn::attention_fused(q.clone(), k.clone(), v.clone(), &AttentionControl::default()).out;
        let [q, k, v] = [q, k, v].map(|t| t.cast(burn::tensor::DType::F32));
        let twin = attn::attention_twin(q, k, v, &AttentionControl::default()).out;
        check(&format!("attention f16 b{b} h{h} n{n} m{m} d{d}"), fused, twin, F16_TOL);
    }
}

#[test]
fn group_norm_silu_matches_twin() {
    let Some(device) = wgpu() else { return };
    for &([n, c, h, w], groups) in &[([1, 32, 7, 9], 8), ([2, 64, 16, 16], 32), ([3, 12, 5, 3], 3), ([1, 4, 1, 1], 1), ([2, 320, 13, 11], 32)] {
        let x = random([n, c, h, w], 6, &device).mul_scalar(3.0).add_scalar(1.0);
        let (weight, bias) = (random([c], 7, &device), random([c], 8, &device));
        for silu in [false, true] {
            let fused = group_norm::group_norm_kernel(x.clone(), weight.clone(), bias.clone(), groups, 1e-5, silu);
            let twin = group_norm::group_norm_twin(x.clone(), weight.clone(), bias.clone(), groups, 1e-5, silu);
            check(&format!("group_norm [{n}, {c}, {h}, {w}] groups {groups} silu {silu}"), fused, twin, TOL);
        }
    }
}

#[test]
fn geglu_matches_twin() {
    let Some(device) = wgpu() else { return };
    for shape in [[1, 1, 2], [2, 77, 80], [1, 300, 514], [2, 64, 1280]] {
        let x = random(shape, 9, &device).mul_scalar(2.0);
        check(&format!("geglu {shape:?}"), geglu::geglu_kernel(x.clone()), geglu::geglu_twin(x), TOL);
    }
}

/// The model's entry points take the kernels on wgpu only when switched on, and never under
/// autodiff or on the CPU (where the twins run and gradients flow).
#[test]
fn routing_follows_device_and_switch() {
    let _switch = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    let cpu = Device::flex();
    assert!(!kernels::use_kernels(&random([2], 0, &cpu)));
    let x = random([1, 8, 4, 4], 0, &cpu.clone().autodiff()).require_grad();
    let y = group_norm::group_norm(x.clone(), Tensor::ones([8], &x.device()), Tensor::zeros([8], &x.device()), 2, 1e-5, true);
    let grads = y.sum().backward();
    assert!(x.grad(&grads).is_some(), "autodiff path has gradients");
    let Some(device) = wgpu() else { return };
    let t = random([2], 0, &device);
    assert!(kernels::use_kernels(&t), "kernels run on wgpu by default");
    assert!(!kernels::use_kernels(&random([2], 0, &device.clone().autodiff())), "not under autodiff");
    kernels::set_enabled(false);
    assert!(!kernels::use_kernels(&t), "switched off");
    kernels::set_enabled(true);
}

/// Whole UNet, kernels on vs off, on the fixture pipelines (SD-1 conv and SD-2 linear projections).
#[test]
fn unet_kernels_on_vs_off() {
    let Some(device) = wgpu() else { return };
    let _switch = SWITCH.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["sd1", "sd2"] {
        let folder = lifelong_diffusion::native::Folder(fixtures().join(name));
        let model = lifelong_diffusion::loader::load(&folder, &device).unwrap();
        let refs = load_refs(&fixtures().join(format!("{name}_ref.safetensors")));
        let t = refs["unet_timestep"].values[0];
        let run = |on: bool| {
            kernels::set_enabled(on);
            let out = model.unet.forward(refs["unet_sample"].tensor(&device), t, &refs["unet_context"].tensor(&device));
            kernels::set_enabled(true);
            out
        };
        let (on, off) = (run(true), run(false));
        check(&format!("{name} unet kernels on vs off"), on.clone(), off, TOL);
        assert_close(&format!("{name} unet kernels on vs diffusers"), on, &refs["unet_out"], TOL);
    }
}
