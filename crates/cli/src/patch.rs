//! `scalpel patch` and `scalpel bench-interventions`.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use scalpel_engine::{generate, GenerateOptions, Model};
use scalpel_experiments::patching::{sweep, Corruption, Direction, Metric, PatchRequest, PatchResult, PatchSite, Strategy};
use scalpel_experiments::readouts::first_token;
use scalpel_interventions::{parse, Interventions};

use crate::args::{load, print_json, ModelArgs};

#[derive(Args, Clone)]
pub struct PatchArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// The clean prompt.
    #[arg(long)]
    clean: String,
    /// The corrupted prompt (same token length). Or use --noise-positions.
    #[arg(long, conflicts_with = "noise_positions")]
    corrupt: Option<String>,
    /// Corrupt by Gaussian noise on the embeddings at these positions (comma separated).
    #[arg(long)]
    noise_positions: Option<String>,
    /// Noise standard deviation (default: 3x the embeddings' std).
    #[arg(long)]
    noise_std: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The answer (its first token is used; include a leading space, e.g. " Mary").
    #[arg(long)]
    answer: String,
    /// The wrong answer (first token).
    #[arg(long)]
    wrong: String,
    /// resid_pre | resid_mid | resid_post | attn_out | mlp_out (layer × position) |
    /// head_z (layer × head) | head_z_pos (layer × head rows, position columns)
    #[arg(long, default_value = "resid_pre")]
    hook: String,
    /// logit_diff_norm | logit_diff | prob | kl
    #[arg(long, default_value = "logit_diff_norm")]
    metric: String,
    /// fast | naive | attribution (gradient estimate, compared with the exact sweep)
    #[arg(long, default_value = "fast")]
    strategy: String,
    /// denoise (clean into corrupted) | noise (corrupted into clean)
    #[arg(long, default_value = "denoise")]
    direction: String,
}


fn request(model: &Model, a: &PatchArgs) -> Result<PatchRequest> {
    let clean = model.tokenizer().encode(&a.clean)?;
    if clean.is_empty() {
        bail!("--clean is empty: it tokenizes to no tokens");
    }
    let corruption = match (&a.corrupt, &a.noise_positions) {
        (Some(c), None) => Corruption::Prompt(model.tokenizer().encode(c)?),
        (None, Some(p)) => Corruption::Noise {
            positions: p
                .split(',')
                .map(|x| x.trim().parse::<usize>().with_context(|| format!("--noise-positions: '{x}' is not a position")))
                .collect::<Result<_>>()?,
            std: a.noise_std,
            seed: a.seed,
        },
        _ => bail!("give the corruption as --corrupt TEXT or --noise-positions 1,2"),
    };
    let direction = match a.direction.as_str() {
        "denoise" => Direction::Denoise,
        "noise" => Direction::Noise,
        d => bail!("--direction '{d}' is not one of: denoise, noise"),
    };
    let strategy = match a.strategy.as_str() {
        "fast" | "attribution" => Strategy::Fast,
        "naive" => Strategy::Naive,
        s => bail!("--strategy '{s}' is not one of: fast, naive, attribution"),
    };
    Ok(PatchRequest {
        clean,
        corruption,
        answer: first_token(model, "--answer", &a.answer)?,
        wrong: first_token(model, "--wrong", &a.wrong)?,
        site: PatchSite::parse(&a.hook)?,
        metric: Metric::parse(&a.metric)?,
        strategy,
        direction,
    })
}

/// The sweep's result as JSON, with the answer and wrong tokens.
fn result_json(model: &Model, req: &PatchRequest, r: &PatchResult) -> Result<serde_json::Value> {
    let tok = model.tokenizer();
    let mut v = serde_json::to_value(r)?;
    v["answer"] = json!(tok.decode(&[req.answer]));
    v["wrong"] = json!(tok.decode(&[req.wrong]));
    Ok(v)
}

fn print_matrix(r: &PatchResult) {
    for (label, row) in r.row_labels.iter().zip(&r.values) {
        let cells: Vec<String> = row.iter().map(|v| format!("{v:>6.2}")).collect();
        println!("{label:<8}{}", cells.join(" "));
    }
}

