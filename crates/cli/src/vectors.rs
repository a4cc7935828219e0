//! `scalpel vector` (extract, score, save, import control vectors),
//! `scalpel probe` (linear probes per layer / head, ITI) and `scalpel sae`
//! (SAELens SAE encode / decode on a prompt). See docs/vectors.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::json;

use scalpel_engine::Model;
use scalpel_experiments::probes::{self, ItiDirection, ProbeOptions};
use scalpel_dictionaries::Sae;
use scalpel_interventions::vectors::{self, Method, MethodOptions, Pool, Resources};
use scalpel_interventions::Document;

use crate::args::{input_ids, load, print_json, InputArgs, ModelArgs};

#[derive(Args, Clone)]
pub struct VectorArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// ActAdd: the positive prompt of the pair.
    #[arg(long, allow_hyphen_values = true)]
    plus: Option<String>,
    /// ActAdd: the negative prompt of the pair.
    #[arg(long, allow_hyphen_values = true)]
    minus: Option<String>,
    /// A file of positive prompts, one per line (`\n` in a line is a newline).
    #[arg(long)]
    positive: Option<PathBuf>,
    /// A file of negative prompts, one per line (paired by line with --positive for pca).
    #[arg(long)]
    negative: Option<PathBuf>,
    /// actadd | mean_diff | pca | probe (default: actadd with --plus/--minus, else mean_diff).
    #[arg(long)]
    method: Option<String>,
    /// Hook to read. The separation sweep covers every layer of this site;
    /// `blocks.L.…` saves layer L, `blocks.*.…` saves every layer.
    #[arg(long, default_value = "blocks.*.hook_resid_post")]
    hook: String,
    /// Token position (negative counts from the end) or `mean` over the prompt.
    #[arg(long, default_value = "-1", allow_hyphen_values = true)]
    position: String,
    /// pca: subtract the mean difference first (repeng's pca_diff).
    #[arg(long)]
    center: bool,
    /// probe: L2 strength on standardized features.
    #[arg(long, default_value_t = probes::DEFAULT_L2)]
    l2: f64,
    /// Layers to save, e.g. `8-16` or `3,5,7` (default: the hook's layer, or all for blocks.*).
    #[arg(long)]
    layers: Option<String>,
    /// `scale` of the saved steering document (the strength, with --import).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    scale: f32,
    /// GGUF export: unit vectors (llama.cpp cvector-generator's convention) instead of gap-scaled ones.
    #[arg(long)]
    normalize: bool,
    /// Save: FILE.json (an intervention document) or FILE.gguf (a llama.cpp / repeng control vector).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Import a control vector (GGUF) as an intervention document (to --out, else stdout).
    #[arg(long, conflicts_with_all = ["plus", "minus", "positive", "negative", "method"])]
    import: Option<PathBuf>,
    /// Include the vectors in --json output.
    #[arg(long)]
    full: bool,
}

#[derive(Args, Clone)]
pub struct ProbeArgs {
    #[command(flatten)]
    m: ModelArgs,
    /// A file of positive examples (label 1), one prompt per line.
    #[arg(long)]
    positive: PathBuf,
    /// A file of negative examples (label 0), one prompt per line.
    #[arg(long)]
    negative: PathBuf,
    /// Hook site to probe at every layer (`blocks.*.…`); per-head hooks
    /// (attn.hook_z, q, k, v) are probed per head. Default:
    /// blocks.*.hook_resid_post, or blocks.*.attn.hook_z with --iti-top-k.
    #[arg(long)]
    hook: Option<String>,
    /// Token position (negative counts from the end) or `mean`.
    #[arg(long, default_value = "-1", allow_hyphen_values = true)]
    position: String,
    #[arg(long, default_value_t = probes::DEFAULT_L2)]
    l2: f64,
    /// Fraction of each class held out.
    #[arg(long, default_value_t = 0.25)]
    test_fraction: f64,
    /// Seed of the train/held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// ITI: shift the K heads with the best held-out accuracy.
    #[arg(long)]
    iti_top_k: Option<usize>,
    /// ITI strength α (shift = α·σ along the direction).
    #[arg(long, default_value_t = 15.0, allow_hyphen_values = true)]
    alpha: f32,
    /// ITI direction: mass_mean | probe.
    #[arg(long, default_value = "mass_mean")]
    iti_direction: String,
    /// Write the ITI intervention document here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Include every probe's weights in --json output.
    #[arg(long)]
    full: bool,
}

