//! `scalpel`: the engine from the command line. Every subcommand prints a
//! human summary, or machine-readable JSON with `--json`.

mod bench;
mod patch;
mod readout;
mod source;
mod vectors;

pub use patch::PatchArgs;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use scalpel_engine::{generate, logsumexp, top_k, GenerateOptions, Model, Precision};

#[derive(Parser)]
#[command(name = "scalpel", version, about = "Run, read and intervene inside small language models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
pub struct ModelArgs {
    /// `default` (SmolLM2-135M-Instruct), a .gguf file, or a Hugging Face
    /// directory (config.json + tokenizer.json + *.safetensors).
    #[arg(long, default_value = "default")]
    pub model: String,
    /// f32 (exact, dequantized) or quantized (fast).
    #[arg(long, default_value = "f32")]
    pub precision: String,
    /// Quantized matmul kernels: auto (scalpel where faster), candle or scalpel (docs/kernels.md).
    #[arg(long, default_value = "auto")]
    pub kernels: String,
    /// Print JSON instead of a human summary.
    #[arg(long)]
    pub json: bool,
    /// Worker threads for tensor ops (this VM kind is fastest with 1).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Generation length and sampling, shared by `generate` and `monitor`.
#[derive(Args, Clone, Copy)]
pub(crate) struct SamplingArgs {
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long)]
    top_k: Option<usize>,
    #[arg(long)]
    top_p: Option<f32>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl SamplingArgs {
    pub(crate) fn options(&self, stop_at_eos: bool) -> GenerateOptions {
        let SamplingArgs { max_new_tokens, temperature, top_k, top_p, seed } = *self;
        GenerateOptions { max_new_tokens, temperature, top_k, top_p, seed, stop_at_eos }
    }
}

#[derive(Args, Clone)]
struct InputArgs {
    /// Text input, tokenized with the model's own tokenizer.
    #[arg(long, conflicts_with = "ids")]
    prompt: Option<String>,
    /// Token ids, comma separated (e.g. 504,3458,282).
    #[arg(long)]
    ids: Option<String>,
    /// Wrap the prompt in the model's chat template (as a user message).
    #[arg(long)]
    chat: bool,
    /// An intervention document (JSON, docs/interventions.md) applied during the run.
    #[arg(long)]
    interventions: Option<std::path::PathBuf>,
    /// A SAELens SAE directory (cfg.json + sae_weights.safetensors) for the
    /// document's `sae_clamp` ops and `{"from": "sae"}` vectors; repeatable.
    #[arg(long)]
    sae: Vec<std::path::PathBuf>,
}

