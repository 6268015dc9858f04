//! Task-aware memory enhancement (TAME, L2DM Sec. 3.2): a short-term memory of *generated*
//! (prompt, latents) samples per concept, replayed in later lessons, and a long-term bank of
//! features per concept that decides which regenerated candidates to keep (the paper's
//! rainbow memory: samples that still look like the concept, and not all alike).
//!
//! No user image is kept: the bank holds feature vectors of the lesson's latents only.

use burn::prelude::*;

use super::store::{ConceptMemory, NamedTensor};
use super::learner::MemoryOptions;
use crate::error::{Error, Result};
use crate::pipeline::{GenerateOptions, Pipeline};

/// One replayable sample.
#[derive(Debug, Clone)]
pub struct MemoryItem {
    pub prompt: String,
    /// Scaled VAE latents `[1, c, h, w]` as the UNet sees them.
    pub latents: Tensor<4>,
    /// Match with the concept's long-term bank (higher is better).
    pub score: f32,
}

/// Memory of one concept (`concept: None` holds base-model samples that protect prompts without
/// concepts).
#[derive(Debug, Clone)]
pub struct Memory {
    pub concept: Option<String>,
    pub items: Vec<MemoryItem>,
    /// Long-term features, one row per lesson image.
    pub bank: Vec<Vec<f32>>,
}

/// The values of `latents` `[1, c, h, w]` (channel-major) and each position's squared distance
/// from the per-channel median latent vector, which stands for the background.
fn from_median(latents: &Tensor<4>, what: &str) -> Result<(Vec<f32>, Vec<f32>)> {
    let [_, c, h, w] = latents.dims();
    let values: Vec<f32> = latents.to_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("latents: {e:?}")))?;
    let n = h * w;
    if values.len() < c * n || n == 0 {
        return Err(Error::InvalidInput(format!("{what} needs latents [1, c, h, w]")));
    }
    let median: Vec<f32> = (0..c)
        .map(|ch| {
            let mut v = values[ch * n..(ch + 1) * n].to_vec();
            v.sort_by(f32::total_cmp);
            v[n / 2]
        })
        .collect();
    let dist = (0..n).map(|p| (0..c).map(|ch| (values[ch * n + p] - median[ch]).powi(2)).sum::<f32>()).collect();
    Ok((values, dist))
}

/// Fraction of latent positions taken as "the object": those farthest from the median latent.
const OBJECT_FRACTION: f32 = 0.15;

/// A position-invariant descriptor of what latents show: mean and standard deviation of the
/// latent vectors at the positions that differ most from the median (the background), plus
/// their spread in space. Where the object is and what lies behind it do not change it.
pub fn features(latents: &Tensor<4>) -> Result<Vec<f32>> {
    let [_, c, h, w] = latents.dims();
    let (values, dist) = from_median(latents, "features")?;
    let n = h * w;
    let at = |ch: usize, p: usize| values[ch * n + p];
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| dist[b].total_cmp(&dist[a]));
    let k = ((n as f32 * OBJECT_FRACTION) as usize).max(1);
    let picked = &order[..k];
    let mut out = Vec::with_capacity(2 * c);
    for ch in 0..c {
        let mean = picked.iter().map(|&p| at(ch, p)).sum::<f32>() / k as f32;
        let var = picked.iter().map(|&p| (at(ch, p) - mean).powi(2)).sum::<f32>() / k as f32;
        out.push(mean);
        out.push(var.sqrt());
    }
    Ok(out)
}

/// Share of the largest distance from the median latent above which a position is "the object".
pub(crate) const OBJECT_THRESHOLD: f32 = 0.15;

/// Where the object is in `latents` `[1, c, h, w]`: 1 at positions whose latent vector lies
/// farther than `OBJECT_THRESHOLD` of the largest distance from the median one (the background),
/// and at their eight neighbours (soft edges), 0 elsewhere; `h * w` values, row-major.
pub fn object_mask(latents: &Tensor<4>) -> Result<Vec<f32>> {
    let [_, _, h, w] = latents.dims();
    let (_, squared) = from_median(latents, "an object mask")?;
    let n = h * w;
    let dist: Vec<f32> = squared.iter().map(|d| d.sqrt()).collect();
    let cut = OBJECT_THRESHOLD * dist.iter().copied().fold(0.0, f32::max);
    let core = |y: i64, x: i64| y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w && dist[y as usize * w + x as usize] > cut;
    Ok((0..n)
        .map(|p| {
            let (y, x) = ((p / w) as i64, (p % w) as i64);
            let near = (-1..=1).any(|dy| (-1..=1).any(|dx| core(y + dy, x + dx)));
            if near && cut > 0.0 { 1.0 } else { 0.0 }
        })
        .collect())
}