#[derive(Args, Clone)]
pub struct SaeArgs {
    #[command(flatten)]
    m: ModelArgs,
    #[command(flatten)]
    i: InputArgs,
    /// The dictionary directory (SAELens, sparsify, or Gemma Scope with a cfg.json naming its hook),
    /// or one layer_N.safetensors of a circuit-tracer transcoder set.
    #[arg(long = "dir")]
    dir: PathBuf,
    /// Latents shown per position.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Include inputs, latents and reconstructions in --json output.
    #[arg(long)]
    full: bool,
}

/// Prompts from a file: one per line, empty lines skipped, `\n` `\t` `\\` unescaped.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let out: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut s = String::with_capacity(l.len());
            let mut it = l.chars();
            while let Some(c) = it.next() {
                if c == '\\' {
                    match it.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('\\') => s.push('\\'),
                        Some(o) => {
                            s.push('\\');
                            s.push(o)
                        }
                        None => s.push('\\'),
                    }
                } else {
                    s.push(c);
                }
            }
            s
        })
        .collect();
    if out.is_empty() {
        bail!("{}: no prompts (the file is empty)", path.display());
    }
    Ok(out)
}

/// `8-16`, `3,5,7`, `12`.
fn parse_layers(s: &str, n: usize) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let num = |x: &str| -> Result<usize> { x.trim().parse().with_context(|| format!("--layers: '{x}' is not a layer number")) };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    bail!("--layers: empty range {part}");
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
    }
    if let Some(&bad) = out.iter().find(|&&l| l >= n) {
        bail!("--layers: layer {bad} is out of range (the model has {n} layers, 0..={})", n - 1);
    }
    if out.is_empty() {
        bail!("--layers: no layers given");
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("{}: cannot write", path.display()))
}

fn doc_json(doc: &Document) -> Result<String> {
    Ok(serde_json::to_string_pretty(doc)?)
}

fn fmt_opt(x: Option<f64>, prec: usize) -> String {
    match x {
        Some(v) => format!("{v:.prec$}"),
        None => "-".into(),
    }
}

