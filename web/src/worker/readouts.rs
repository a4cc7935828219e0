//! Reading the model for the page: logit lens, attention patterns, direct
//! logit attribution and neuron → vocabulary, each under the document's
//! interventions where the request carries one (`scalpel_experiments::readouts`).

use super::compare::compile;
use super::model::{encode, with_model};
use super::post;
use crate::protocol::{Prompt, Response};
use scalpel_engine::{Hook, Model};
use scalpel_experiments::readouts::{self as r, first_token};
use scalpel_interventions::run;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs `f` with the document's hook (and weight edits) in place.
fn with_doc<T>(m: &mut Model, doc: &str, prompt_len: usize, f: impl FnOnce(&Model, Option<&mut dyn Hook>) -> Result<T, String>) -> Result<T, String> {
    let Some(mut iv) = compile(m, doc, prompt_len)? else { return f(m, None) };
    let saved = run::apply_weights(m, &iv).map_err(text)?;
    let out = f(m, Some(&mut iv));
    run::restore_weights(m, saved);
    out
}

/// `text`'s first token, or None for an empty field.
fn optional_token(m: &Model, what: &str, text: &str) -> Result<Option<u32>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    first_token(m, what, text).map(Some).map_err(|e| e.to_string())
}

/// Most positions the logit lens decodes (the last ones of a longer prompt).
pub const LENS_POSITIONS: usize = 64;

pub fn lens(prompt: &Prompt, doc: &str, target: &str) -> Result<(), String> {
    with_model(|m| {
        let ids = encode(m, prompt)?;
        // Each decoded cell is a full-vocabulary row: decode only the
        // positions the grid can show.
        let positions = (ids.len() > LENS_POSITIONS).then(|| (-(LENS_POSITIONS as i64)..0).collect());
        let opts = r::LensOptions { top_k: 3, target: optional_token(m, "target", target)?, positions, ..Default::default() };
        let lens = with_doc(m, doc, ids.len(), |m, hook| r::logit_lens(m, &ids, &opts, hook).map_err(text))?;
        post(&Response::Lens(Box::new(lens)));
        Ok(())
    })
}

/// Longest prompt (tokens) for the attention view: patterns are n² per head.
const MAX_ATTENTION_TOKENS: usize = 256;

pub fn attention(prompt: &Prompt, doc: &str) -> Result<(), String> {
    with_model(|m| {
        let ids = encode(m, prompt)?;
        if ids.len() > MAX_ATTENTION_TOKENS {
            return Err(format!("the attention view takes at most {MAX_ATTENTION_TOKENS} tokens; this prompt has {}", ids.len()));
        }
        let patterns = with_doc(m, doc, ids.len(), |m, hook| r::attention_patterns(m, &ids, None, None, hook).map_err(text))?;
        post(&Response::Attention(Box::new(patterns)));
        Ok(())
    })
}

pub fn dla(prompt: &Prompt, doc: &str, answer: &str, wrong: &str) -> Result<(), String> {
    with_model(|m| {
        let ids = encode(m, prompt)?;
        let answer = first_token(m, "answer", answer).map_err(text)?;
        let req = r::DlaRequest { ids: ids.clone(), answer, wrong: optional_token(m, "wrong", wrong)?, position: -1 };
        let dla = with_doc(m, doc, ids.len(), |m, hook| r::direct_logit_attribution(m, &req, hook).map_err(text))?;
        post(&Response::Dla(Box::new(dla)));
        Ok(())
    })
}

pub fn neuron(layer: u32, neuron: u32, top_k: u32, prompt: &Prompt) -> Result<(), String> {
    with_model(|m| {
        let ids = if prompt.text.is_empty() { None } else { Some(encode(m, prompt)?) };
        let req = r::NeuronRequest {
            layer: layer as usize,
            neuron: neuron as usize,
            top_k: top_k.clamp(1, 100) as usize,
            through_final_norm: true,
            prompt: ids,
        };
        let result = r::neuron_vocab(m, &req, None).map_err(text)?;
        post(&Response::Neuron(Box::new(result)));
        Ok(())
    })
}
