//! `scalpel export`: an intervention document for engines that run models
//! too big for a browser tab (docs/export.md). The export itself is
//! `scalpel-export` (pure functions); this resolves the model's shape and
//! any vector computed from prompts, then writes the result.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;

use scalpel_export::{ModelSpec, ScriptOptions, Target};
use scalpel_types::{Document, Intervention, Op, Vector};

use crate::args::{load, ModelArgs};
use crate::vectors;

#[derive(Args)]
pub struct ExportArgs {
    /// nnsight, transformer-lens, llama-cpp (control-vector GGUF) or vllm-lens (request body).
    #[arg(long)]
    to: String,
    /// The intervention document (JSON, docs/interventions.md).
    #[arg(long)]
    doc: PathBuf,
    /// The model the document is for: `default`, a .gguf file or a Hugging Face
    /// directory. A directory is read from its config.json alone (no weights)
    /// unless a vector must be computed from prompts.
    #[arg(long, default_value = "default")]
    model: String,
    /// The model's name in the export (Hugging Face id or directory); default:
    /// the --model directory, or HuggingFaceTB/SmolLM2-135M-Instruct for `default`.
    #[arg(long)]
    hf_model: Option<String>,
    /// The prompt the script runs by default (and the vllm-lens request's prompt).
    #[arg(long, default_value = "The capital of France is")]
    prompt: String,
    /// Tokens the script generates by default (0: next-token logits only).
    #[arg(long, default_value_t = 0)]
    max_new_tokens: usize,
    /// Output file; default stdout (llama-cpp needs one: the GGUF).
    #[arg(long)]
    out: Option<PathBuf>,
    /// llama-cpp: the model GGUF named in the printed llama-server command.
    #[arg(long, default_value = "MODEL.gguf")]
    llama_model: String,
    /// SAE directories for the document's `{"from": "sae"}` vectors.
    #[arg(long)]
    sae: Vec<PathBuf>,
}

fn computed(v: &Vector) -> bool {
    matches!(v, Vector::From(_))
}

fn needs_engine(ivs: &[Intervention]) -> bool {
    ivs.iter().any(|iv| match &iv.op {
        Op::Add { vector, .. } | Op::KvAdd { vector, .. } => computed(vector),
        Op::ProjectOut { direction } | Op::SetProjection { direction, .. } => computed(direction),
        Op::Conditional { direction, then, .. } => computed(direction) || needs_engine(then),
        _ => false,
    })
}

fn spec_of(c: &scalpel_engine::Config, name: String) -> ModelSpec {
    ModelSpec {
        arch: c.arch.name().to_owned(),
        name,
        n_layers: c.n_layers,
        d_model: c.d_model,
        n_heads: c.n_heads,
        n_kv_heads: c.n_kv_heads,
        d_head: c.d_head,
        d_mlp: c.d_mlp,
    }
}

/// The model's shape and the document with every vector literal.
fn prepare(a: &ExportArgs, doc: Document, name: String) -> Result<(ModelSpec, Document)> {
    let dir = Path::new(&a.model);
    if a.model != "default" && dir.is_dir() && !needs_engine(&doc.interventions) {
        let path = dir.join("config.json");
        let json = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let cfg = scalpel_engine::hf_config(&path.display().to_string(), &json)?;
        return Ok((spec_of(&cfg, name), doc));
    }
    let m = ModelArgs {
        model: a.model.clone(),
        precision: "f32".into(),
        kernels: "auto".into(),
        json: false,
        threads: 1,
    };
    let model = load(&m)?;
    let (doc, _) = vectors::resolve_doc(&model, doc, &a.sae, &a.doc)?;
    let (doc, warnings) = scalpel_interventions::vectors::literal_vectors(&model, &doc).map_err(|e| anyhow!("{}: {e}", a.doc.display()))?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok((spec_of(&model.config, name), doc))
}

fn write_out(out: &Option<PathBuf>, bytes: &[u8]) -> Result<()> {
    match out {
        Some(p) => std::fs::write(p, bytes).with_context(|| format!("{}: cannot write", p.display())),
        None => {
            use std::io::Write;
            std::io::stdout().lock().write_all(bytes)?;
            Ok(())
        }
    }
}

pub fn run(a: &ExportArgs) -> Result<()> {
    let target: Target = a.to.parse().map_err(anyhow::Error::msg)?;
    let text = std::fs::read_to_string(&a.doc).with_context(|| format!("{}: cannot read", a.doc.display()))?;
    let doc = scalpel_interventions::parse(&text).map_err(|e| anyhow!("{}: {e}", a.doc.display()))?;
    let name = match (&a.hf_model, a.model.as_str()) {
        (Some(n), _) => n.clone(),
        (None, "default") => "HuggingFaceTB/SmolLM2-135M-Instruct".into(),
        (None, m) if Path::new(m).is_dir() => m.to_owned(),
        (None, m) => bail!(
            "--model {m} is not a Hugging Face directory: name the model for the export with --hf-model (e.g. meta-llama/Llama-3.1-8B)"
        ),
    };
    let (spec, doc) = prepare(a, doc, name)?;
    let at = |e: String| anyhow!("{}: cannot export to {}: {e}", a.doc.display(), target.name());
    let plan = scalpel_export::plan(&doc, &spec).map_err(at)?;
    let opts = ScriptOptions {
        prompt: a.prompt.clone(),
        max_new_tokens: a.max_new_tokens,
    };
    for (i, op) in &plan.disabled {
        eprintln!("note: intervention {i} ({op}) is disabled in the document and not exported");
    }
    match target {
        Target::Nnsight => write_out(&a.out, scalpel_export::nnsight::script(&plan, &spec, &opts).map_err(at)?.as_bytes()),
        Target::TransformerLens => write_out(
            &a.out,
            scalpel_export::transformer_lens::script(&plan, &spec, &opts)
                .map_err(at)?
                .as_bytes(),
        ),
        Target::VllmLens => {
            let (body, _) = scalpel_export::vllm_lens::request(&plan, &spec, &opts).map_err(at)?;
            let mut s = serde_json::to_string_pretty(&body)?;
            s.push('\n');
            write_out(&a.out, s.as_bytes())?;
            eprintln!("send it with: curl -s http://localhost:8000/v1/completions -H 'Content-Type: application/json' -d @FILE (vllm serve {} with vllm-lens installed)", spec.name);
            Ok(())
        }
        Target::LlamaCpp => {
            let Some(out) = &a.out else {
                bail!("--to llama-cpp writes a GGUF file: give --out FILE.gguf")
            };
            let e = scalpel_export::llama_cpp::export(&plan, &spec, &out.display().to_string(), &a.llama_model).map_err(at)?;
            write_out(&a.out, &e.gguf)?;
            println!("{}", e.command);
            Ok(())
        }
    }
}
