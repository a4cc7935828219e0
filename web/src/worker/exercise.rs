//! An exercise's checks, run on the student's state: the next-token
//! distribution and the generation under the student's interventions, the
//! student's patching sweep, and (no model needed) the answer and the stack.
//! What each check asks is `state::exercise::Check`.

use super::compare::compile;
use super::model::{encode, with_model};
use super::{patching, post, stop_requested};
use crate::protocol::{Prompt, Response};
use crate::state::exercise::{check_answer, check_stack, strongest_cell as strongest, Check, CheckOutcome};
use crate::state::Shared;
use scalpel_engine::{logsumexp, Logits, Model};
use scalpel_experiments::readouts::first_token;
use scalpel_interventions::run;
use scalpel_interventions::{Document, Interventions, VERSION};

pub fn check(state: &Shared) -> Result<(), String> {
    let Some(ex) = &state.exercise else { return Err("this state poses no exercise".into()) };
    state.validate()?;
    let mut outcomes = Vec::with_capacity(ex.checks.len());
    for c in &ex.checks {
        let measured = match c {
            Check::Answer { expected } => Ok(Some(check_answer(expected, &state.answer))),
            Check::Stack { op, layer, min, max, max_strength } => Ok(Some(check_stack(&state.stack, *op, *layer, *min, *max, *max_strength))),
            Check::NextToken { token, top1, min_prob, max_prob, baseline } => next_token(state, token, *top1, *min_prob, *max_prob, *baseline),
            Check::Generated { contains, avoids, baseline } => generated(state, contains.as_deref(), avoids.as_deref(), *baseline),
            Check::StrongestCell { layer, position, head } => strongest_cell(state, *layer, *position, *head),
        };
        match measured {
            Ok(Some((pass, measured))) => outcomes.push(CheckOutcome { pass, wanted: c.describe(), measured }),
            Ok(None) => {
                post(&Response::Cancelled);
                return Ok(());
            }
            // A state the check cannot run on fails the check, saying why.
            Err(e) => outcomes.push(CheckOutcome { pass: false, wanted: c.describe(), measured: format!("could not be measured: {e}") }),
        }
    }
    post(&Response::Checked { outcomes });
    Ok(())
}

fn prompt(state: &Shared) -> Prompt {
    Prompt { text: state.prompt.clone(), chat: state.chat }
}

/// The student's document compiled for `ids`, or none (`baseline`, or an
/// empty stack).
fn interventions(m: &Model, state: &Shared, len: usize, baseline: bool) -> Result<Interventions, String> {
    let compiled = if baseline { None } else { compile(m, &state.document()?, len)? };
    match compiled {
        Some(iv) => Ok(iv),
        None => Interventions::compile(m, &Document { version: VERSION, interventions: vec![] }, len).map_err(|e| e.to_string()),
    }
}

type Measured = Result<Option<(bool, String)>, String>;

fn next_token(state: &Shared, token: &str, top1: bool, min_prob: Option<f32>, max_prob: Option<f32>, baseline: bool) -> Measured {
    with_model(|m| {
        let ids = encode(m, &prompt(state))?;
        let id = first_token(m, "token", token).map_err(|e| e.to_string())?;
        let mut iv = interventions(m, state, ids.len(), baseline)?;
        let row: Vec<f32> = run::logit_rows(m, &ids, &mut iv, Logits::Last)
            .and_then(|t| Ok(t.flatten_all()?.to_vec1()?))
            .map_err(|e| e.to_string())?;
        let l = row[id as usize];
        let prob = (l - logsumexp(&row)).exp();
        let rank = 1 + row.iter().filter(|&&x| x > l).count();
        let pass = (!top1 || rank == 1) && min_prob.is_none_or(|p| prob >= p) && max_prob.is_none_or(|p| prob <= p);
        let shown = m.tokenizer().token_strings(&[id]).pop().unwrap_or_default();
        Ok(Some((pass, format!("{shown:?} has probability {:.1}% (rank {rank})", 100.0 * prob))))
    })
}

fn generated(state: &Shared, contains: Option<&str>, avoids: Option<&str>, baseline: bool) -> Measured {
    with_model(|m| {
        let ids = encode(m, &prompt(state))?;
        super::model::check_fits(m, ids.len(), state.sampling.max_new_tokens)?;
        let mut iv = interventions(m, state, ids.len(), baseline)?;
        let mut stopped = false;
        let g = run::generate(m, &ids, &state.sampling, &mut iv, &mut |_| {
            stopped = stop_requested();
            !stopped
        })
        .map_err(|e| e.to_string())?;
        if stopped {
            return Ok(None);
        }
        let text = m.tokenizer().decode(&g.ids);
        let pass = contains.is_none_or(|c| text.contains(c)) && avoids.is_none_or(|a| !text.contains(a));
        let shown: String = text.chars().take(160).collect();
        Ok(Some((pass, format!("generated {shown:?}"))))
    })
}

fn strongest_cell(state: &Shared, layer: Option<u32>, position: Option<u32>, head: Option<u32>) -> Measured {
    with_model(|m| {
        let Some(r) = patching::run_sweep(m, &state.patch)? else { return Ok(None) };
        let Some(c) = strongest(&r) else { return Err("the sweep has no cells".into()) };
        let pass = layer.is_none_or(|x| x == c.layer) && head.is_none_or(|x| Some(x) == c.head) && position.is_none_or(|x| Some(x) == c.position);
        let mut at = vec![format!("layer {}", c.layer)];
        if let Some(h) = c.head {
            at.push(format!("head {h}"));
        }
        if let Some(p) = c.position {
            let token = r.col_labels.get(p as usize).map(|t| format!(" {t:?}")).unwrap_or_default();
            at.push(format!("position {p}{token}"));
        }
        Ok(Some((pass, format!("your sweep ({:?}) is strongest at {}: {:.3}", r.site, at.join(", "), c.value))))
    })
}
