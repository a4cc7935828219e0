//! `scalpel lens`, `scalpel dla`, `scalpel attention`, `scalpel neuron` and
//! `scalpel monitor`: reading the model. JSON outputs: docs/readouts.md.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;

use scalpel_engine::{Hook, Model};
use scalpel_experiments::readouts::{
    attention_patterns, direct_logit_attribution, first_token, logit_lens, monitor, neuron_vocab, read_vector,
    DlaRequest, LensOptions, NeuronRequest,
};
use scalpel_interventions::{run, Interventions};

use crate::args::{input_ids, load, print_json, InputArgs, ModelArgs, SamplingArgs};

#[derive(Args, Clone)]
pub struct LensArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    /// Tokens listed per (layer, position).
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Report this token's probability and rank everywhere (its first token; e.g. " Paris").
    #[arg(long, allow_hyphen_values = true)]
    target: Option<String>,
    /// Layers to decode, e.g. `0,5,29` or `20-29` (default: all).
    #[arg(long)]
    layers: Option<String>,
    /// Positions, e.g. `-1` or `0,3,-1` (negative counts from the end; default: all).
    #[arg(long, allow_hyphen_values = true)]
    positions: Option<String>,
    /// Leave out the embeddings row (blocks.0.hook_resid_pre).
    #[arg(long)]
    no_embed: bool,
}

#[derive(Args, Clone)]
pub struct DlaArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    /// The answer (its first token; include a leading space, e.g. " Mary").
    #[arg(long, allow_hyphen_values = true)]
    answer: String,
    /// The wrong answer (first token). Without it the answer's logit is attributed.
    #[arg(long, allow_hyphen_values = true)]
    wrong: Option<String>,
    /// Position whose logits are attributed (negative counts from the end).
    #[arg(long, default_value_t = -1, allow_hyphen_values = true)]
    position: i64,
    /// Components listed in the human summary.
    #[arg(long, default_value_t = 12)]
    top: usize,
}

#[derive(Args, Clone)]
pub struct AttentionArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    /// Layers, e.g. `0,5` or `3-6` (default: all).
    #[arg(long)]
    layers: Option<String>,
    /// Heads, e.g. `0,4` (default: all).
    #[arg(long)]
    heads: Option<String>,
}

#[derive(Args, Clone)]
pub struct NeuronArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Optional prompt (--prompt / --ids) on which to report the neuron's activation.
    #[command(flatten)]
    i: InputArgs,
    #[arg(long)]
    layer: usize,
    #[arg(long)]
    neuron: usize,
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Multiply the output weights by the final norm's weight before the unembedding.
    #[arg(long)]
    through_norm: bool,
}

#[derive(Args, Clone)]
pub struct MonitorArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    /// The hook read (a [pos, d] hook: resid_pre/mid/post, attn_out, mlp_out, mlp.hook_post, ...).
    #[arg(long)]
    hook: String,
    /// The direction: a JSON file holding an array of numbers, {"vector": [...]},
    /// {"direction": [...]}, or an intervention document (the literal vector of
    /// its item at --hook, or of its only item).
    #[arg(long, conflicts_with_all = ["plus", "minus"])]
    direction: Option<PathBuf>,
    /// Direction = activation(plus) − activation(minus) at --hook, last position.
    #[arg(long, allow_hyphen_values = true, requires = "minus")]
    plus: Option<String>,
    #[arg(long, allow_hyphen_values = true, requires = "plus")]
    minus: Option<String>,
    #[command(flatten)]
    s: SamplingArgs,
    /// Keep generating past the model's end-of-sequence token.
    #[arg(long)]
    no_stop_at_eos: bool,
}