/// Similarity of `f` to the bank: the best cosine similarity to any bank row (-1 for an empty bank).
pub fn bank_score(f: &[f32], bank: &[Vec<f32>]) -> f32 {
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-8);
    bank.iter()
        .map(|b| b.iter().zip(f).map(|(x, y)| x * y).sum::<f32>() / (norm(b) * norm(f)))
        .fold(-1.0, f32::max)
}

impl Memory {
    /// Keeps the best `keep` of the current items and `candidates` (scored against the bank),
    /// preferring different prompts among equals so the memory stays varied (rainbow memory).
    pub fn refresh(&mut self, candidates: Vec<MemoryItem>, keep: usize) {
        let mut all: Vec<MemoryItem> = self.items.drain(..).chain(candidates).collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<MemoryItem> = Vec::with_capacity(keep);
        let mut rest = Vec::new();
        for item in all {
            if kept.len() < keep && !kept.iter().any(|k| k.prompt == item.prompt) {
                kept.push(item);
            } else {
                rest.push(item);
            }
        }
        kept.extend(rest.into_iter().take(keep.saturating_sub(kept.len())));
        self.items = kept;
    }

    /// For the store: prompts, latents (`memory.latents`, `[n, c, h, w]`), scores and bank.
    pub fn to_blob(&self) -> Result<ConceptMemory> {
        let mut tensors = Vec::new();
        if let Some(first) = self.items.first() {
            let [_, c, h, w] = first.latents.dims();
            let lat = Tensor::cat(self.items.iter().map(|i| i.latents.clone()).collect(), 0);
            let data = lat.to_data().convert::<f32>().try_to_vec::<f32>().map_err(|e| Error::InvalidInput(format!("{e:?}")))?;
            tensors.push(NamedTensor::new("memory.latents", vec![self.items.len(), c, h, w], data));
            tensors.push(NamedTensor::new("memory.scores", vec![self.items.len()], self.items.iter().map(|i| i.score).collect()));
        }
        if let Some(row) = self.bank.first() {
            let data: Vec<f32> = self.bank.iter().flatten().copied().collect();
            tensors.push(NamedTensor::new("memory.bank", vec![self.bank.len(), row.len()], data));
        }
        let concept = self.concept.clone().unwrap_or_default();
        Ok(ConceptMemory { concept, prompts: self.items.iter().map(|i| i.prompt.clone()).collect(), tensors })
    }

    /// Back from the store onto `device`; an empty concept name is the base memory.
    pub fn from_blob(blob: &ConceptMemory, device: &Device) -> Result<Self> {
        let find = |name: &str| blob.tensors.iter().find(|t| t.name == name);
        let bad = |what: &str| Error::InvalidInput(format!("memory of `{}`: {what}; export the store again or remove the concept", blob.concept));
        let mut items = Vec::new();
        if let Some(lat) = find("memory.latents") {
            let [n, c, h, w]: [usize; 4] = lat.shape.clone().try_into().map_err(|_| bad("latents are not rank 4"))?;
            if n != blob.prompts.len() || lat.data.len() != n * c * h * w {
                return Err(bad("latents and prompts disagree"));
            }
            let scores = find("memory.scores").map(|s| s.data.clone()).unwrap_or_else(|| vec![0.0; n]);
            let all = Tensor::<4>::from_data(TensorData::new(lat.data.clone(), [n, c, h, w]), device);
            for (i, prompt) in blob.prompts.iter().enumerate() {
                items.push(MemoryItem { prompt: prompt.clone(), latents: all.clone().narrow(0, i, 1), score: scores.get(i).copied().unwrap_or(0.0) });
            }
        }
        let bank = match find("memory.bank") {
            Some(b) if b.shape.len() == 2 && b.shape[1] > 0 => b.data.chunks(b.shape[1]).map(<[f32]>::to_vec).collect(),
            Some(_) => return Err(bad("the feature bank is not a matrix")),
            None => Vec::new(),
        };
        let concept = (!blob.concept.is_empty()).then(|| blob.concept.clone());
        Ok(Self { concept, items, bank })
    }
}