pub fn run_vector(a: &VectorArgs) -> Result<()> {
    if let Some(path) = &a.import {
        return import(a, path);
    }
    let (positive, negative, default_method) = match (&a.plus, &a.minus, &a.positive, &a.negative) {
        (Some(p), Some(n), None, None) => (vec![p.clone()], vec![n.clone()], Method::Actadd),
        (None, None, Some(p), Some(n)) => (read_prompts(p)?, read_prompts(n)?, Method::MeanDiff),
        _ => bail!("give a prompt pair (--plus TEXT --minus TEXT) or two prompt files (--positive FILE --negative FILE), or --import FILE.gguf"),
    };
    let method = match &a.method {
        Some(m) => Method::parse(m).map_err(|e| anyhow!("--method: {e}"))?,
        None => default_method,
    };
    let pool = Pool::parse(&a.position).map_err(|e| anyhow!("--position: {e}"))?;
    let model = load(&a.m)?;
    let (points, chosen) = vectors::sweep_points(&model, &a.hook).map_err(|e| anyhow!("--hook: {e}"))?;
    let acts = vectors::collect(&model, &positive, &negative, &points, pool, &scalpel_interventions::never).map_err(anyhow::Error::msg)?;
    for w in &acts.warnings {
        eprintln!("warning: {w}");
    }
    let opts = MethodOptions { center: a.center, l2: a.l2 };
    let ex = vectors::extract(&acts, method, &opts).map_err(anyhow::Error::msg)?;
    let saved: Vec<usize> = match (&a.layers, chosen) {
        (Some(s), _) if points[0].layer.is_some() => {
            let ls = parse_layers(s, model.config.n_layers)?;
            (0..points.len()).filter(|&k| points[k].layer.is_some_and(|l| ls.contains(&l))).collect()
        }
        (Some(_), _) => bail!("--layers: '{}' is not a per-layer hook", a.hook),
        (None, Some(k)) => vec![k],
        (None, None) => (0..points.len()).collect(),
    };
    let save_points: Vec<_> = saved.iter().map(|&k| points[k]).collect();
    let save_vectors: Vec<Vec<f32>> = saved.iter().map(|&k| ex.vectors[k].clone()).collect();
    let mut out_warnings = Vec::new();
    if let Some(out) = &a.out {
        match out.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let doc = vectors::steering_document(&save_points, &save_vectors, a.scale);
                write_file(out, doc_json(&doc)?.as_bytes())?;
            }
            Some("gguf") => {
                let (cv, w) = vectors::to_control_vector(&model, &save_points, &save_vectors, a.normalize)
                    .map_err(|e| anyhow!("--out {}: {e}", out.display()))?;
                out_warnings = w;
                write_file(out, &vectors::write_control_vector(&cv).map_err(anyhow::Error::msg)?)?;
            }
            _ => bail!("--out {}: give a .json (intervention document) or .gguf (control vector) file name", out.display()),
        }
    }
    for w in &out_warnings {
        eprintln!("warning: {w}");
    }
    let best = ex.best();
    if a.m.json {
        let mut v = json!({
            "model": model.name, "method": method, "hook": a.hook, "position": a.position,
            "center": a.center, "n_positive": positive.len(), "n_negative": negative.len(),
            "layers": ex.scores, "best": best.map(|k| ex.scores[k].hook.clone()),
            "saved": save_points.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "out": a.out.as_ref().map(|p| p.display().to_string()),
            "warnings": acts.warnings.iter().chain(&out_warnings).collect::<Vec<_>>(),
        });
        if a.full {
            v["vectors"] = json!(ex.vectors);
        }
        print_json(&v)?;
    } else {
        println!(
            "{method:?} vector, {} positive / {} negative prompt(s), position {}: separation per layer",
            positive.len(),
            negative.len(),
            a.position
        );
        println!("{:<32} {:>9} {:>9} {:>7} {:>9} {:>8} {:>8}", "hook", "norm", "|act|", "ratio", "cohen_d", "loo_acc", "acc");
        for (k, s) in ex.scores.iter().enumerate() {
            let mark = if Some(k) == best { " <- best" } else if saved.contains(&k) { " (saved)" } else { "" };
            println!(
                "{:<32} {:>9.3} {:>9.2} {:>7.3} {:>9} {:>8} {:>8.3}{mark}",
                s.hook,
                s.norm,
                s.act_norm,
                s.norm / s.act_norm.max(1e-12),
                fmt_opt(s.cohens_d, 2),
                fmt_opt(s.loo_accuracy, 3),
                s.accuracy
            );
        }
        if let Some(out) = &a.out {
            println!("wrote {} ({} layer(s))", out.display(), save_points.len());
        }
    }
    Ok(())
}

fn import(a: &VectorArgs, path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let (mut cv, mut warnings) = vectors::read_control_vector(&path.display().to_string(), &bytes).map_err(anyhow::Error::msg)?;
    let model = load(&a.m)?;
    if let Some(s) = &a.layers {
        let ls = parse_layers(s, model.config.n_layers)?;
        cv.directions.retain(|(k, _)| ls.contains(k));
        if cv.directions.is_empty() {
            bail!("--layers {s}: the control vector has none of these layers");
        }
    }
    let (doc, w) = vectors::control_vector_document(&model, &cv, a.scale).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    warnings.extend(w);
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let text = doc_json(&doc)?;
    match &a.out {
        Some(out) if out.extension().and_then(|e| e.to_str()) == Some("json") => write_file(out, text.as_bytes())?,
        Some(out) => bail!("--out {}: an imported control vector is written as an intervention document (.json)", out.display()),
        None if !a.m.json => println!("{text}"),
        None => {}
    }
    if a.m.json {
        print_json(&json!({"model_hint": cv.model_hint, "layers": cv.directions.iter().map(|d| d.0).collect::<Vec<_>>(),
            "hooks": doc.interventions.iter().map(|iv| iv.hook.clone()).collect::<Vec<_>>(), "scale": a.scale,
            "document": if a.out.is_none() { serde_json::to_value(&doc)? } else { serde_json::Value::Null },
            "out": a.out.as_ref().map(|p| p.display().to_string()), "warnings": warnings}))?;
    }
    Ok(())
}