/// `3,5,7` and `8-16` (inclusive) lists.
fn parse_list(what: &str, s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|x| !x.is_empty()) {
        let num = |x: &str| x.trim().parse::<usize>().with_context(|| format!("--{what}: '{x}' is not a number"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    bail!("--{what}: range '{part}' is empty");
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if out.is_empty() {
        bail!("--{what} is empty");
    }
    Ok(out)
}

fn parse_positions(s: &str) -> Result<Vec<i64>> {
    let v = s
        .split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<i64>().with_context(|| format!("--positions: '{x}' is not a position")))
        .collect::<Result<Vec<_>>>()?;
    if v.is_empty() {
        bail!("--positions is empty");
    }
    Ok(v)
}

/// Runs `f` under `--interventions` (weight edits applied and undone; the
/// document's hook runs before the reading). Returns f's value and the report.
fn with_interventions<T>(
    model: &mut Model,
    i: &InputArgs,
    prompt_len: usize,
    f: impl FnOnce(&Model, Option<&mut dyn Hook>) -> scalpel_engine::Result<T>,
) -> Result<(T, serde_json::Value)> {
    let Some(mut iv) = crate::args::interventions(model, i, prompt_len)? else {
        return Ok((f(&*model, None)?, serde_json::Value::Null));
    };
    check_forward_only(&iv)?;
    let saved = run::apply_weights(model, &iv)?;
    let out = f(&*model, Some(&mut iv as &mut dyn Hook));
    run::restore_weights(model, saved);
    let out = out?;
    Ok((out, json!({"applied": iv.report(), "warnings": iv.warnings})))
}

/// Generation-time ops need `scalpel generate`'s loop; refuse them rather than ignore them.
fn check_forward_only(iv: &Interventions) -> Result<()> {
    if let Some(k) = iv.kv_adds.first() {
        bail!("intervention {}: op 'kv_add' is only applied by `scalpel generate`, not by readouts", k.index);
    }
    if let Some(k) = iv.inserts.first() {
        bail!("intervention {}: op 'insert' is only applied by `scalpel generate`, not by readouts", k.index);
    }
    if let Some(c) = iv.conditional_traces().iter().find(|c| c.backtrack > 0) {
        bail!("intervention {}: a conditional with 'backtrack' is only applied by `scalpel generate`", c.index);
    }
    Ok(())
}

fn add_report(v: &mut serde_json::Value, report: serde_json::Value) {
    if !report.is_null() {
        v["interventions"] = report;
    }
}

pub fn lens(a: &LensArgs) -> Result<()> {
    let mut model = load(&a.m)?;
    let ids = input_ids(&model, &a.i)?;
    let opts = LensOptions {
        top_k: a.top_k,
        target: a.target.as_deref().map(|t| first_token(&model, "--target", t)).transpose()?,
        include_embed: !a.no_embed,
        layers: a.layers.as_deref().map(|s| parse_list("layers", s)).transpose()?,
        positions: a.positions.as_deref().map(parse_positions).transpose()?,
    };
    let (r, report) = with_interventions(&mut model, &a.i, ids.len(), |m, h| logit_lens(m, &ids, &opts, h))?;
    if a.m.json {
        let mut v = serde_json::to_value(&r)?;
        add_report(&mut v, report);
        return print_json(&v);
    }
    if let Some(t) = &r.target {
        println!("target {:?} (id {}): probability, rank at each layer", t.token, t.id);
    }
    for (k, &p) in r.positions.iter().enumerate() {
        println!("position {p} {:?}:", r.tokens[p]);
        for row in &r.rows {
            let c = &row.cells[k];
            let top: Vec<String> = c.top.iter().map(|t| format!("{:?} {:.3}", t.token, t.prob)).collect();
            let target = c.target.as_ref().map(|t| format!("  target p={:.4} rank {}", t.prob, t.rank)).unwrap_or_default();
            println!("  {:<6} {}{target}", row.label, top.join("  "));
        }
    }
    eprintln!("{:.2} s", r.seconds);
    Ok(())
}

pub fn dla(a: &DlaArgs) -> Result<()> {
    let mut model = load(&a.m)?;
    let ids = input_ids(&model, &a.i)?;
    let req = DlaRequest {
        ids: ids.clone(),
        answer: first_token(&model, "--answer", &a.answer)?,
        wrong: a.wrong.as_deref().map(|w| first_token(&model, "--wrong", w)).transpose()?,
        position: a.position,
    };
    if req.wrong == Some(req.answer) {
        eprintln!("warning: --answer and --wrong start with the same token; the logit difference is 0");
    }
    let (r, report) = with_interventions(&mut model, &a.i, ids.len(), |m, h| direct_logit_attribution(m, &req, h))?;
    if a.m.json {
        let mut v = serde_json::to_value(&r)?;
        add_report(&mut v, report);
        return print_json(&v);
    }
    let what = match &r.wrong {
        Some(w) => format!("logit[{:?}] − logit[{:?}]", r.answer.token, w.token),
        None => format!("logit[{:?}]", r.answer.token),
    };
    println!("{what} at position {} {:?}: {:.4} (components sum to {:.4}; unexplained {:.2e})",
        r.position, r.tokens[r.position], r.total, r.sum_of_components, r.unexplained);
    let mut comps: Vec<_> = r.components.iter().collect();
    comps.sort_by(|x, y| y.value.abs().total_cmp(&x.value.abs()));
    for c in comps.iter().take(a.top) {
        println!("  {:<14} {:>9.4}", c.name, c.value);
    }
    println!("per layer (attention, MLP):");
    for l in &r.layers {
        println!("  L{:<3} attn {:>8.4}  mlp {:>8.4}", l.layer, l.attn_out, l.mlp);
    }
    Ok(())
}

pub fn attention(a: &AttentionArgs) -> Result<()> {
    let mut model = load(&a.m)?;
    let ids = input_ids(&model, &a.i)?;
    let layers = a.layers.as_deref().map(|s| parse_list("layers", s)).transpose()?;
    let heads = a.heads.as_deref().map(|s| parse_list("heads", s)).transpose()?;
    let (r, report) = with_interventions(&mut model, &a.i, ids.len(), |m, h| {
        attention_patterns(m, &ids, layers.as_deref(), heads.as_deref(), h)
    })?;
    if a.m.json {
        let mut v = serde_json::to_value(&r)?;
        add_report(&mut v, report);
        return print_json(&v);
    }
    let last = ids.len() - 1;
    println!("where the last position {:?} attends (top 3 keys per head):", r.tokens[last]);
    for l in &r.layers {
        for h in &l.heads {
            let row = &h.pattern[last];
            let top: Vec<String> = scalpel_engine::top_k(row, 3)
                .into_iter()
                .map(|(k, w)| format!("{k}:{:?} {w:.2}", r.tokens[k as usize]))
                .collect();
            println!("  L{}H{}  {}", l.layer, h.head, top.join("  "));
        }
    }
    Ok(())
}

pub fn neuron(a: &NeuronArgs) -> Result<()> {
    let mut model = load(&a.m)?;
    let prompt = if a.i.prompt.is_some() || a.i.ids.is_some() { Some(input_ids(&model, &a.i)?) } else { None };
    if prompt.is_none() && a.i.interventions.is_some() {
        bail!("--interventions needs a prompt (--prompt or --ids) to run on");
    }
    let req = NeuronRequest {
        layer: a.layer,
        neuron: a.neuron,
        top_k: a.top_k,
        through_final_norm: a.through_norm,
        prompt: prompt.clone(),
    };
    let n = prompt.as_ref().map(Vec::len).unwrap_or(0);
    let (r, report) = with_interventions(&mut model, &a.i, n, |m, h| neuron_vocab(m, &req, h))?;
    if a.m.json {
        let mut v = serde_json::to_value(&r)?;
        add_report(&mut v, report);
        return print_json(&v);
    }
    println!("{} neuron {} (output weights norm {:.4}):", r.hook, r.neuron, r.output_norm);
    let fmt = |v: &[scalpel_experiments::readouts::TokenScore]| -> String {
        v.iter().map(|t| format!("{:?} {:+.3}", t.token, t.score)).collect::<Vec<_>>().join("  ")
    };
    println!("  promotes:   {}", fmt(&r.promoted));
    println!("  suppresses: {}", fmt(&r.suppressed));
    if let Some(act) = &r.activations {
        println!("activation (mlp.hook_post) per position:");
        for (t, v) in act.tokens.iter().zip(&act.post) {
            println!("  {v:>9.4}  {t:?}");
        }
    }
    Ok(())
}

/// A direction from a JSON file (see `MonitorArgs::direction`).
fn direction_from_file(path: &PathBuf, hook: &str) -> Result<Vec<f32>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let numbers = |x: &serde_json::Value, field: &str| -> Result<Vec<f32>> {
        let arr = x.as_array().ok_or_else(|| anyhow!("{}: '{field}' is not an array of numbers", path.display()))?;
        arr.iter()
            .enumerate()
            .map(|(k, n)| {
                n.as_f64().map(|f| f as f32).ok_or_else(|| anyhow!("{}: '{field}'[{k}] is not a number", path.display()))
            })
            .collect()
    };
    if v.is_array() {
        return numbers(&v, "(top level)");
    }
    for key in ["vector", "direction"] {
        if let Some(x) = v.get(key) {
            return numbers(x, key);
        }
    }
    if let Some(items) = v.get("interventions").and_then(|x| x.as_array()) {
        fn literal(it: &serde_json::Value) -> Option<(&'static str, &serde_json::Value)> {
            ["vector", "direction"].into_iter().find_map(|k| it.get(k).filter(|x| x.is_array()).map(|x| (k, x)))
        }
        let pick = items.iter().find(|it| it.get("hook").and_then(|h| h.as_str()) == Some(hook));
        let pick = match pick {
            Some(it) => Some(it),
            None if items.len() == 1 => items.first(),
            None => None,
        };
        if let Some((k, x)) = pick.and_then(literal) {
            return numbers(x, k);
        }
        bail!("{}: no intervention at hook '{hook}' (or single intervention) with a literal vector", path.display());
    }
    bail!("{}: expected an array of numbers, {{\"vector\": [...]}} or an intervention document", path.display())
}

