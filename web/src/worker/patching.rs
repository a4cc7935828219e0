//! Activation-patching sweeps for the page (`scalpel_experiments::patching`,
//! the same sweep as `scalpel patch`), with progress and Stop.

use super::model::{encode, plain, with_model};
use super::{post, stop_requested, Throttle};
use crate::protocol::{PatchSpec, Response};
use scalpel_engine::Model;
use scalpel_experiments::patching::{sweep, Corruption, Direction, PatchRequest, Strategy};
use scalpel_experiments::readouts::first_token;
use scalpel_types::patching::PatchResult;

pub fn patch(spec: &PatchSpec) -> Result<(), String> {
    with_model(|m| {
        match run_sweep(m, spec)? {
            Some(result) => post(&Response::Patched(Box::new(result))),
            None => post(&Response::Cancelled),
        }
        Ok(())
    })
}

/// The sweep `spec` asks for, posting `Work` as it goes; None if stopped.
pub fn run_sweep(m: &mut Model, spec: &PatchSpec) -> Result<Option<PatchResult>, String> {
    {
        let corruption = if spec.corrupt.is_empty() {
            let positions = spec.noise.clone().unwrap_or_default();
            if positions.is_empty() {
                return Err("give a corrupted prompt, or positions to corrupt with noise".into());
            }
            Corruption::Noise { positions, std: None, seed: spec.seed }
        } else {
            Corruption::Prompt(encode(m, &plain(&spec.corrupt))?)
        };
        let req = PatchRequest {
            clean: encode(m, &plain(&spec.clean))?,
            corruption,
            answer: first_token(m, "answer", &spec.answer).map_err(|e| e.to_string())?,
            wrong: first_token(m, "wrong", &spec.wrong).map_err(|e| e.to_string())?,
            site: spec.family,
            metric: spec.metric,
            strategy: Strategy::Fast,
            direction: if spec.noising { Direction::Noise } else { Direction::Denoise },
        };
        let mut throttle = Throttle::start();
        let mut progress = |done: usize, total: usize| -> bool {
            if throttle.due() || done == total {
                post(&Response::Work { done: done as u32, total: total as u32 });
            }
            !stop_requested()
        };
        match sweep(m, &req, &mut progress) {
            Ok(result) => Ok(Some(result)),
            Err(scalpel_engine::Error::Cancelled) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}
