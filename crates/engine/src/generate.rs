//! Text generation: KV-cached decoding with greedy or seeded sampling.

use rand::{rngs::StdRng, Rng, SeedableRng};

use crate::error::{Error, Result};
use crate::hooks::Hook;
use crate::model::{KvCache, Logits, Model};

pub use scalpel_types::GenerateOptions;

/// Picks the next token from logits; deterministic for a given seed on
/// every platform (ChaCha-based `StdRng`).
pub struct Sampler {
    rng: StdRng,
    opts: GenerateOptions,
}

impl Sampler {
    pub fn new(opts: &GenerateOptions) -> Self {
        Sampler { rng: StdRng::seed_from_u64(opts.seed), opts: opts.clone() }
    }

    /// The next number of the seeded uniform stream in [0, 1): `sample`
    /// draws exactly one per token when `temperature > 0`. The GPU sampler
    /// (crates/gpu) draws from the same stream, so a seed picks the same
    /// tokens on both paths.
    pub fn next_uniform(&mut self) -> f32 {
        self.rng.random()
    }

    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.opts.temperature == 0.0 {
            return argmax(logits);
        }
        let t = self.opts.temperature;
        let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l / t)).collect();
        // Highest first; ties by id so the order never depends on the sort.
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if let Some(k) = self.opts.top_k {
            cand.truncate(k.max(1));
        }
        let max = cand[0].1;
        let mut probs: Vec<f32> = cand.iter().map(|c| (c.1 - max).exp()).collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        if let Some(top_p) = self.opts.top_p {
            let mut acc = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                acc += p;
                if acc >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
            let s: f32 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= s);
        }
        let r = self.next_uniform();
        let mut acc = 0.0;
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if r < acc {
                return cand[i].0;
            }
        }
        cand[probs.len() - 1].0
    }
}

pub fn argmax(xs: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in xs.iter().enumerate() {
        if x > xs[best] {
            best = i;
        }
    }
    best as u32
}

/// Generates up to `max_new_tokens` after `prompt`. `on_token` sees each new
/// id as it is produced and returns false to stop early. Hooks run on the
/// prompt and on every generated token (with absolute positions).
pub fn generate(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut hooks: Option<&mut (dyn Hook + '_)>,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    opts.validate().map_err(Error::Input)?;
    let n_ctx = model.config.n_ctx;
    if prompt.len() >= n_ctx {
        return Err(Error::input(format!(
            "the prompt has {} tokens; the model's context length is {n_ctx}, leaving no room to generate",
            prompt.len()
        )));
    }
    let mut cache = KvCache::new(&model.config);
    let mut sampler = Sampler::new(opts);
    let mut out = Vec::new();
    let mut input = model.ids_tensor(prompt)?;
    let budget = opts.max_new_tokens.min(n_ctx - prompt.len());
    while out.len() < budget {
        let logits = model.forward(&input, Some(&mut cache), hooks.as_deref_mut(), Logits::Last)?;
        let row: Vec<f32> = logits.flatten_all()?.to_vec1()?;
        let next = sampler.sample(&row);
        out.push(next);
        if !on_token(next) || (opts.stop_at_eos && model.tokenizer().is_eos(next)) {
            break;
        }
        input = model.ids_tensor(&[next])?;
    }
    Ok(out)
}