pub fn monitor_cmd(a: &MonitorArgs) -> Result<()> {
    let mut model = load(&a.m)?;
    let ids = input_ids(&model, &a.i)?;
    let (direction, source) = match (&a.direction, &a.plus, &a.minus) {
        (Some(p), None, None) => (direction_from_file(p, &a.hook)?, json!({"file": p})),
        (None, Some(plus), Some(minus)) => {
            let tok = model.tokenizer();
            let (pi, mi) = (tok.encode(plus)?, tok.encode(minus)?);
            if pi.is_empty() || mi.is_empty() {
                bail!("--plus and --minus must each tokenize to at least one token");
            }
            let p = read_vector(&model, &pi, &a.hook, -1)?;
            let m = read_vector(&model, &mi, &a.hook, -1)?;
            (p.iter().zip(&m).map(|(x, y)| x - y).collect(), json!({"plus": plus, "minus": minus, "position": -1}))
        }
        _ => bail!("give the direction as --direction FILE or --plus TEXT --minus TEXT"),
    };
    let opts = a.s.options(!a.no_stop_at_eos);
    let (r, report) =
        with_interventions(&mut model, &a.i, ids.len(), |m, h| monitor(m, &ids, &opts, &a.hook, &direction, h))?;
    if a.m.json {
        let mut v = serde_json::to_value(&r)?;
        v["direction_source"] = source;
        add_report(&mut v, report);
        return print_json(&v);
    }
    println!("projection on the direction (|d| = {:.4}) at {}:", r.direction_norm, r.hook);
    for row in &r.rows {
        let mark = if row.generated { "+" } else { " " };
        println!("  {:>4}{mark} {:>9.4}  cos {:>7.4}  {:?}", row.position, row.projection, row.cosine, row.token);
    }
    println!("mean: prompt {:.4}, generated {}", r.mean_prompt,
        r.mean_generated.map(|m| format!("{m:.4}")).unwrap_or_else(|| "-".into()));
    println!("text: {}", r.text);
    Ok(())
}