pub fn run_probe(a: &ProbeArgs) -> Result<()> {
    let positive = read_prompts(&a.positive)?;
    let negative = read_prompts(&a.negative)?;
    let pool = Pool::parse(&a.position).map_err(|e| anyhow!("--position: {e}"))?;
    let iti_dir = ItiDirection::parse(&a.iti_direction).map_err(|e| anyhow!("--iti-direction: {e}"))?;
    let hook = match (&a.hook, a.iti_top_k) {
        (Some(h), _) => h.clone(),
        (None, Some(_)) => "blocks.*.attn.hook_z".into(),
        (None, None) => "blocks.*.hook_resid_post".into(),
    };
    if a.iti_top_k.is_none() && a.out.is_some() {
        bail!("--out writes the ITI document: give --iti-top-k K");
    }
    let model = load(&a.m)?;
    let (points, _) = vectors::sweep_points(&model, &hook).map_err(|e| anyhow!("--hook: {e}"))?;
    let site = points[0].site;
    if a.iti_top_k.is_some() && site != scalpel_engine::Site::Z {
        bail!("--iti-top-k shifts attention heads: use --hook blocks.*.attn.hook_z (or leave --hook out)");
    }
    let d_head = site.head_axis().filter(|&ax| ax == 2).map(|_| model.config.d_head);
    let acts = vectors::collect(&model, &positive, &negative, &points, pool, &scalpel_interventions::never).map_err(anyhow::Error::msg)?;
    for w in &acts.warnings {
        eprintln!("warning: {w}");
    }
    let opts = ProbeOptions { l2: a.l2, test_fraction: a.test_fraction, seed: a.seed };
    let report = probes::probe_all(&acts, d_head, &opts).map_err(anyhow::Error::msg)?;
    let best = (0..report.cells.len()).max_by(|&x, &y| {
        let (p, q) = (&report.cells[x], &report.cells[y]);
        p.test_accuracy.total_cmp(&q.test_accuracy).then(q.test_loss.total_cmp(&p.test_loss)).then(y.cmp(&x))
    });
    let iti = match a.iti_top_k {
        Some(k) => {
            let (doc, heads) = probes::iti(&acts, &report, k, a.alpha, iti_dir).map_err(anyhow::Error::msg)?;
            if let Some(out) = &a.out {
                write_file(out, doc_json(&doc)?.as_bytes())?;
            }
            Some((doc, heads))
        }
        None => None,
    };
    if a.m.json {
        let mut v = json!({
            "model": model.name, "hook": hook, "position": a.position, "rows": report.rows, "cols": report.cols,
            "row_labels": points.iter().map(|p| p.name()).collect::<Vec<_>>(),
            "per_head": d_head.is_some(),
            "test_accuracy": report.matrix(|c| c.test_accuracy),
            "train_accuracy": report.matrix(|c| c.train_accuracy),
            "test_loss": report.matrix(|c| c.test_loss),
            "split": report.split, "n_positive": report.n_positive, "n_negative": report.n_negative,
            "l2": a.l2, "seed": a.seed, "test_fraction": a.test_fraction,
            "best": best.map(|b| json!({"hook": report.cells[b].hook, "head": report.cells[b].head,
                "test_accuracy": report.cells[b].test_accuracy})),
        });
        if let Some((doc, heads)) = &iti {
            v["iti"] = json!({"heads": heads, "alpha": a.alpha, "direction": iti_dir,
                "out": a.out.as_ref().map(|p| p.display().to_string()),
                "document": if a.out.is_none() { serde_json::to_value(doc)? } else { serde_json::Value::Null }});
        }
        if a.full {
            v["probes"] = json!(report.cells.iter().map(|c| json!({"hook": c.hook, "head": c.head, "w": c.probe.w, "b": c.probe.b,
                "mean": c.probe.mean, "scale": c.probe.scale, "iterations": c.probe.iterations})).collect::<Vec<_>>());
        }
        print_json(&v)?;
    } else {
        println!(
            "linear probes at {hook}, position {}: {} positive / {} negative, {} held out (seed {})",
            a.position,
            report.n_positive,
            report.n_negative,
            report.split.test.len(),
            a.seed
        );
        if report.cols == 1 {
            println!("{:<32} {:>9} {:>9} {:>9}", "hook", "held-out", "train", "loss");
            for c in &report.cells {
                println!("{:<32} {:>9.3} {:>9.3} {:>9.4}", c.hook, c.test_accuracy, c.train_accuracy, c.test_loss);
            }
        } else {
            println!("held-out accuracy, layer x head:");
            let heads: Vec<String> = (0..report.cols).map(|h| format!("{:>6}", format!("H{h}"))).collect();
            println!("     {}", heads.join(""));
            for (r, row) in report.matrix(|c| c.test_accuracy).iter().enumerate() {
                let cells: Vec<String> = row.iter().map(|v| format!("{v:>6.2}")).collect();
                println!("L{:<4}{}", points[r].layer.unwrap_or(0), cells.join(""));
            }
        }
        if let Some(b) = best {
            let c = &report.cells[b];
            let head = c.head.map(|h| format!(" head {h}")).unwrap_or_default();
            println!("best: {}{head} (held-out accuracy {:.3})", c.hook, c.test_accuracy);
        }
        if let Some((_, heads)) = &iti {
            println!("ITI ({:?} direction, alpha {}):", iti_dir, a.alpha);
            for h in heads {
                println!("  L{} H{}: held-out {:.3}, sigma {:.4}", h.layer, h.head, h.test_accuracy, h.sigma);
            }
            if let Some(out) = &a.out {
                println!("wrote {}", out.display());
            }
        }
    }
    Ok(())
}

