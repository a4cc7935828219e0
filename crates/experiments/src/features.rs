//! Dictionary features read against the model: what splicing a dictionary
//! in does to the next-token distribution, a latent's dashboard (decoder
//! row → vocabulary, its corpus findings) and latent search by token. The
//! dictionary math is `scalpel_dictionaries`; the vocabulary projection is
//! the neuron readout's (`readouts::vocab_scores`), so a latent and a neuron
//! are read the same way.

use candle_core::{Device, Tensor};
use scalpel_dictionaries::corpus::{contexts, CorpusIndex};
use scalpel_dictionaries::Sae;
use scalpel_engine::{kl_logprobs, log_softmax, top_k, Error, Hook, HookCtx, HookPoint, Logits, Model, Result};
use scalpel_types::features::{LatentCorpus, LatentDashboard, LatentMatch, LatentSearch, Splice};

use crate::readouts::{promoted_suppressed, token_direction, vocab_scores};

fn dict_err(e: String) -> Error {
    Error::input(e)
}

/// Replaces the value at the dictionary's output hook by its output
/// (an SAE: its reconstruction; a transcoder: its prediction from the input
/// hook's value, captured on the way).
struct Spliced<'a> {
    sae: &'a Sae,
    p_in: HookPoint,
    p_out: HookPoint,
    input: Option<Tensor>,
}

impl Hook for Spliced<'_> {
    fn wants(&self, point: HookPoint) -> bool {
        point == self.p_in || point == self.p_out
    }

    fn call(&mut self, ctx: &HookCtx, x: &Tensor) -> Result<Option<Tensor>> {
        if ctx.point == self.p_in && self.p_in != self.p_out {
            self.input = Some(self.sae.rows_of(x)?.0);
            return Ok(None);
        }
        let (rows, dims) = self.sae.rows_of(x)?;
        let input = if self.p_in == self.p_out { rows } else { self.input.take().ok_or_else(|| Error::input("transcoder: its input hook was not reached"))? };
        let (_, out) = self.sae.reconstruct(&input).map_err(dict_err)?;
        Ok(Some(match self.sae.head_index {
            // One head's slice replaced, the others kept.
            Some(h) => {
                let (b, t, nh, dh) = (dims[0], dims[1], dims[2], dims[3]);
                let mut parts = Vec::new();
                if h > 0 {
                    parts.push(x.narrow(2, 0, h)?);
                }
                parts.push(out.reshape((b, t, 1, dh))?);
                if h + 1 < nh {
                    parts.push(x.narrow(2, h + 1, nh - h - 1)?);
                }
                Tensor::cat(&parts, 2)?
            }
            None => out.reshape(dims.as_slice())?,
        }))
    }
}

/// KL(p ‖ q) in nats of two logit rows.
pub fn kl_of_logits(p: &[f32], q: &[f32]) -> f64 {
    kl_logprobs(&log_softmax(p), &log_softmax(q)).max(0.0)
}

/// The model's next-token distribution at every position of `ids`, with and
/// without the dictionary's output in place of the value at its output hook.
pub fn splice(model: &Model, sae: &Sae, ids: &[u32]) -> Result<Splice> {
    let p_in = sae.point(model).map_err(dict_err)?;
    let p_out = sae.point_out(model).map_err(dict_err)?;
    let tokens = model.ids_tensor(ids)?;
    let rows = |l: Tensor| -> Result<Vec<Vec<f32>>> { Ok(l.squeeze(0)?.to_vec2()?) };
    let base = rows(model.forward(&tokens, None, None, Logits::All)?)?;
    let mut hook = Spliced { sae, p_in, p_out, input: None };
    let spliced = rows(model.forward(&tokens, None, Some(&mut hook), Logits::All)?)?;
    let tok = model.tokenizer();
    let argmax = |r: &[f32]| top_k(r, 1).first().map(|x| x.0).unwrap_or(0);
    let (mut kl, mut top_model, mut top_spliced, mut changed) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (a, b) in base.iter().zip(&spliced) {
        kl.push(kl_of_logits(a, b) as f32);
        let (ta, tb) = (argmax(a), argmax(b));
        changed += usize::from(ta != tb);
        top_model.push(tok.decode(&[ta]));
        top_spliced.push(tok.decode(&[tb]));
    }
    Ok(Splice { kl, top_model, top_spliced, top1_changed: changed })
}

