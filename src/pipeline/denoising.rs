//! A generation in progress ([`Denoising`]): one scheduler step at a time, with the artist's
//! latent updates, orthogonal attention's bias and the composer's regions when they are on.

use burn::prelude::*;

use super::{Generation, Pipeline, StepProgress};
use crate::error::Result;
use crate::lifelong::artist::{Artist, StepReport};
use crate::lifelong::compose::{Composer, PrivateViews};
use crate::model::attention::AttnHook;
use crate::rng::Rng;
use crate::scheduler;

/// A generation in progress: the text is encoded and the noise drawn; each [`Denoising::step`]
/// runs one scheduler step (UNet, guidance, scheduler update).
pub struct Denoising<'a> {
    pub(super) pipeline: &'a Pipeline,
    pub(super) guidance: f32,
    pub(super) cfg: bool,
    pub(super) context: Tensor<3>,
    pub(super) scheduler: Box<dyn scheduler::Scheduler>,
    pub(super) rng: Rng,
    pub(super) latents: Tensor<4>,
    pub(super) timesteps: Vec<f64>,
    pub(super) index: usize,
    pub(super) warnings: Vec<String>,
    pub(super) artist: Option<ArtistRun>,
    /// Orthogonal attention's score bias, when it is on and the prompt has a layout.
    pub(super) steer: Option<Steer>,
    pub(super) composer: Option<Composer>,
    /// The composer's parts' own latents while they run ([`Composer::private_views`]).
    pub(super) private: Option<PrivateViews>,
}

/// Orthogonal attention's edit: the score bias and the context it is over, the prompt's
/// extended with each region's clause (src/lifelong/orthogonal.rs).
pub(super) struct Steer {
    pub(super) hook: AttnHook,
    pub(super) context: Tensor<3>,
}

/// Classifier-free guidance: `uncond + guidance * (text - uncond)` over the batch's two halves
/// (negative prompt first); the output itself without guidance.
fn guided(out: Tensor<4>, cfg: bool, guidance: f32) -> Tensor<4> {
    if !cfg {
        return out;
    }
    let mut halves = out.chunk(2, 0);
    let text = halves.pop().expect("two halves");
    let uncond = halves.pop().expect("two halves");
    uncond.clone() + (text - uncond).mul_scalar(guidance)
}

/// The artist of a generation in progress, the prompt's own text, and what it did so far.
pub(super) struct ArtistRun {
    pub(super) artist: Artist,
    pub(super) cond: Tensor<3>,
    pub(super) reports: Vec<StepReport>,
}

