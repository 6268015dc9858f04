//! One UNet step at SD-1.5 shapes with seeded random weights: proves the runtime handles the real
//! model's size. Ignored by default (minutes on a CPU); run it with
//! `cargo test --release --test sd15_scale -- --ignored --nocapture` and `LD_SD15_BACKEND=wgpu|cpu`.

use std::time::Instant;

use burn::prelude::*;
use lifelong_diffusion::config::UNetConfig;
use lifelong_diffusion::model::UNet2DConditionModel;
use lifelong_diffusion::rng::Rng;
use lifelong_diffusion::weights::VarBuilder;

/// Peak resident memory of this process (Linux), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn random(shape: [usize; 4], rng: &mut Rng, device: &Device) -> Tensor<4> {
    Tensor::from_data(TensorData::new(rng.normal_vec(shape.iter().product()), shape), device)
}

#[test]
#[ignore]
fn sd15_unet_step_with_random_weights() {
    let backend = std::env::var("LD_SD15_BACKEND").unwrap_or_else(|_| "cpu".into());
    let device = match backend.as_str() {
        "wgpu" => Device::wgpu_options().init().expect("a wgpu adapter"),
        _ => Device::flex(),
    };
    let config = UNetConfig::sd15();
    config.validate("sd15 preset").unwrap();
    let start = Instant::now();
    let unet = UNet2DConditionModel::load(&VarBuilder::random(0, 0.02, &device), &config).unwrap();
    let load_s = start.elapsed().as_secs_f64();

    let mut rng = Rng::new(1);
    let sample = random([2, 4, 64, 64], &mut rng, &device);
    let context = Tensor::<4>::from_data(TensorData::new(rng.normal_vec(2 * 77 * 768), [1, 2, 77, 768]), &device).squeeze_dim::<3>(0);
    let mut times = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let out = unet.forward(sample.clone(), 500.0, &context);
        let values: Vec<f32> = out.clone().into_data().try_to_vec::<f32>().unwrap();
        times.push(start.elapsed().as_secs_f64());
        assert_eq!(out.dims(), [2, 4, 64, 64]);
        assert!(values.iter().all(|v| v.is_finite()), "non-finite output");
    }
    println!(
        "sd15 unet step ({backend}, batch 2 = guidance, 64x64 latents): load {load_s:.1} s, first step {:.2} s, second step {:.2} s, peak RSS {:.0} MiB",
        times[0],
        times[1],
        peak_rss_mib().unwrap_or(f64::NAN)
    );
}