/// Whether the dictionary writes to a `d_model`-wide hook, where its
/// decoder rows can be read through the unembedding.
fn check_residual_width(model: &Model, sae: &Sae) -> Result<()> {
    if sae.d_out != model.config.d_model || sae.head_index.is_some() {
        return Err(Error::input(format!(
            "{}: its decoder rows have width {} at '{}'; reading them through the unembedding needs a d_model-wide ({}) hook",
            sae.name,
            sae.d_out,
            sae.hook_out(),
            model.config.d_model
        )));
    }
    Ok(())
}

/// Latent `latent`'s dashboard: its decoder row through the final norm's
/// weight and the unembedding (`top_k` each way), and, given a corpus
/// pass, its histogram and top contexts.
pub fn dashboard(model: &Model, sae: &Sae, latent: usize, top_k: usize, corpus: Option<(&[Vec<u32>], &CorpusIndex)>) -> Result<LatentDashboard> {
    let row = sae.decoder_row(latent).map_err(dict_err)?;
    let decoder_norm = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt() as f32;
    let (promoted, suppressed) = match check_residual_width(model, sae) {
        Ok(()) => promoted_suppressed(model, &vocab_scores(model, &row, true)?, top_k),
        Err(_) => (Vec::new(), Vec::new()),
    };
    let corpus = match corpus {
        None => None,
        Some((windows, ix)) => Some(LatentCorpus {
            windows: ix.windows,
            windows_total: ix.windows_total,
            tokens: ix.tokens,
            complete: ix.complete(),
            fires: ix.fires(latent),
            max: ix.max(latent),
            histogram: ix.histogram(latent),
            contexts: contexts(model, sae, windows, ix, latent).map_err(dict_err)?,
        }),
    };
    Ok(LatentDashboard { latent: latent as u32, hook_out: sae.hook_out().to_string(), decoder_norm, promoted, suppressed, corpus })
}

/// Latents related to token `id`: those whose decoder row raises its logit
/// most (through the final norm's weight, as the dashboard scores them),
/// and, given a corpus pass, those whose top contexts peak on it.
pub fn search_token(model: &Model, sae: &Sae, id: u32, n: usize, corpus: Option<(&[Vec<u32>], &CorpusIndex)>) -> Result<LatentSearch> {
    check_residual_width(model, sae)?;
    if id as usize >= model.config.d_vocab {
        return Err(Error::input(format!("token id {id} is out of range (vocabulary {})", model.config.d_vocab)));
    }
    let u = token_direction(model, id, true)?;
    let ut = Tensor::from_vec(u, (sae.d_out, 1), &Device::Cpu)?;
    let scores: Vec<f32> = sae.decoder_times(&ut).map_err(dict_err)?;
    let writes = top_k(&scores, n).into_iter().map(|(id, score)| LatentMatch { id, score }).collect();
    let mut fires: Vec<LatentMatch> = Vec::new();
    if let Some((windows, ix)) = corpus {
        for j in 0..ix.d_sae {
            let best = ix
                .hits(j)
                .iter()
                .filter(|h| windows.get(h.window as usize).and_then(|w| w.get(h.position as usize)) == Some(&id))
                .map(|h| h.activation)
                .fold(0f32, f32::max);
            if best > 0.0 {
                fires.push(LatentMatch { id: j as u32, score: best });
            }
        }
        fires.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
        fires.truncate(n);
    }
    Ok(LatentSearch { id, token: model.tokenizer().decode(&[id]), writes, fires })
}