impl Denoising<'_> {
    /// Number of denoising steps.
    pub fn total(&self) -> usize {
        self.timesteps.len()
    }

    /// Runs the next step; `None` once every step has run.
    pub fn step(&mut self) -> Result<Option<StepProgress<'_>>> {
        let Some(&t) = self.timesteps.get(self.index) else { return Ok(None) };
        let i = self.index;
        // While the composer's parts draw on latents of their own, the image is theirs: the
        // artist's edit of it would be overwritten, so it waits for the shared steps.
        if self.private.as_ref().is_none_or(|views| i >= views.steps) {
            self.run_artist(i, t)?;
        }
        let latents = self.latents.clone();
        // Drawn before the UNet runs (the private views step with it too); the draws' order is unchanged.
        let noise = self.scheduler.needs_noise().then(|| {
            let dims = latents.dims();
            Tensor::from_data(TensorData::new(self.rng.normal_vec(dims.iter().product()), dims), &self.pipeline.device)
        });
        let (cfg, guidance) = (self.cfg, self.guidance);
        let guide = move |out: Tensor<4>| guided(out, cfg, guidance);
        let private = match (&self.composer, self.private.as_mut()) {
            (Some(composer), Some(views)) if i < views.steps => Some(composer.step_private(views, i, t as f32, &self.context, &guide, noise.as_ref())?),
            _ => None,
        };
        let (prediction, image) = match private {
            Some((prediction, image)) => (prediction, Some(image)),
            None => (guide(self.predict(latents.clone(), i, t)), None),
        };
        self.latents = self.scheduler.step(prediction, i, latents, noise)?;
        // The parts' own latents are the image during their steps (the shared sampler's step gives
        // the same for DDIM and Euler; this keeps the others exact too).
        if let Some(image) = image {
            self.latents = image;
        }
        self.index += 1;
        Ok(Some(StepProgress { step: self.index, total: self.timesteps.len(), timestep: t, latents: &self.latents }))
    }

    /// Draws the remaining steps with `composer`'s noise prediction (routed concepts each in its
    /// own region, src/lifelong/compose.rs); `None` goes back to the pipeline's model. Set before
    /// the first step, the composer's parts first draw on latents of their own
    /// ([`Composer::private_views`]).
    pub fn set_composer(&mut self, composer: Option<Composer>) -> Result<()> {
        self.private = match (&composer, self.index) {
            (Some(c), 0) => {
                let (config, kind, total) = (&self.pipeline.model.scheduler_config, Some(self.scheduler.kind()), self.timesteps.len());
                // Further drawings' noise comes after the shared noise, as a larger batch's would.
                let (dims, sigma, device, rng) = (self.latents.dims(), self.scheduler.init_noise_sigma(), &self.pipeline.device, &mut self.rng);
                let mut noise = || Tensor::<4>::from_data(TensorData::new(rng.normal_vec(dims.iter().product()), dims), device).mul_scalar(sigma);
                c.private_views(&self.latents, total, &|| Ok(scheduler::create(config, kind, total)?), &mut noise)?
            }
            _ => None,
        };
        self.composer = composer;
        Ok(())
    }

    /// The UNet's output for step `i` on the shared `latents` (both halves under guidance).
    fn predict(&self, latents: Tensor<4>, i: usize, t: f64) -> Tensor<4> {
        let input = if self.cfg { Tensor::cat(vec![latents.clone(), latents], 0) } else { latents };
        let input = self.scheduler.scale_model_input(input, i);
        let unet = &self.pipeline.model.unet;
        match &self.composer {
            Some(composer) => composer.predict(input, t as f32, &self.context),
            None => match &self.steer {
                Some(steer) => unet.forward_with_maps(input, t as f32, &steer.context, &steer.hook).0,
                None => unet.forward(input, t as f32, &self.context),
            },
        }
    }

    /// What the concept attention artist did, one report per step it ran (empty without it).
    pub fn artist_reports(&self) -> &[StepReport] {
        self.artist.as_ref().map_or(&[], |run| run.reports.as_slice())
    }

    /// Whether the concept attention artist runs for this generation.
    pub fn artist_active(&self) -> bool {
        self.artist.is_some()
    }

    /// Edits the latents before step `i` when the artist runs there.
    fn run_artist(&mut self, i: usize, t: f64) -> Result<()> {
        let Some(run) = self.artist.as_mut().filter(|run| run.artist.active(i)) else { return Ok(()) };
        // The scheduler's model-input scale at this step (1 for DDIM, 1/sqrt(sigma^2+1) for Euler).
        let one = Tensor::<4>::ones([1, 1, 1, 1], &self.pipeline.device);
        let scale = self.scheduler.scale_model_input(one, i).into_scalar::<f32>();
        let unet = &self.pipeline.model.unet;
        let (latents, report) = run.artist.alter(unet, self.latents.clone(), i, t as f32, scale, &run.cond)?;
        self.latents = latents;
        run.reports.push(report);
        Ok(())
    }

    /// The composer's drawings to choose among, decoded (RGB in [0, 1], `[1, 3, H, W]` each), after
    /// the last step of a composition in which a concept drew more than once
    /// ([`Composer::tries`]): every drawing of each such concept, in part order. Read their
    /// pixels back (asynchronously on WebGPU) and pass them to [`Self::choose`] before
    /// [`Self::to_settle`]; [`Self::choose_now`] does both where reading can block (and
    /// [`Self::settle_now`] calls it).
    pub fn to_choose(&self) -> Option<Vec<Tensor<4>>> {
        let (composer, views) = (self.composer.as_ref()?, self.private.as_ref()?);
        let batches = composer.to_choose(views, self.index)?;
        // One decoder pass a part; one image a drawing, in the batches' order.
        let images = batches.into_iter().map(|latents| self.pipeline.decode(latents));
        Some(images.flat_map(|batch| { let n = batch.dims()[0]; batch.chunk(n, 0) }).collect())
    }

    /// Keeps each concept's drawing that looks most like its lesson pictures, given
    /// [`Self::to_choose`]'s images as interleaved 8-bit RGB (`width` x `height`).
    pub fn choose(&mut self, drawings: &[Vec<u8>], width: usize, height: usize) {
        let (Some(composer), Some(views)) = (self.composer.as_ref(), self.private.as_mut()) else { return };
        self.latents = composer.choose(views, drawings, width, height);
    }

    /// [`Self::to_choose`] and [`Self::choose`] with a blocking read-back (native backends).
    pub fn choose_now(&mut self) -> Result<()> {
        let Some(images) = self.to_choose() else { return Ok(()) };
        let [_, _, height, width] = images[0].dims();
        let drawings = images.iter().map(super::image_to_rgb8).collect::<Result<Vec<_>>>()?;
        self.choose(&drawings, width, height);
        Ok(())
    }

    /// The composer's finished parts, when their objects may still move apart
    /// (src/lifelong/compose/settle.rs): after the last step of a composition whose parts drew on
    /// latents of their own throughout. Read their values back (asynchronously on WebGPU) and
    /// pass them to [`Self::settle`]; [`Self::settle_now`] does both where reading can block.
    pub fn to_settle(&self) -> Option<Vec<Tensor<4>>> {
        let (composer, views) = (self.composer.as_ref()?, self.private.as_ref()?);
        composer.to_settle(views, self.index)
    }

    /// Moves the composed objects apart given [`Self::to_settle`]'s latents' `values`
    /// (channel-major, one list per part); leaves the image as drawn when no object is found.
    pub fn settle(&mut self, values: &[Vec<f32>]) {
        let (Some(composer), Some(views)) = (self.composer.as_ref(), self.private.as_ref()) else { return };
        if let Some(image) = composer.settled(views, values) {
            self.latents = image;
        }
        // Once: a second call would move the objects again from the parts' latents.
        self.private = None;
    }

    /// [`Self::choose_now`], then [`Self::to_settle`] and [`Self::settle`] with a blocking
    /// read-back (native backends): everything a composition does after its last step.
    pub fn settle_now(&mut self) -> Result<()> {
        self.choose_now()?;
        let Some(parts) = self.to_settle() else { return Ok(()) };
        let values = parts
            .into_iter()
            .map(|t| t.into_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| crate::error::Error::InvalidInput(format!("reading the composed latents back: {e:?}"))))
            .collect::<Result<Vec<_>>>()?;
        self.settle(&values);
        Ok(())
    }

    /// The final latents without decoding them (replay memory keeps latents, not images).
    pub fn finish_latents(self) -> Tensor<4> {
        self.latents
    }

    /// Decodes the final latents (call after the last step).
    pub fn finish(self) -> Generation {
        let image = self.pipeline.decode(self.latents.clone());
        Generation { latents: self.latents, image, warnings: self.warnings }
    }
}