pub fn run(a: &PatchArgs) -> Result<()> {
    let mut model = load(&a.m)?;
    let req = request(&model, a)?;
    if a.strategy == "attribution" {
        let r = scalpel_experiments::patching::attribution(&mut model, &req)?;
        if a.m.json {
            let mut v = result_json(&model, &req, &r.estimate)?;
            v["strategy"] = json!("attribution");
            v["exact_values"] = json!(r.exact.values);
            v["correlation_with_exact"] = json!(r.correlation);
            v["exact_seconds"] = json!(r.exact.seconds);
            print_json(&v)?;
        } else {
            println!(
                "attribution patching ({:?}, {:?}): {:.2} s for the estimate, {:.2} s for the exact sweep; Pearson r = {:.4}",
                r.estimate.site, r.estimate.metric, r.attribution_seconds, r.exact.seconds, r.correlation
            );
            print_matrix(&r.estimate);
        }
        return Ok(());
    }
    let r = sweep(&model, &req, &mut |_, _| true)?;
    if a.m.json {
        print_json(&result_json(&model, &req, &r)?)?;
    } else {
        println!("{:?} patching, metric {:?}: clean {:.4}, corrupt {:.4}; {} cells computed in {:.2} s",
            r.site, r.metric, r.clean, r.corrupt, r.computed_cells, r.seconds);
        print_matrix(&r);
    }
    Ok(())
}

/// The IOI-style prompt pair used by the benchmark (14 tokens on SmolLM2).
pub const BENCH_CLEAN: &str = "When Mary and John went to the store, John gave a drink to";
pub const BENCH_CORRUPT: &str = "When Mary and John went to the store, Mary gave a drink to";

#[derive(Args, Clone)]
pub struct BenchInterventionsArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Hook families to sweep, comma separated.
    #[arg(long, default_value = "resid_pre,attn_out,head_z,head_z_pos")]
    hooks: String,
}

pub fn bench(a: &BenchInterventionsArgs) -> Result<()> {
    let (m, hooks) = (&a.m, &a.hooks);
    let sites: Vec<PatchSite> = hooks.split(',').map(|h| PatchSite::parse(h.trim())).collect::<Result<_, _>>()?;
    let model = load(m)?;
    let mut req = PatchRequest {
        clean: model.tokenizer().encode(BENCH_CLEAN)?,
        corruption: Corruption::Prompt(model.tokenizer().encode(BENCH_CORRUPT)?),
        answer: first_token(&model, "answer", " Mary")?,
        wrong: first_token(&model, "wrong", " John")?,
        site: PatchSite::ResidPre,
        metric: Metric::LogitDiffNorm,
        strategy: Strategy::Fast,
        direction: Direction::Denoise,
    };
    let mut rows = Vec::new();
    for site in sites {
        req.site = site;
        req.strategy = Strategy::Fast;
        let fast = sweep(&model, &req, &mut |_, _| true)?;
        req.strategy = Strategy::Naive;
        let naive = sweep(&model, &req, &mut |_, _| true)?;
        let diff = fast.values.iter().flatten().zip(naive.values.iter().flatten())
            .map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        rows.push(json!({"hook": site, "cells": fast.rows * fast.cols, "fast_seconds": fast.seconds,
            "naive_seconds": naive.seconds, "speedup": naive.seconds / fast.seconds, "max_abs_diff": diff,
            "fast_computed_cells": fast.computed_cells}));
        if !m.json {
            eprintln!("{site:?}: fast {:.2} s, naive {:.2} s, {:.1}x, max |diff| {diff:.2e}",
                fast.seconds, naive.seconds, naive.seconds / fast.seconds);
        }
    }
    // Generation with a steering vector versus without, same prompt and length.
    let doc = parse(r#"{"version": 1, "interventions": [{"hook": "blocks.10.hook_resid_pre", "op": "add", "scale": 4.0,
        "vector": {"from": "prompt_diff", "plus": "I love you", "minus": "I hate you", "position": -1}}]}"#)
        .map_err(anyhow::Error::msg)?;
    let prompt = model.tokenizer().encode("I think you are")?;
    let opts = GenerateOptions { max_new_tokens: 32, stop_at_eos: false, ..Default::default() };
    let t = Instant::now();
    generate(&model, &prompt, &opts, None, &mut |_| true)?;
    let plain = t.elapsed().as_secs_f64();
    let mut iv = Interventions::compile(&model, &doc, prompt.len()).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    generate(&model, &prompt, &opts, Some(&mut iv), &mut |_| true)?;
    let steered = t.elapsed().as_secs_f64();
    let v = json!({"model": model.name, "precision": m.precision, "prompt_tokens": req.clean.len(), "patching": rows,
        "generation": {"tokens": 32, "plain_seconds": plain, "steered_seconds": steered, "steered_over_plain": steered / plain}});
    if m.json {
        print_json(&v)?;
    } else {
        println!("generation, 32 tokens: plain {plain:.2} s, steered {steered:.2} s ({:.3}x)", steered / plain);
    }
    Ok(())
}
