//! The networks of a Stable Diffusion pipeline, backend-agnostic, named after checkpoint keys.

pub mod attention;
pub mod clip;
pub mod embeddings;
pub mod gate;
pub mod nn;
pub mod resnet;
pub mod unet;
pub mod unet_blocks;
pub mod vae;

pub use clip::ClipTextModel;
pub use unet::UNet2DConditionModel;
pub use vae::AutoencoderKL;
