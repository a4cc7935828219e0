//! Running the model on an input: `tokenize`, `logits`, `activations`,
//! `generate` (each under an optional intervention document) and `info`.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;

use scalpel_engine::{generate as engine_generate, logsumexp, top_k};
use scalpel_interventions::run;

use crate::args::{input_ids, interventions, load, print_json, report_of, InputArgs, ModelArgs, SamplingArgs};

#[derive(Args, Clone)]
pub struct TokenizeArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
}

#[derive(Args, Clone)]
pub struct LogitsArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Also print every logit at every position.
    #[arg(long)]
    full: bool,
}

#[derive(Args, Clone)]
pub struct ActivationsArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    #[arg(long)]
    hook: String,
}

#[derive(Args, Clone)]
pub struct GenerateArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    #[command(flatten)]
    s: SamplingArgs,
}

#[derive(Args, Clone)]
pub struct InfoArgs {
    #[command(flatten)]
    m: ModelArgs,
}

pub fn tokenize(a: &TokenizeArgs) -> Result<()> {
    let TokenizeArgs { m, i } = a;
        let model = load(m)?;
        let ids = input_ids(&model, i)?;
        let tokens = model.tokenizer().token_strings(&ids);
        if m.json {
            print_json(&json!({"ids": ids, "tokens": tokens}))?;
        } else {
            for (id, t) in ids.iter().zip(&tokens) {
                println!("{id:>7}  {t:?}");
            }
        }
    Ok(())
}

pub fn logits(a: &LogitsArgs) -> Result<()> {
    let LogitsArgs { m, i, top_k: k, full } = a;
    let (k, full) = (*k, *full);
        let mut model = load(m)?;
        let ids = input_ids(&model, i)?;
        let mut iv = interventions(&model, i, ids.len())?;
        let logits = match iv.as_mut() {
            Some(iv) => run::logits(&mut model, &ids, iv)?,
            None => model.logits(&ids)?,
        };
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let argmax: Vec<u32> = rows.iter().map(|r| scalpel_engine::argmax(r)).collect();
        let last = rows.last().expect("non-empty input");
        let top: Vec<_> = top_k(last, k)
            .into_iter()
            .map(|(id, l)| json!({"id": id, "token": model.tokenizer().decode(&[id]), "logit": l}))
            .collect();
        let lse = logsumexp(last);
        if m.json {
            let mut v = json!({"ids": ids, "argmax": argmax, "top": top, "logsumexp": lse});
            if iv.is_some() {
                v["interventions"] = report_of(&iv.as_mut());
            }
            if full {
                v["logits"] = json!(rows);
            }
            print_json(&v)?;
        } else {
            println!("{} tokens; next-token top {k}:", ids.len());
            for t in &top {
                let l = t["logit"].as_f64().unwrap_or(f64::NAN);
                println!("{:>7}  {:>9.4}  p={:.4}  {:?}", t["id"], l, (l - lse as f64).exp(), t["token"].as_str().unwrap_or(""));
            }
        }
    Ok(())
}

pub fn activations(a: &ActivationsArgs) -> Result<()> {
    let ActivationsArgs { m, i, hook } = a;
        let mut model = load(m)?;
        let point = model.hook_point(hook)?;
        let ids = input_ids(&model, i)?;
        let mut iv = interventions(&model, i, ids.len())?;
        let saved = match iv.as_ref() {
            Some(iv) => {
                iv.check_single_pass()?;
                run::apply_weights(&mut model, iv)?
            }
            None => Vec::new(),
        };
        // Interventions first, then the reading: the value as the model used it.
        let mut cache = scalpel_engine::ActivationCache::new([point]);
        let mut hooks = scalpel_engine::HookList::new();
        if let Some(x) = iv.as_mut() {
            hooks.push(x);
        }
        hooks.push(&mut cache);
        let run = model.forward(&model.ids_tensor(&ids)?, None, Some(&mut hooks), scalpel_engine::Logits::Last);
        drop(hooks);
        run::restore_weights(&mut model, saved);
        run?;
        let t = cache.get(&point).context("hook was not reached")?.squeeze(0)?;
        let shape = t.dims().to_vec();
        let values: Vec<f32> = t.flatten_all()?.to_vec1()?;
        if m.json {
            print_json(&json!({"hook": hook, "shape": shape, "values": values}))?;
        } else {
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let norm = values.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
            println!("{hook}: shape {shape:?}, mean {mean:.5}, L2 norm {norm:.4}");
            println!("first values: {:?}", &values[..values.len().min(8)]);
        }
    Ok(())
}

pub fn generate(a: &GenerateArgs) -> Result<()> {
    let GenerateArgs { m, i, s } = a;
        let mut model = load(m)?;
        let ids = input_ids(&model, i)?;
        let opts = s.options(true);
        let mut iv = interventions(&model, i, ids.len())?;
        if let Some(iv) = iv.as_mut() {
            let g = run::generate(&mut model, &ids, &opts, iv, &mut |_| true)?;
            let text = model.tokenizer().decode(&g.ids);
            if m.json {
                print_json(&json!({"ids": g.ids, "text": text, "events": g.events,
                    "interventions": report_of(&Some(iv)), "conditional": iv.conditional_traces()}))?;
            } else {
                println!("{text}");
                for e in g.events.iter().filter(|e| !matches!(e, run::GenEvent::Token { .. })) {
                    eprintln!("event: {}", serde_json::to_string(e)?);
                }
            }
            return Ok(());
        }
        let tok = model.tokenizer();
        let mut printed = 0usize;
        let mut so_far: Vec<u32> = Vec::new();
        let json_out = m.json;
        let new = engine_generate(&model, &ids, &opts, None, &mut |id| {
            if !json_out {
                // Print the text grown so far, so multi-token characters come out whole.
                so_far.push(id);
                let text = tok.decode(&so_far);
                if !text.ends_with('\u{FFFD}') && text.len() > printed {
                    print!("{}", &text[printed..]);
                    let _ = std::io::stdout().flush();
                    printed = text.len();
                }
            }
            true
        })?;
        let text = tok.decode(&new);
        if m.json {
            print_json(&json!({"ids": new, "text": text}))?;
        } else {
            if text.len() > printed {
                print!("{}", &text[printed..]);
            }
            println!();
        }
    Ok(())
}

pub fn info(a: &InfoArgs) -> Result<()> {
    let m = &a.m;
        let model = load(m)?;
        if m.json {
            print_json(&json!({"name": model.name, "config": model.config, "hooks": model.hook_names(),
                "eos_ids": model.tokenizer().eos_ids, "chat_template": model.tokenizer().chat_template.is_some()}))?;
        } else {
            println!("{}: {:#?}", model.name, model.config);
            println!("hooks:");
            for h in model.hook_names() {
                println!("  {h}");
            }
        }
    Ok(())
}
