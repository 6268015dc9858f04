//! Issue 5's gradient check: burn's autodiff gradients of the lifelong adapter (LoRA on every
//! `attn2.to_k`/`to_v`, one concept embedding) equal PyTorch's on the tiny SD-1 fixture
//! (tests/fixtures/make_lora_grad.py, formula in lora_grad.json).

mod common;

use burn::prelude::*;
use common::{fixtures, load_refs, max_abs_diff, relative_error, values, Ref};
use lifelong_diffusion::lifelong::adapter::{Adapter, AdapterConfig, Target};
use lifelong_diffusion::lifelong::lesson::Trainer;
use lifelong_diffusion::loader;
use lifelong_diffusion::native::Folder;

fn meta() -> serde_json::Value {
    let text = std::fs::read_to_string(fixtures().join("lora_grad.json")).expect("lora_grad.json");
    serde_json::from_str(&text).expect("json")
}

/// Builds the fixture's adapter: its sites must be the fixture's names, in order.
fn fixture_adapter(trainer: &mut Trainer, refs: &std::collections::HashMap<String, Ref>, meta: &serde_json::Value) -> Adapter {
    let device = trainer.device.clone();
    let config = AdapterConfig {
        rank: meta["rank"].as_u64().expect("rank") as usize,
        alpha: meta["alpha"].as_f64().expect("alpha") as f32,
        targets: vec![Target::ToK, Target::ToV],
    };
    let mut adapter = Adapter::new(&mut trainer.model.unet, config, 0, &device).expect("adapter");
    for (i, site) in adapter.sites.clone().iter().enumerate() {
        let a = refs.get(&format!("{site}.lora_A.weight")).unwrap_or_else(|| panic!("fixture lacks {site}"));
        let b = &refs[&format!("{site}.lora_B.weight")];
        adapter.down[i] = a.tensor::<2>(&device).transpose().detach().require_grad();
        adapter.up[i] = b.tensor::<2>(&device).transpose().detach().require_grad();
    }
    let cid = meta["cid"].as_i64().expect("cid");
    let e = refs["concept_embedding"].tensor::<1>(&device).unsqueeze::<2>();
    adapter.add_concept("fixture", "<fixture>", cid, e).expect("concept");
    adapter
}

#[test]
fn adapter_gradients_match_pytorch() {
    let refs = load_refs(&fixtures().join("lora_grad.safetensors"));
    let meta = meta();
    let device = Device::flex().autodiff();
    let model = loader::load(&Folder(fixtures().join("sd1")), &device).expect("sd1 loads");
    let mut trainer = Trainer::new(model, device.clone()).expect("trainer");
    let adapter = fixture_adapter(&mut trainer, &refs, &meta);
    assert_eq!(adapter.sites.len(), 12, "LoRA sites: {:?}", adapter.sites);

    let ids_ref = &refs["ids"];
    let n = ids_ref.shape[1];
    let ids: Vec<Vec<i64>> = ids_ref.ids().chunks(n).map(<[i64]>::to_vec).collect();
    let t: Vec<f32> = refs["timesteps"].values.clone();
    let x_t = refs["x_t"].tensor::<4>(&device);
    let noise = refs["noise"].tensor::<4>(&device);
    let pred = trainer.predict(&adapter, x_t, &t, &ids).expect("predict");
    let loss = (pred - noise).square().mean();
    let loss_value = values(loss.clone())[0];
    let loss_ref = refs["loss"].values[0];
    eprintln!("loss {loss_value} (PyTorch {loss_ref})");
    assert!((loss_value - loss_ref).abs() <= 1e-5 * loss_ref.abs().max(1.0), "loss {loss_value} vs {loss_ref}");

    let grads = loss.backward();
    let mut worst = (0f32, 0f32, String::new());
    let named: Vec<(String, Tensor<2>, bool)> = adapter
        .sites
        .iter()
        .zip(&adapter.down)
        .map(|(s, t)| (format!("{s}.lora_A.weight"), t.clone(), true))
        .chain(adapter.sites.iter().zip(&adapter.up).map(|(s, t)| (format!("{s}.lora_B.weight"), t.clone(), true)))
        .chain(std::iter::once(("concept_embedding".to_string(), adapter.embeddings[0].clone(), false)))
        .collect();
    for (name, param, transposed) in named {
        let grad = param.grad(&grads).unwrap_or_else(|| panic!("no gradient for {name}"));
        let grad = if transposed { grad.transpose() } else { grad };
        let got = values(grad);
        let expected = &refs[&format!("grad.{name}")].values;
        let (abs, rel) = (max_abs_diff(&got, expected), relative_error(&got, expected));
        assert!(abs <= 1e-4, "{name}: max abs error {abs:e} > 1e-4");
        assert!(rel <= 1e-3, "{name}: error {rel:e} of the gradient's own scale (> 1e-3)");
        if rel > worst.1 {
            worst = (abs, rel, name);
        }
    }
    eprintln!("worst gradient: {} abs {:e} rel {:e}", worst.2, worst.0, worst.1);
}

#[test]
fn zero_lora_b_gives_the_base_loss() {
    let refs = load_refs(&fixtures().join("lora_grad.safetensors"));
    let meta = meta();
    let device = Device::flex().autodiff();
    let model = loader::load(&Folder(fixtures().join("sd1")), &device).expect("sd1 loads");
    let mut trainer = Trainer::new(model, device.clone()).expect("trainer");
    let mut adapter = fixture_adapter(&mut trainer, &refs, &meta);
    adapter.up = adapter.up.iter().map(|u| u.clone().zeros_like()).collect();
    let n = refs["ids"].shape[1];
    let ids: Vec<Vec<i64>> = refs["ids"].ids().chunks(n).map(<[i64]>::to_vec).collect();
    let pred = trainer.predict(&adapter, refs["x_t"].tensor::<4>(&device), &refs["timesteps"].values, &ids).expect("predict");
    let loss = values((pred - refs["noise"].tensor::<4>(&device)).square().mean())[0];
    let expected = refs["loss_without_lora"].values[0];
    assert!((loss - expected).abs() <= 1e-5, "loss without LoRA {loss} vs PyTorch {expected}");
}
