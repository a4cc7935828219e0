//! Where the page's steering vectors come from, besides the intervention
//! document itself: a per-layer separation scan of two prompt sets and an
//! imported control vector (a dictionary's latents: `features.rs`).

use super::model::with_model;
use super::post;
use crate::protocol::Response;
use scalpel_interventions::vectors::{self, Method, MethodOptions, Pool};

/// Most prompts per set for the separation scan (bounds work).
const MAX_SET: usize = 64;

pub fn separation(positive: &[String], negative: &[String], site: &str, method: &str) -> Result<(), String> {
    with_model(|m| {
        let clean = |v: &[String]| v.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>();
        let (pos, neg) = (clean(positive), clean(negative));
        if pos.is_empty() || neg.is_empty() {
            return Err("both prompt sets need at least one prompt".into());
        }
        if pos.len() > MAX_SET || neg.len() > MAX_SET {
            return Err(format!("at most {MAX_SET} prompts per set"));
        }
        let parsed = Method::parse(method)?;
        let (points, _) = vectors::sweep_points(m, &format!("blocks.*.{site}"))?;
        let acts = vectors::collect(m, &pos, &neg, &points, Pool::At(-1), &super::stop_requested)?;
        let x = vectors::extract(&acts, parsed, &MethodOptions::default())?;
        let best = x.best().map(|b| x.scores[b].layer.unwrap_or(b) as u32);
        post(&Response::Separation { site: site.to_string(), method: method.to_string(), scores: x.scores, best });
        Ok(())
    })
}

pub fn import_control_vector(name: &str, bytes: &[u8]) -> Result<(), String> {
    with_model(|m| {
        let (cv, mut warnings) = vectors::read_control_vector(name, bytes)?;
        // Checked against the model the same way the CLI does.
        let (_, more) = vectors::control_vector_document(m, &cv, 1.0)?;
        warnings.extend(more);
        let directions = cv.directions.into_iter().map(|(k, v)| (k as u32, v)).collect();
        post(&Response::ControlVector { name: name.to_string(), directions, warnings });
        Ok(())
    })
}
