//! Prompt -> latents -> image: classifier-free guidance over a scheduler's steps
//! (diffusers pipelines/stable_diffusion/pipeline_stable_diffusion.py `__call__`).

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::lifelong::artist::{Artist, AttendOptions};
use crate::lifelong::compose::Composer;
use crate::lifelong::orthogonal::{bias_map, extended_context, token_regions, DEFAULT_STRENGTH};
use crate::model::attention::AttnHook;
use crate::loader::LoadedModel;
use crate::rng::Rng;
use crate::scheduler::{self, SchedulerKind};

mod denoising;
use denoising::{ArtistRun, Steer};
pub use denoising::Denoising;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub guidance: f32,
    pub seed: u64,
    /// `None`: the model's own scheduler_config.json class.
    pub scheduler: Option<SchedulerKind>,
    /// Unscaled N(0,1) starting noise `[1, latent, h, w]`, as diffusers' `latents=` argument;
    /// `None`: drawn from `seed`.
    pub init_latents: Option<Tensor<4>>,
    /// Strength of orthogonal attention's edit on prompts with two or more subjects
    /// (src/lifelong/orthogonal.rs: each subject's words attend only in its region); 0 is off,
    /// the plain model.
    pub orthogonal: f32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self { prompt: String::new(), negative_prompt: String::new(), steps: 20, guidance: 7.5, seed: 0, scheduler: None, init_latents: None, orthogonal: DEFAULT_STRENGTH }
    }
}

/// Handed to the progress callback after every denoising step.
pub struct StepProgress<'a> {
    /// 1-based.
    pub step: usize,
    pub total: usize,
    pub timestep: f64,
    /// The current latents; [`preview_rgb`] turns them into a cheap preview.
    pub latents: &'a Tensor<4>,
}

/// The result of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Latents after the last step, before VAE scaling and decoding `[1, latent, h, w]`.
    pub latents: Tensor<4>,
    /// RGB in [0, 1] `[1, 3, H, W]`.
    pub image: Tensor<4>,
    /// Things the user should know (e.g. a prompt truncated to the context length).
    pub warnings: Vec<String>,
}

/// A loaded pipeline ready to generate.
pub struct Pipeline {
    pub model: LoadedModel,
    pub device: Device,
}

impl Pipeline {
    pub fn new(model: LoadedModel, device: Device) -> Self {
        Self { model, device }
    }

    /// Latent size `[channels, h, w]` for the model's native resolution.
    pub fn latent_shape(&self) -> [usize; 3] {
        let size = self.model.unet_config.sample_size.unwrap_or(64);
        [self.model.unet_config.in_channels, size, size]
    }

    /// Image size in pixels `[h, w]` at the native resolution.
    pub fn image_size(&self) -> [usize; 2] {
        let [_, h, w] = self.latent_shape();
        let f = self.model.vae_config.downscale();
        [h * f, w * f]
    }

    /// Text -> `last_hidden_state` `[1, 77, d]`; notes truncation in `warnings`.
    pub fn encode_prompt(&self, text: &str, warnings: &mut Vec<String>) -> Result<Tensor<3>> {
        encode_text(&self.model, text, &self.device, warnings)
    }

    fn initial_latents(&self, options: &GenerateOptions, rng: &mut Rng) -> Result<Tensor<4>> {
        let [c, h, w] = self.latent_shape();
        match &options.init_latents {
            Some(latents) => {
                let [b, lc, _, _] = latents.dims();
                if b != 1 || lc != c {
                    return Err(Error::InvalidInput(format!("init_latents must be [1, {c}, h, w], got {:?}", latents.dims())));
                }
                Ok(latents.clone())
            }
            None => Ok(Tensor::from_data(TensorData::new(rng.normal_vec(c * h * w), [1, c, h, w]), &self.device)),
        }
    }

    /// Runs the whole pipeline. `progress` is called after every step.
    pub fn generate(&self, options: &GenerateOptions, progress: &mut dyn FnMut(StepProgress)) -> Result<Generation> {
        self.generate_composed(options, None, None, progress)
    }

    /// [`Self::generate`] with the concept attention artist (src/lifelong/artist.rs) when `attend`
    /// is given and the prompt names enough subjects; `None` is exactly [`Self::generate`].
    pub fn generate_with(&self, options: &GenerateOptions, attend: Option<&AttendOptions>, progress: &mut dyn FnMut(StepProgress)) -> Result<Generation> {
        self.generate_composed(options, attend, None, progress)
    }

