//! Modules and the whole pipeline against diffusers, on every backend (tests/fixtures/README.md).

mod common;

use common::*;
use lifelong_diffusion::loader::{self, LoadedModel};
use lifelong_diffusion::native::Folder;
use lifelong_diffusion::pipeline::{GenerateOptions, Pipeline};

/// Module-level tolerance (f32 vs f32, different op orders).
const MODULE_TOL: f32 = 1e-4;
/// Issue acceptance: final latents within 1e-3 relative.
const LATENT_TOL: f32 = 1e-3;

fn load(name: &str, device: &burn::prelude::Device) -> LoadedModel {
    loader::load(&Folder(fixtures().join(name)), device).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn check_text_encoder(name: &str) {
    let refs = load_refs(&fixtures().join(format!("{name}_ref.safetensors")));
    for (backend, device) in devices() {
        let model = load(name, &device);
        let ids = model.tokenizer.encode(&prompt(name, "prompt")).unwrap().ids;
        assert_eq!(ids, refs["prompt_ids"].ids(), "{name}: prompt ids");
        let ids = burn::prelude::Tensor::<2, burn::prelude::Int>::from_data(burn::prelude::TensorData::new(ids, [1, 77]), &device);
        assert_close(&format!("{name}/{backend} text encoder"), model.text_encoder.forward(ids), &refs["text_hidden"], MODULE_TOL);
    }
}

fn check_unet(name: &str) {
    let refs = load_refs(&fixtures().join(format!("{name}_ref.safetensors")));
    for (backend, device) in devices() {
        let model = load(name, &device);
        let t = refs["unet_timestep"].values[0];
        let out = model.unet.forward(refs["unet_sample"].tensor(&device), t, &refs["unet_context"].tensor(&device));
        assert_close(&format!("{name}/{backend} unet"), out, &refs["unet_out"], MODULE_TOL);
    }
}

fn check_vae(name: &str) {
    let refs = load_refs(&fixtures().join(format!("{name}_ref.safetensors")));
    for (backend, device) in devices() {
        let model = load(name, &device);
        let decoded = model.vae.decode(refs["vae_latents"].tensor(&device));
        assert_close(&format!("{name}/{backend} vae decode"), decoded, &refs["vae_decoded"], MODULE_TOL);
        let dist = model.vae.encode(refs["vae_image"].tensor(&device));
        assert_close(&format!("{name}/{backend} vae encode mean"), dist.mean, &refs["vae_encoded_mean"], MODULE_TOL);
        assert_close(&format!("{name}/{backend} vae encode logvar"), dist.logvar, &refs["vae_encoded_logvar"], MODULE_TOL);
    }
}

fn meta(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join(format!("{name}_ref.json"))).expect("fixture json");
    serde_json::from_str(&text).expect("fixture json parses")
}

fn prompt(name: &str, key: &str) -> String {
    meta(name)[key].as_str().unwrap_or_else(|| panic!("{name}_ref.json: no `{key}`")).to_string()
}

fn check_pipeline(name: &str) {
    let refs = load_refs(&fixtures().join(format!("{name}_ref.safetensors")));
    let meta = meta(name);
    for (backend, device) in devices() {
        let pipeline = Pipeline::new(load(name, &device), device.clone());
        let options = GenerateOptions {
            prompt: meta["prompt"].as_str().unwrap().into(),
            negative_prompt: meta["negative_prompt"].as_str().unwrap_or("").into(),
            steps: meta["num_inference_steps"].as_u64().unwrap() as usize,
            guidance: meta["guidance_scale"].as_f64().unwrap() as f32,
            init_latents: Some(refs["init_latents"].tensor(&device)),
            ..Default::default()
        };
        let mut steps = 0;
        let generation = pipeline.generate(&options, &mut |p| steps = p.step).unwrap();
        assert_eq!(steps, options.steps);
        assert_close(&format!("{name}/{backend} final latents"), generation.latents, &refs["final_latents"], LATENT_TOL);
        // Image within 2/255 of diffusers' float image [1, H, W, 3].
        let image = values(generation.image.permute([0, 2, 3, 1]));
        let diff = max_abs_diff(&image, &refs["image"].values);
        assert!(diff <= 2.0 / 255.0, "{name}/{backend} image differs by {diff} > 2/255");
        eprintln!("{name}/{backend} image max diff {:.3}/255", diff * 255.0);
    }
}

#[test]
fn sd1_text_encoder() { check_text_encoder("sd1") }
#[test]
fn sd2_text_encoder() { check_text_encoder("sd2") }
#[test]
fn sd1_unet() { check_unet("sd1") }
#[test]
fn sd2_unet() { check_unet("sd2") }
#[test]
fn sd1_vae() { check_vae("sd1") }
#[test]
fn sd2_vae() { check_vae("sd2") }
#[test]
fn sd1_pipeline() { check_pipeline("sd1") }
#[test]
fn sd2_pipeline() { check_pipeline("sd2") }

/// The browser path: the same pipeline from bytes in memory gives the same text features.
#[test]
fn loads_from_bytes_in_memory() {
    use lifelong_diffusion::loader::MemoryFiles;
    let root = fixtures().join("sd2");
    let mut files = MemoryFiles { name: "sd2 (memory)".into(), ..Default::default() };
    for rel in [
        "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder/model.safetensors",
        "tokenizer/tokenizer.json", "tokenizer/tokenizer_config.json", "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
    ] {
        files.files.insert(rel.into(), std::fs::read(root.join(rel)).unwrap());
    }
    let device = burn::prelude::Device::flex();
    let model = loader::load(&files, &device).unwrap();
    let refs = load_refs(&fixtures().join("sd2_ref.safetensors"));
    let ids = model.tokenizer.encode("a photo of a cat").unwrap().ids;
    let ids = burn::prelude::Tensor::<2, burn::prelude::Int>::from_data(burn::prelude::TensorData::new(ids, [1, 77]), &device);
    assert_close("sd2 from memory: text encoder", model.text_encoder.forward(ids), &refs["text_hidden"], MODULE_TOL);
}

/// The cheap preview is an image of the latents' size in [0, 1], without the VAE.
#[test]
fn preview_is_rgb_in_unit_range() {
    let device = burn::prelude::Device::flex();
    let refs = load_refs(&fixtures().join("sd1_ref.safetensors"));
    let preview = lifelong_diffusion::pipeline::preview_rgb(&refs["final_latents"].tensor(&device));
    assert_eq!(preview.dims(), [1, 3, 16, 16]);
    let v = values(preview);
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    assert!(v.iter().any(|&x| x > 0.0 && x < 1.0), "preview is not all clipped");
}
