//! `scalpel`: the engine from the command line. Every subcommand prints a
//! human summary, or machine-readable JSON with `--json`. One module per
//! command group; `args.rs` holds what they share.

mod args;
mod bench;
mod export;
mod features;
mod forward;
mod patch;
mod precision_gap;
mod readout;
mod source;
mod vectors;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::args::{set_threads, ModelArgs};

#[derive(Parser)]
#[command(name = "scalpel", version, about = "Run, read and intervene inside small language models")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Text to token ids and token strings.
    Tokenize(forward::TokenizeArgs),
    /// Next-token logits (argmax per position, top-k at the last one).
    Logits(forward::LogitsArgs),
    /// The value at one hook point (TransformerLens name).
    Activations(forward::ActivationsArgs),
    /// Generate text (temperature 0 = greedy).
    Generate(forward::GenerateArgs),
    /// Model facts and every hook name.
    Info(forward::InfoArgs),
    /// Prefill and decode speed: this engine vs candle-transformers' quantized llama.
    Bench(bench::BenchArgs),
    /// Activation patching sweep: layer × position (layer × head for head_z,
    /// layer·head × position for head_z_pos).
    Patch(patch::PatchArgs),
    /// Patching sweep speed (fast vs naive) and the cost of steering during generation.
    BenchInterventions(patch::BenchInterventionsArgs),
    /// Steering vector from prompts (actadd, mean_diff, pca, probe) with a per-layer
    /// separation score; saves an intervention document or a control vector GGUF,
    /// or imports one (--import).
    Vector(vectors::VectorArgs),
    /// Linear probes per layer or per attention head (held-out accuracy); ITI from the best heads.
    Probe(vectors::ProbeArgs),
    /// A SAELens SAE on a prompt: latents per token, reconstruction error.
    Sae(vectors::SaeArgs),
    /// A dictionary's features: top latents per position (--prompt/--ids), or one
    /// latent's top-activating contexts over a corpus (--latent I --corpus FILE).
    Features(features::FeaturesArgs),
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
    /// An intervention document as an nnsight or TransformerLens script, a llama.cpp
    /// control vector or a vllm-lens steering request (docs/export.md).
    Export(export::ExportArgs),
    /// How far `quantized` is from `f32` on a fixed prompt set: KL and top-1 agreement.
    PrecisionGap(ModelArgs),
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

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Tokenize(a) => forward::tokenize(&a),
        Cmd::Logits(a) => forward::logits(&a),
        Cmd::Activations(a) => forward::activations(&a),
        Cmd::Generate(a) => forward::generate(&a),
        Cmd::Info(a) => forward::info(&a),
        Cmd::PrecisionGap(m) => precision_gap::run(&m),
        Cmd::Patch(a) => patch::run(&a),
        Cmd::Export(a) => export::run(&a),
        Cmd::BenchInterventions(a) => patch::bench(&a),
        Cmd::Vector(a) => vectors::run_vector(&a),
        Cmd::Probe(a) => vectors::run_probe(&a),
        Cmd::Sae(a) => vectors::run_sae(&a),
        Cmd::Features(a) => features::run(&a),
        Cmd::Lens(a) => readout::lens(&a),
        Cmd::Dla(a) => readout::dla(&a),
        Cmd::Attention(a) => readout::attention(&a),
        Cmd::Neuron(a) => readout::neuron(&a),
        Cmd::Monitor(a) => readout::monitor_cmd(&a),
        Cmd::Bench(a) => {
            set_threads(a.threads);
            bench::run(&a)
        }
    }
}