    /// Starts a generation that the caller steps with [`Denoising::step`]: the browser awaits the
    /// GPU between steps (to time them and read previews), which a callback cannot do.
    pub fn start(&self, options: &GenerateOptions) -> Result<Denoising<'_>> {
        self.start_with(options, None)
    }

    /// [`Self::generate_with`], the noise predicted by `composer` when given (routed concepts drawn
    /// each in its own region, src/lifelong/compose.rs).
    pub fn generate_composed(
        &self,
        options: &GenerateOptions,
        attend: Option<&AttendOptions>,
        composer: Option<Composer>,
        progress: &mut dyn FnMut(StepProgress),
    ) -> Result<Generation> {
        let mut run = self.start_with(options, attend)?;
        run.set_composer(composer)?;
        while let Some(step) = run.step()? {
            progress(step);
        }
        run.settle_now()?;
        Ok(run.finish())
    }

    /// [`Self::start`] with the concept attention artist, as [`Self::generate_with`].
    pub fn start_with(&self, options: &GenerateOptions, attend: Option<&AttendOptions>) -> Result<Denoising<'_>> {
        if options.prompt.trim().is_empty() {
            return Err(Error::InvalidInput("the prompt is empty; describe the image you want".into()));
        }
        if !options.guidance.is_finite() || options.guidance < 0.0 {
            return Err(Error::InvalidInput(format!("guidance must be a non-negative number, got {}", options.guidance)));
        }
        if !options.orthogonal.is_finite() || options.orthogonal < 0.0 {
            return Err(Error::InvalidInput(format!("the orthogonal-attention strength must be a non-negative number (0 turns it off), got {}", options.orthogonal)));
        }
        let mut warnings = Vec::new();
        let cond = self.encode_prompt(&options.prompt, &mut warnings)?;
        // diffusers: guidance_scale > 1 turns classifier-free guidance on.
        let cfg = options.guidance > 1.0;
        let context = if cfg {
            let negative = self.encode_prompt(&options.negative_prompt, &mut warnings)?;
            let negative = crate::model::gate::negative_gates(negative, &cond, self.model.gate_tokens.len());
            Tensor::cat(vec![negative, cond], 0)
        } else {
            cond
        };

        let scheduler = scheduler::create(&self.model.scheduler_config, options.scheduler, options.steps)?;
        let mut rng = Rng::new(options.seed);
        let latents = self.initial_latents(options, &mut rng)?.mul_scalar(scheduler.init_noise_sigma());
        let timesteps = scheduler.timesteps().to_vec();
        // The prompt's token strings, once, for whichever of the artist and the edit is on.
        let tokens = if attend.is_some() || options.orthogonal > 0.0 { self.model.tokenizer.tokens(&options.prompt)? } else { Vec::new() };
        let artist = match attend {
            Some(attend) => self.plan_artist(attend, &tokens, timesteps.len(), &context)?,
            None => None,
        };
        let steer = if options.orthogonal > 0.0 { self.plan_orthogonal(options.orthogonal, &tokens, &context)? } else { None };
        Ok(Denoising { pipeline: self, guidance: options.guidance, cfg, context, scheduler, rng, latents, timesteps, index: 0, warnings, artist, steer, composer: None, private: None })
    }

    /// The artist for the prompt's `tokens`, or `None` when it names too few subjects; `context` ends with the
    /// prompt's own embedding (after the negative one under guidance).
    fn plan_artist(&self, attend: &AttendOptions, tokens: &[String], steps: usize, context: &Tensor<3>) -> Result<Option<ArtistRun>> {
        let [_, h, w] = self.latent_shape();
        let context_len = self.model.tokenizer.context_length();
        let Some(artist) = Artist::plan(attend, tokens, context_len, steps, &self.model.unet, [h, w])? else { return Ok(None) };
        let b = context.dims()[0];
        Ok(Some(ArtistRun { artist, cond: context.clone().narrow(0, b - 1, 1), reports: Vec::new() }))
    }

    /// Orthogonal attention's edit for the prompt's `tokens` (src/lifelong/orthogonal.rs), or
    /// `None` when it names fewer than two subjects or gives them no layout: the score bias and
    /// the context it is over (`context`, the batch the UNet will see, with each region's clause).
    fn plan_orthogonal(&self, strength: f32, tokens: &[String], context: &Tensor<3>) -> Result<Option<Steer>> {
        let Some(regions) = token_regions(tokens) else { return Ok(None) };
        let [_, h, w] = self.latent_shape();
        let [batch, len, _] = context.dims();
        // A clause is part of the prompt: any truncation was reported for the prompt itself.
        let clauses = regions.clauses.iter().map(|clause| self.encode_prompt(clause, &mut Vec::new())).collect::<Result<Vec<_>>>()?;
        let bias = bias_map(&regions, len, [h, w], batch, strength, &self.device);
        Ok(Some(Steer { hook: AttnHook::biased(bias), context: extended_context(context, clauses) }))
    }

    /// Latents -> RGB in [0, 1]: [`decode_latents`], then `x/2 + 0.5`.
    pub fn decode(&self, latents: Tensor<4>) -> Tensor<4> {
        decode_latents(&self.model, latents).div_scalar(2.0).add_scalar(0.5).clamp(0.0, 1.0)
    }

    /// RGB in [0, 1] `[1, 3, H, W]` -> latents as the UNet sees them (the inverse of [`Self::decode`],
    /// with the posterior's mean): `(vae.encode(2x - 1).mean - shift) * scaling_factor`.
    pub fn encode(&self, image: Tensor<4>) -> Tensor<4> {
        encode_latents(&self.model, image)
    }
}