/// Loads a dictionary in any format `scalpel_dictionaries` reads
/// (docs/features.md): a folder (SAELens, sparsify, Gemma Scope), or one
/// layer's file of a circuit-tracer transcoder set (`DIR/layer_6.safetensors`,
/// its `config.yaml` beside it). `hook` / `hook_out` name the hooks of
/// formats whose files do not.
pub fn load_dict(path: &Path, hook: Option<&str>, hook_out: Option<&str>) -> Result<Sae> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()));
    if path.is_file() {
        let config = path.parent().map(|d| d.join("config.yaml")).filter(|c| c.is_file());
        let (Some(config), Some(file)) = (config, path.file_name().and_then(|f| f.to_str())) else {
            bail!("{}: a file is read as one layer of a circuit-tracer transcoder set, with its config.yaml beside it; none is there (other dictionaries are folders)", path.display());
        };
        let yaml = read(&config)?;
        if yaml.len() > scalpel_dictionaries::MAX_CONFIG_YAML {
            bail!("{}: {} bytes; a transcoder set's config.yaml is a few hundred", config.display(), yaml.len());
        }
        let weights = read(path)?;
        let files = scalpel_dictionaries::DictFiles { config_yaml: Some(&yaml), layer_file: Some((file, &weights)), hook, hook_out, ..Default::default() };
        return finish(Sae::load_files(&path.display().to_string(), &files));
    }
    if !path.is_dir() {
        bail!("{}: not a directory (a dictionary is a folder: cfg.json + weights; or one layer_N.safetensors of a circuit-tracer set)", path.display());
    }
    let dir = path;
    if dir.join("config.yaml").is_file() && !dir.join("cfg.json").exists() {
        let layers = std::fs::read_dir(dir)
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str().and_then(scalpel_dictionaries::circuit_tracer_layer)).count())
            .unwrap_or(0);
        bail!(
            "{}: a circuit-tracer transcoder set (config.yaml, {layers} layer_N.safetensors files): give one layer's file, e.g. {}",
            dir.display(),
            dir.join("layer_0.safetensors").display()
        );
    }
    let mut bytes: Vec<Option<Vec<u8>>> = Vec::new();
    for f in scalpel_dictionaries::FILE_NAMES {
        let p = dir.join(f);
        bytes.push(if p.exists() { Some(read(&p)?) } else { None });
    }
    let folder = dir.canonicalize().ok().and_then(|d| d.file_name().map(|f| f.to_string_lossy().into_owned())).unwrap_or_default();
    let files = scalpel_dictionaries::DictFiles {
        folder: &folder,
        cfg_json: bytes[0].as_deref(),
        sae_weights_safetensors: bytes[1].as_deref(),
        sae_safetensors: bytes[2].as_deref(),
        params_npz: bytes[3].as_deref(),
        params_safetensors: bytes[4].as_deref(),
        hook,
        hook_out,
        ..Default::default()
    };
    finish(Sae::load_files(&dir.display().to_string(), &files))
}