/// Compiles `--interventions` for this model and prompt length.
fn interventions(model: &Model, i: &InputArgs, prompt_len: usize) -> Result<Option<scalpel_interventions::Interventions>> {
    let Some(path) = &i.interventions else { return Ok(None) };
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let doc = scalpel_interventions::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let (doc, saes) = vectors::resolve_doc(model, doc, &i.sae, path)?;
    let iv = scalpel_interventions::Interventions::compile_with(model, &doc, prompt_len, &saes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for w in &iv.warnings {
        eprintln!("warning: {w}");
    }
    Ok(Some(iv))
}

fn report_of(iv: &Option<&mut scalpel_interventions::Interventions>) -> serde_json::Value {
    match iv {
        Some(iv) => json!({"applied": iv.report(), "warnings": iv.warnings}),
        None => serde_json::Value::Null,
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Text to token ids and token strings.
    Tokenize {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        i: InputArgs,
    },
    /// Next-token logits (argmax per position, top-k at the last one).
    Logits {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        i: InputArgs,
        #[arg(long, default_value_t = 10)]
        top_k: usize,
        /// Also print every logit at every position.
        #[arg(long)]
        full: bool,
    },
    /// The value at one hook point (TransformerLens name).
    Activations {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        i: InputArgs,
        #[arg(long)]
        hook: String,
    },
    /// Generate text (temperature 0 = greedy).
    Generate {
        #[command(flatten)]
        m: ModelArgs,
        #[command(flatten)]
        i: InputArgs,
        #[command(flatten)]
        s: SamplingArgs,
    },
    /// Model facts and every hook name.
    Info {
        #[command(flatten)]
        m: ModelArgs,
    },
    /// Prefill and decode speed: this engine vs candle-transformers' quantized llama.
    Bench(bench::BenchArgs),
    /// Activation patching sweep: layer × position (layer × head for head_z,
    /// layer·head × position for head_z_pos).
    Patch(PatchArgs),
    /// Patching sweep speed (fast vs naive) and the cost of steering during generation.
    BenchInterventions {
        #[command(flatten)]
        m: ModelArgs,
        /// Hook families to sweep, comma separated.
        #[arg(long, default_value = "resid_pre,attn_out,head_z,head_z_pos")]
        hooks: String,
    },
    /// Steering vector from prompts (actadd, mean_diff, pca, probe) with a per-layer
    /// separation score; saves an intervention document or a control vector GGUF,
    /// or imports one (--import).
    Vector(vectors::VectorArgs),
    /// Linear probes per layer or per attention head (held-out accuracy); ITI from the best heads.
    Probe(vectors::ProbeArgs),
    /// A SAELens SAE on a prompt: latents per token, reconstruction error.
    Sae(vectors::SaeArgs),
    /// Logit lens: every layer's residual stream decoded through the final norm and unembedding.
    Lens(readout::LensArgs),
    /// Direct logit attribution of logit[answer] − logit[wrong] to every head, MLP and the embeddings.
    Dla(readout::DlaArgs),
    /// Attention patterns per layer and head.
    Attention(readout::AttentionArgs),
    /// An MLP neuron's output weights projected onto the vocabulary; its activation on a prompt.
    Neuron(readout::NeuronArgs),
    /// Generate and report every token's projection onto a direction at a hook.
    Monitor(readout::MonitorArgs),
    /// How far `quantized` is from `f32` on a fixed prompt set: KL and top-1 agreement.
    PrecisionGap {
        #[command(flatten)]
        m: ModelArgs,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn set_threads(n: usize) {
    // candle sizes its thread pools from this variable; must precede any tensor work.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", n.max(1).to_string());
    }
}

pub(crate) fn load(m: &ModelArgs) -> Result<Model> {
    set_threads(m.threads);
    let precision: Precision = m.precision.parse()?;
    let kernels: scalpel_engine::Kernels = m.kernels.parse()?;
    let (name, src) = source::resolve(&m.model)?;
    let model = Model::load_with(&name, src, precision, kernels)?;
    for w in &model.warnings {
        eprintln!("warning: {w}");
    }
    Ok(model)
}

fn input_ids(model: &Model, i: &InputArgs) -> Result<Vec<u32>> {
    let ids = match (&i.prompt, &i.ids) {
        (Some(p), None) => {
            let text = if i.chat { model.tokenizer().apply_chat_template(&[("user", p)], true)? } else { p.clone() };
            model.tokenizer().encode(&text)?
        }
        (None, Some(s)) => {
            if i.chat {
                bail!("--chat applies to --prompt text, not to --ids");
            }
            s.split(',')
                .map(|x| x.trim())
                .filter(|x| !x.is_empty())
                .map(|x| x.parse::<u32>().with_context(|| format!("--ids: '{x}' is not a token id")))
                .collect::<Result<Vec<_>>>()?
        }
        (None, None) => bail!("give the input as --prompt TEXT or --ids 1,2,3"),
        (Some(_), Some(_)) => bail!("give either --prompt or --ids, not both"),
    };
    if ids.is_empty() {
        bail!("empty prompt: it tokenizes to no tokens");
    }
    if let Some(bad) = ids.iter().find(|&&id| id as usize >= model.config.d_vocab) {
        bail!("token id {bad} is out of range: the vocabulary has {} tokens", model.config.d_vocab);
    }
    Ok(ids)
}

pub(crate) fn print_json(v: &serde_json::Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Tokenize { m, i } => {
            let model = load(&m)?;
            let ids = input_ids(&model, &i)?;
            let tokens = model.tokenizer().token_strings(&ids);
            if m.json {
                print_json(&json!({"ids": ids, "tokens": tokens}))?;
            } else {
                for (id, t) in ids.iter().zip(&tokens) {
                    println!("{id:>7}  {t:?}");
                }
            }
        }
        Cmd::Logits { m, i, top_k: k, full } => {
            let mut model = load(&m)?;
            let ids = input_ids(&model, &i)?;
            let mut iv = interventions(&model, &i, ids.len())?;
            let logits = match iv.as_mut() {
                Some(iv) => scalpel_interventions::run::logits(&mut model, &ids, iv)?,
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
        }
        Cmd::Activations { m, i, hook } => {
            let mut model = load(&m)?;
            let point = model.hook_point(&hook)?;
            let ids = input_ids(&model, &i)?;
            let mut iv = interventions(&model, &i, ids.len())?;
            let saved = match iv.as_ref() {
                Some(iv) => {
                    iv.check_single_pass()?;
                    scalpel_interventions::run::apply_weights(&mut model, iv)?
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
            scalpel_interventions::run::restore_weights(&mut model, saved);
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
        }
        Cmd::Generate { m, i, s } => {
            let mut model = load(&m)?;
            let ids = input_ids(&model, &i)?;
            let opts = s.options(true);
            let mut iv = interventions(&model, &i, ids.len())?;
            if let Some(iv) = iv.as_mut() {
                let g = scalpel_interventions::run::generate(&mut model, &ids, &opts, iv, &mut |_| true)?;
                let text = model.tokenizer().decode(&g.ids);
                if m.json {
                    print_json(&json!({"ids": g.ids, "text": text, "events": g.events,
                        "interventions": report_of(&Some(iv)), "conditional": iv.conditional_traces()}))?;
                } else {
                    println!("{text}");
                    for e in g.events.iter().filter(|e| !matches!(e, scalpel_interventions::run::GenEvent::Token { .. })) {
                        eprintln!("event: {}", serde_json::to_string(e)?);
                    }
                }
                return Ok(());
            }
            let tok = model.tokenizer();
            let mut printed = 0usize;
            let mut so_far: Vec<u32> = Vec::new();
            let json_out = m.json;
            let new = generate(&model, &ids, &opts, None, &mut |id| {
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
        }
        Cmd::Info { m } => {
            let model = load(&m)?;
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
        }
        Cmd::PrecisionGap { m } => precision_gap(&m)?,
        Cmd::Patch(a) => patch::run(&a)?,
        Cmd::Vector(a) => vectors::run_vector(&a)?,
        Cmd::Probe(a) => vectors::run_probe(&a)?,
        Cmd::Sae(a) => vectors::run_sae(&a)?,
        Cmd::Lens(a) => readout::lens(&a)?,
        Cmd::Dla(a) => readout::dla(&a)?,
        Cmd::Attention(a) => readout::attention(&a)?,
        Cmd::Neuron(a) => readout::neuron(&a)?,
        Cmd::Monitor(a) => readout::monitor_cmd(&a)?,
        Cmd::BenchInterventions { m, hooks } => patch::bench(&m, &hooks)?,
        Cmd::Bench(args) => {
            set_threads(args.threads);
            bench::run(&args)?;
        }
    }
    Ok(())
}

/// Prompts for the precision gap: prose, a fact, code, digits, chat, other languages.
const GAP_PROMPTS: [&str; 8] = [
    "The capital of France is",
    "When Mary and John went to the store, John gave a drink to",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "The year 1969 was followed by 1970, 1971, and",
    "<|im_start|>user\nName three colours.<|im_end|>\n<|im_start|>assistant\n",
    "Il était une fois une petite fille qui",
    "Photosynthesis converts light energy into chemical energy stored in",
    "I love sunny days because they make me feel",
];

fn precision_gap(m: &ModelArgs) -> Result<()> {
    set_threads(m.threads);
    let (name, _) = source::resolve(&m.model)?;
    let load_as = |p: Precision| -> Result<Model> {
        let (_, src) = source::resolve(&m.model)?;
        Ok(Model::load(&name, src, p)?)
    };
    let exact = load_as(Precision::F32)?;
    let quant = load_as(Precision::Quantized)?;
    let (mut positions, mut agree, mut kl_sum, mut kl_max, mut diff_max) = (0usize, 0usize, 0f64, 0f64, 0f32);
    let mut per_prompt = Vec::new();
    for prompt in GAP_PROMPTS {
        let ids = exact.tokenizer().encode(prompt)?;
        let a: Vec<Vec<f32>> = exact.logits(&ids)?.to_vec2()?;
        let b: Vec<Vec<f32>> = quant.logits(&ids)?.to_vec2()?;
        let (mut p_agree, mut p_kl) = (0usize, 0f64);
        for (ra, rb) in a.iter().zip(&b) {
            let (la, lb) = (logsumexp(ra) as f64, logsumexp(rb) as f64);
            // KL(exact || quantized) of the next-token distributions.
            let kl: f64 = ra.iter().zip(rb).map(|(&x, &y)| {
                let (lpa, lpb) = (x as f64 - la, y as f64 - lb);
                lpa.exp() * (lpa - lpb)
            }).sum();
            let same = scalpel_engine::argmax(ra) == scalpel_engine::argmax(rb);
            p_agree += same as usize;
            p_kl += kl;
            kl_max = kl_max.max(kl);
            diff_max = ra.iter().zip(rb).map(|(x, y)| (x - y).abs()).fold(diff_max, f32::max);
        }
        positions += a.len();
        agree += p_agree;
        kl_sum += p_kl;
        per_prompt.push(json!({"prompt": prompt, "tokens": a.len(), "top1_agreement": p_agree as f64 / a.len() as f64,
            "mean_kl": p_kl / a.len() as f64}));
    }
    let v = json!({"model": name, "prompts": GAP_PROMPTS.len(), "positions": positions,
        "top1_agreement": agree as f64 / positions as f64, "mean_kl": kl_sum / positions as f64,
        "max_kl": kl_max, "max_abs_logit_diff": diff_max, "per_prompt": per_prompt});
    if m.json {
        print_json(&v)?;
    } else {
        println!("quantized vs f32 on {} prompts ({positions} positions) of {name}:", GAP_PROMPTS.len());
        println!("  top-1 agreement  {:.4}", agree as f64 / positions as f64);
        println!("  mean KL (nats)   {:.5}", kl_sum / positions as f64);
        println!("  max KL (nats)    {kl_max:.5}");
        println!("  max |logit diff| {diff_max:.4}");
    }
    Ok(())
}
