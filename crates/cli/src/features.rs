//! `scalpel features`: a dictionary's latents on a prompt (top k per
//! position, L0, reconstruction error), or one latent's top-activating
//! contexts over a corpus. The computation is `scalpel_dictionaries::features`;
//! this file parses and prints. See docs/features.md.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::json;

use scalpel_dictionaries::corpus::{corpus_windows, index_corpus, CorpusIndex};
use scalpel_dictionaries::features::prompt_features;
use scalpel_experiments::features::{dashboard, search_token, splice};

use crate::args::{input_ids, load, print_json, InputArgs, ModelArgs};
use crate::vectors::load_dict;

#[derive(Args, Clone)]
pub struct FeaturesArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// Text input, tokenized with the model's own tokenizer.
    #[arg(long, conflicts_with = "ids")]
    prompt: Option<String>,
    /// Token ids, comma separated.
    #[arg(long)]
    ids: Option<String>,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// The dictionary directory: SAELens (cfg.json + sae_weights.safetensors),
    /// sparsify (cfg.json + sae.safetensors; the folder name is the hook, e.g.
    /// layers.6.mlp), Gemma Scope (params.npz / params.safetensors), or one
    /// layer of a circuit-tracer transcoder set: DIR/layer_6.safetensors with
    /// DIR/config.yaml.
    #[arg(long)]
    sae: PathBuf,
    /// The input hook, for Gemma Scope (its files do not name it) or to
    /// override a sparsify folder name.
    #[arg(long)]
    hook: Option<String>,
    /// The output hook of a transcoder given with --hook.
    #[arg(long)]
    hook_out: Option<String>,
    /// Fold decoder row norms into the encoder first (SAELens fold_W_dec_norm).
    #[arg(long)]
    fold_decoder_norms: bool,
    /// Latents per position (prompt mode).
    #[arg(long, default_value_t = 10)]
    top_k: usize,
    /// Include the dense input, target, latents and output in --json output.
    #[arg(long)]
    full: bool,
    /// Prompt mode: also report what splicing the dictionary in (its output
    /// in place of the hook's value) does to the next-token distribution.
    #[arg(long)]
    splice: bool,
    /// Corpus mode: the latent whose dashboard to print (decoder row →
    /// vocabulary, histogram, top contexts).
    #[arg(long, requires = "corpus", conflicts_with = "search")]
    latent: Option<usize>,
    /// Search mode: latents that write to this text's first token (through
    /// the unembedding) and, with --corpus, that peak on it in the corpus.
    #[arg(long)]
    search: Option<String>,
    /// Latents a search lists.
    #[arg(long, default_value_t = 20)]
    matches: usize,
    /// A text file, one document per line (empty lines skipped).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Corpus mode: documents are split into windows of at most this many tokens.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Corpus mode: how many contexts to keep per latent (the page keeps 10).
    #[arg(long, default_value_t = 10)]
    contexts: usize,
}