/// [`Pipeline::encode_prompt`] for any loaded model (a routed concept's own model composes its
/// clause with it): text -> `last_hidden_state` `[1, 77, d]` on `device`; notes truncation.
pub fn encode_text(model: &LoadedModel, text: &str, device: &Device, warnings: &mut Vec<String>) -> Result<Tensor<3>> {
    let encoded = model.tokenizer.encode(text)?;
    if encoded.truncated {
        warnings.push(format!("the prompt is longer than the model's {} tokens and was truncated", model.tokenizer.context_length()));
    }
    let n = encoded.ids.len();
    let gates = (!model.gate_tokens.is_empty()).then(|| crate::model::gate::gate_channels(std::slice::from_ref(&encoded.ids), &model.gate_tokens, device));
    let ids = Tensor::<2, Int>::from_data(TensorData::new(encoded.ids, [1, n]), device);
    let hidden = model.text_encoder.forward(ids);
    Ok(match gates {
        Some(gates) => Tensor::cat(vec![hidden, gates], 2),
        None => hidden,
    })
}

/// The inverse of [`encode_latents`]: `vae.decode(latents / scaling_factor + shift)`, the image
/// in [-1, 1], unclamped (differentiable w.r.t. the latents on an autodiff device).
pub fn decode_latents(model: &LoadedModel, latents: Tensor<4>) -> Tensor<4> {
    let cfg = &model.vae_config;
    let mut z = latents.div_scalar(cfg.scaling_factor);
    if let Some(shift) = cfg.shift_factor {
        z = z.add_scalar(shift);
    }
    model.vae.decode(z)
}

/// [`Pipeline::encode`] for any loaded model (lessons encode on their autodiff device).
pub fn encode_latents(model: &LoadedModel, image: Tensor<4>) -> Tensor<4> {
    let cfg = &model.vae_config;
    let mut z = model.vae.encode(image.mul_scalar(2.0).sub_scalar(1.0)).mean;
    if let Some(shift) = cfg.shift_factor {
        z = z.sub_scalar(shift);
    }
    z.mul_scalar(cfg.scaling_factor)
}

/// A cheap preview of latents without the VAE: a fixed linear map from SD's four latent channels
/// to RGB (the widely used SD-1.x "latent2rgb" approximation), `[1, 3, h, w]` in [0, 1].
pub fn preview_rgb(latents: &Tensor<4>) -> Tensor<4> {
    const FACTORS: [[f32; 3]; 4] = [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]];
    let [b, c, h, w] = latents.dims();
    let c = c.min(4);
    let map: Vec<f32> = FACTORS[..c].iter().flatten().copied().collect();
    let map = Tensor::<2>::from_data(TensorData::new(map, [c, 3]), &latents.device());
    let flat = latents.clone().narrow(1, 0, c).swap_dims(1, 3).reshape([b * w * h, c]);
    let rgb = flat.matmul(map).reshape([b, w, h, 3]).swap_dims(1, 3);
    rgb.div_scalar(2.0).add_scalar(0.5).clamp(0.0, 1.0)
}

/// `[1, 3, h, w]` in [0, 1] -> interleaved RGB bytes, quantised as diffusers' `numpy_to_pil`
/// (`(x * 255).round()`).
pub fn image_to_rgb8(image: &Tensor<4>) -> Result<Vec<u8>> {
    let hwc = image_hwc(image);
    let values: Vec<f32> = hwc.into_data().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("{e:?}")))?;
    Ok(quantize_rgb8(&values))
}

/// Interleaved RGB bytes of a `size` x `size` image -> `[1, 3, size, size]` in [0, 1] (the inverse
/// of [`image_to_rgb8`] up to quantisation).
pub fn rgb8_to_image(rgb: &[u8], size: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = rgb.iter().map(|&v| f32::from(v) / 255.0).collect();
    Tensor::<3>::from_data(TensorData::new(values, [size, size, 3]), device).permute([2, 0, 1]).unsqueeze_dim::<4>(0)
}

/// `[1, 3, h, w]` -> `[h, w, 3]`, the layout of [`quantize_rgb8`]'s input (the browser reads it
/// back asynchronously, so it cannot use [`image_to_rgb8`]).
pub fn image_hwc(image: &Tensor<4>) -> Tensor<3> {
    image.clone().squeeze_dim::<3>(0).permute([1, 2, 0])
}

/// Values in [0, 1] -> bytes, as diffusers' `numpy_to_pil`: `(x * 255).round()`.
pub fn quantize_rgb8(values: &[f32]) -> Vec<u8> {
    values.iter().map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8).collect()
}