fn finish(sae: Result<Sae, String>) -> Result<Sae> {
    let sae = sae.map_err(anyhow::Error::msg)?;
    for n in &sae.notes {
        eprintln!("note: {}: {n}", sae.name);
    }
    Ok(sae)
}

/// Loads a dictionary directory whose files name its hooks.
pub fn load_sae(dir: &Path) -> Result<Sae> {
    load_dict(dir, None, None)
}

/// Resolves `{"from": "sae"}`, `{"from": "file"}` and `sae_clamp` in a
/// document read from `doc_path` (relative file paths are relative to it).
pub fn resolve_doc(model: &Model, doc: Document, sae_dirs: &[PathBuf], doc_path: &Path) -> Result<(Document, vectors::SaeTable)> {
    let saes = sae_dirs.iter().map(|d| load_sae(d).map(Arc::new)).collect::<Result<Vec<_>>>()?;
    let base = doc_path.parent().map(Path::to_path_buf).unwrap_or_default();
    let read = |p: &str| -> Result<Vec<u8>, String> {
        let path = if Path::new(p).is_absolute() { PathBuf::from(p) } else { base.join(p) };
        std::fs::read(&path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
    };
    let res = Resources { saes, read_file: Some(&read) };
    vectors::resolve(model, &doc, &res).map_err(anyhow::Error::msg)
}

pub fn run_sae(a: &SaeArgs) -> Result<()> {
    let sae = load_sae(&a.dir)?;
    let model = load(&a.m)?;
    sae.point(&model).map_err(anyhow::Error::msg)?;
    let ids = input_ids(&model, &a.i)?;
    if a.i.interventions.is_some() || !a.i.sae.is_empty() {
        bail!("scalpel sae reads the model's own activations with the SAE in --dir; --interventions and --sae do not apply");
    }
    let t = ids.len();
    let (enc, rel) = scalpel_dictionaries::features::features(&model, &sae, &ids).map_err(anyhow::Error::msg)?;
    let (x, f, r) = (enc.input, enc.latents, enc.output);
    let xs: Vec<Vec<f32>> = x.to_vec2()?;
    let fs: Vec<Vec<f32>> = f.to_vec2()?;
    let rs: Vec<Vec<f32>> = r.to_vec2()?;
    let l0: Vec<usize> = fs.iter().map(|row| row.iter().filter(|&&v| v != 0.0).count()).collect();
    let tokens = model.tokenizer().token_strings(&ids);
    let top: Vec<Vec<serde_json::Value>> = fs
        .iter()
        .map(|row| scalpel_engine::top_k(row, a.top_k).into_iter().filter(|x| x.1 > 0.0).map(|(i, v)| json!({"latent": i, "value": v})).collect())
        .collect();
    if a.m.json {
        let mut v = json!({"sae": sae.name, "hook": sae.hook_name, "architecture": sae.arch, "d_in": sae.d_in, "d_sae": sae.d_sae,
            "ids": ids, "tokens": tokens, "l0": l0, "relative_error": rel, "top": top});
        if a.full {
            v["input"] = json!(xs);
            v["features"] = json!(fs);
            v["reconstruction"] = json!(rs);
        }
        print_json(&v)?;
    } else {
        println!("{} at {} ({:?}, {} -> {} latents) on {t} tokens:", sae.name, sae.hook_name, sae.arch, sae.d_in, sae.d_sae);
        for p in 0..t {
            let lat: Vec<String> = top[p].iter().map(|x| format!("{}={:.3}", x["latent"], x["value"].as_f64().unwrap_or(0.0))).collect();
            println!("{p:>4} {:<16} L0 {:>5}  |err|²/|x|² {:.4}  {}", format!("{:?}", tokens[p]), l0[p], rel[p], lat.join(" "));
        }
    }
    Ok(())
}