pub fn run(a: &FeaturesArgs) -> Result<()> {
    let mut sae = load_dict(&a.sae, a.hook.as_deref(), a.hook_out.as_deref())?;
    if a.fold_decoder_norms {
        sae.fold_decoder_norms().map_err(anyhow::Error::msg)?;
    }
    let model = load(&a.m)?;
    sae.point(&model).map_err(anyhow::Error::msg)?;
    let dict = json!({"name": sae.name, "format": sae.format, "architecture": sae.arch, "d_in": sae.d_in, "d_out": sae.d_out,
        "d_sae": sae.d_sae, "notes": sae.notes});
    if let (Some(latent), Some(corpus)) = (a.latent, &a.corpus) {
        if a.prompt.is_some() || a.ids.is_some() {
            bail!("--latent/--corpus reads the corpus; --prompt and --ids do not apply");
        }
        let text = std::fs::read_to_string(corpus).with_context(|| format!("{}: cannot read", corpus.display()))?;
        if latent >= sae.d_sae {
            bail!("{}: latent {latent} is out of range (d_sae = {})", sae.name, sae.d_sae);
        }
        let wins = corpus_windows(&model, &text, a.max_tokens).map_err(anyhow::Error::msg)?;
        let n_tokens: usize = wins.iter().map(Vec::len).sum();
        // One pass finds every latent's contexts (the page's dashboards read the same index).
        let t0 = std::time::Instant::now();
        let mut index = CorpusIndex::new(sae.d_sae, a.contexts, wins.len()).map_err(anyhow::Error::msg)?;
        index_corpus(&model, &sae, &wins, &mut index, &mut |_, _| true).map_err(anyhow::Error::msg)?;
        let secs = t0.elapsed().as_secs_f64();
        let dash = dashboard(&model, &sae, latent, 10, Some((&wins, &index)))?;
        let found = dash.corpus.as_ref().map(|c| c.contexts.clone()).unwrap_or_default();
        let contexts: Vec<serde_json::Value> = found
            .iter()
            .map(|c| {
                json!({"window": c.window, "text": model.tokenizer().decode(&c.ids), "ids": c.ids,
                    "tokens": c.tokens, "position": c.position, "activation": c.activation,
                    "activations": c.activations})
            })
            .collect();
        if a.m.json {
            let c = dash.corpus.as_ref();
            print_json(&json!({"hook": sae.hook_name, "hook_out": sae.hook_name_out, "latent": latent, "dictionary": dict,
                "windows": wins.len(), "tokens": n_tokens, "seconds": secs, "tokens_per_second": n_tokens as f64 / secs.max(1e-9),
                "fires": c.map(|c| c.fires), "max": c.map(|c| c.max), "histogram": c.map(|c| &c.histogram),
                "decoder_norm": dash.decoder_norm, "promoted": dash.promoted, "suppressed": dash.suppressed,
                "contexts": contexts}))?;
        } else {
            println!("latent {latent} of {} at {}: top {} of {} windows ({n_tokens} tokens, {:.0} tokens/s)",
                sae.name, sae.hook_name, found.len(), wins.len(), n_tokens as f64 / secs.max(1e-9));
            let shown = |v: &[scalpel_types::readouts::TokenScore]| v.iter().map(|t| format!("{:?} {:+.2}", t.token, t.score)).collect::<Vec<_>>().join(", ");
            if !dash.promoted.is_empty() {
                println!("promotes: {}\nsuppresses: {}", shown(&dash.promoted), shown(&dash.suppressed));
            }
            for c in &found {
                let shown: Vec<String> =
                    c.tokens.iter().enumerate().map(|(i, t)| if i == c.position { format!("[[{t}]]") } else { t.clone() }).collect();
                println!("{:>9.4}  {}", c.activation, shown.concat().replace('\n', "⏎"));
            }
        }
        return Ok(());
    }
    if let Some(text) = &a.search {
        if a.prompt.is_some() || a.ids.is_some() {
            bail!("--search looks up a token; --prompt and --ids do not apply");
        }
        let id = scalpel_experiments::readouts::first_token(&model, "--search", text)?;
        let corpus = match &a.corpus {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
                let wins = corpus_windows(&model, &text, a.max_tokens).map_err(anyhow::Error::msg)?;
                let mut index = CorpusIndex::new(sae.d_sae, a.contexts, wins.len()).map_err(anyhow::Error::msg)?;
                index_corpus(&model, &sae, &wins, &mut index, &mut |_, _| true).map_err(anyhow::Error::msg)?;
                Some((wins, index))
            }
        };
        let found = search_token(&model, &sae, id, a.matches, corpus.as_ref().map(|(w, i)| (w.as_slice(), i)))?;
        if a.m.json {
            print_json(&serde_json::to_value(&found)?)?;
        } else {
            let list = |v: &[scalpel_types::features::LatentMatch]| v.iter().map(|m| format!("{} ({:.3})", m.id, m.score)).collect::<Vec<_>>().join(", ");
            println!("token {} {:?}\nwrites to it: {}", found.id, found.token, list(&found.writes));
            if a.corpus.is_some() {
                println!("peaks on it in the corpus: {}", list(&found.fires));
            }
        }
        return Ok(());
    }
    if a.corpus.is_some() {
        bail!("--corpus goes with --latent or --search");
    }
    let input = InputArgs { prompt: a.prompt.clone(), ids: a.ids.clone(), chat: a.chat, interventions: None, sae: Vec::new() };
    let ids = input_ids(&model, &input)?;
    let (mut report, enc) = prompt_features(&model, &sae, &ids, a.top_k).map_err(anyhow::Error::msg)?;
    if a.splice {
        report.splice = Some(splice(&model, &sae, &ids)?);
    }
    if a.m.json {
        let mut v = serde_json::to_value(&report)?;
        v["dictionary"] = dict;
        v["ids"] = json!(ids);
        if a.full {
            let m = |t: &candle_core::Tensor| -> Result<serde_json::Value> { Ok(json!(t.to_vec2::<f32>()?)) };
            v["input"] = m(&enc.input)?;
            v["target"] = m(&enc.target)?;
            v["latents"] = m(&enc.latents)?;
            v["output"] = m(&enc.output)?;
        }
        print_json(&v)?;
    } else {
        let out = sae.hook_name_out.as_ref().map(|o| format!(" -> {o}")).unwrap_or_default();
        println!("{} at {}{out} ({:?}, {:?}, {} latents) on {} tokens:", sae.name, sae.hook_name, sae.format, sae.arch, sae.d_sae, ids.len());
        for p in &report.positions {
            let lat: Vec<String> = p.latents.iter().map(|l| format!("{}={:.3}", l.id, l.activation)).collect();
            println!("{:>4} {:<16} L0 {:>5}  err {:.4}  {}", p.position, format!("{:?}", p.token), p.l0, p.reconstruction_error, lat.join(" "));
        }
    }
    Ok(())
}