/// Generates `n` samples cycling through `prompts`, scored against `bank`.
pub(super) fn generate_items(pipeline: &Pipeline, prompts: &[String], n: usize, options: &MemoryOptions, bank: &[Vec<f32>], seed: u64) -> Result<Vec<MemoryItem>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n.min(prompts.len().max(1) * 8) {
        let Some(prompt) = prompts.get(i % prompts.len().max(1)) else { break };
        let opts = GenerateOptions { prompt: prompt.clone(), steps: options.steps, guidance: options.guidance, seed: seed.wrapping_mul(31).wrapping_add(i as u64), ..Default::default() };
        let mut run = pipeline.start(&opts)?;
        while run.step()?.is_some() {}
        let latents = run.finish_latents();
        let score = if bank.is_empty() { 0.0 } else { bank_score(&features(&latents)?, bank) };
        out.push(MemoryItem { prompt: prompt.clone(), latents, score });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob_latents(offset: usize, value: f32) -> Tensor<4> {
        let mut v = vec![0.1f32; 4 * 64];
        for ch in 0..4 {
            for p in offset..offset + 9 {
                v[ch * 64 + p] = value + ch as f32;
            }
        }
        Tensor::from_data(TensorData::new(v, [1, 4, 8, 8]), &Device::flex())
    }

    #[test]
    fn features_ignore_where_the_object_is() {
        let a = features(&blob_latents(0, 2.0)).unwrap();
        let b = features(&blob_latents(40, 2.0)).unwrap();
        let other = features(&blob_latents(40, -3.0)).unwrap();
        assert!(bank_score(&a, std::slice::from_ref(&b)) > 0.999, "{a:?} vs {b:?}");
        assert!(bank_score(&other, std::slice::from_ref(&a)) < bank_score(&b, &[a]));
    }

    #[test]
    fn object_mask_covers_the_blob_and_its_rim() {
        // A 3 x 3 blob at rows 1-3, columns 1-3 of an 8 x 8 grid (positions 9..18 in row-major
        // order hold 9 values, so place it explicitly).
        let mut v = vec![0.1f32; 4 * 64];
        for ch in 0..4 {
            for y in 1..4 {
                for x in 1..4 {
                    v[ch * 64 + y * 8 + x] = 2.0;
                }
            }
        }
        let mask = object_mask(&Tensor::from_data(TensorData::new(v, [1, 4, 8, 8]), &Device::flex())).unwrap();
        let at = |y: usize, x: usize| mask[y * 8 + x];
        assert_eq!((at(2, 2), at(0, 0), at(4, 4), at(4, 2)), (1.0, 1.0, 1.0, 1.0), "blob and its eight-neighbour rim");
        assert_eq!((at(5, 5), at(2, 5), at(7, 7)), (0.0, 0.0, 0.0), "background beyond the rim");
        assert_eq!(mask.iter().sum::<f32>(), 25.0);
        let flat = object_mask(&Tensor::from_data(TensorData::new(vec![0.3f32; 4 * 64], [1, 4, 8, 8]), &Device::flex())).unwrap();
        assert!(flat.iter().all(|&m| m == 0.0), "a picture without an object has no object positions");
    }

    #[test]
    fn refresh_keeps_the_best_and_varied() {
        let item = |p: &str, s: f32| MemoryItem { prompt: p.into(), latents: blob_latents(0, 1.0), score: s };
        let mut m = Memory { concept: Some("x".into()), items: vec![item("a", 0.5), item("b", 0.9)], bank: vec![] };
        m.refresh(vec![item("a", 0.95), item("a", 0.99), item("c", 0.1)], 3);
        let prompts: Vec<&str> = m.items.iter().map(|i| i.prompt.as_str()).collect();
        assert_eq!(prompts, ["a", "b", "c"], "best per prompt first, then the rest");
        assert!((m.items[0].score - 0.99).abs() < 1e-6);
    }

    #[test]
    fn blob_round_trip() {
        let m = Memory {
            concept: Some("x".into()),
            items: vec![MemoryItem { prompt: "a <x>".into(), latents: blob_latents(3, 1.0), score: 0.7 }],
            bank: vec![vec![1.0, 2.0], vec![3.0, 4.0]],
        };
        let back = Memory::from_blob(&m.to_blob().unwrap(), &Device::flex()).unwrap();
        assert_eq!(back.items[0].prompt, "a <x>");
        assert_eq!(back.bank, m.bank);
        assert_eq!(back.items[0].latents.to_data(), m.items[0].latents.to_data());
    }
}
