//! `scalpel bench`: this engine (with each requested matmul kernel set)
//! against candle-transformers' own quantized llama on the same GGUF, in one
//! run, alternating so machine noise hits all of them.

use std::io::Cursor;
use std::time::Instant;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use candle_transformers::models::quantized_llama::ModelWeights;
use clap::Args;
use serde_json::json;

use scalpel_engine::{argmax, Hook, HookCtx, HookPoint, Kernels, Model, ModelSource, Precision};
use scalpel_experiments::bench::{self, median, Speeds};

#[derive(Args, Clone)]
pub struct BenchArgs {
    /// A .gguf file (llama family) or `default`.
    #[arg(long, default_value = "default")]
    model: String,
    /// Precision of our engine (the candle reference is always quantized).
    #[arg(long, default_value = "quantized")]
    precision: String,
    /// Matmul kernels of our engine, comma-separated (each is measured):
    /// candle, scalpel, auto.
    #[arg(long, default_value = "candle,scalpel")]
    kernels: String,
    #[arg(long, default_value_t = 64)]
    prompt_tokens: usize,
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    #[arg(long)]
    json: bool,
}

/// A hook that wants nothing: measures the cost of the hook checks alone.
struct NoOpHook;
impl Hook for NoOpHook {
    fn wants(&self, _: HookPoint) -> bool {
        false
    }
    fn call(&mut self, _: &HookCtx, _: &Tensor) -> scalpel_engine::Result<Option<Tensor>> {
        Ok(None)
    }
}

/// candle-transformers' quantized llama on the same file and prompt: the
/// reference the ratios are taken against.
fn reference(bytes: &[u8], prompt: &[u32], decode: usize) -> Result<Speeds> {
    let mut reader = Cursor::new(bytes);
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader)?;
    let mut m = ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)?;
    // Twice, the first not counted, as ours (`bench::warm_up`); a pass at
    // position 0 starts the model's cache afresh.
    let mut run = || -> Result<Speeds> {
        let t0 = Instant::now();
        let x = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
        let logits = m.forward(&x, 0)?;
        let mut next = argmax(&logits.flatten_all()?.to_vec1::<f32>()?);
        let prefill = prompt.len() as f64 / t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        for i in 0..decode {
            let x = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
            let logits = m.forward(&x, prompt.len() + i)?;
            next = argmax(&logits.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(Speeds { prefill, decode: decode as f64 / t1.elapsed().as_secs_f64() })
    };
    run()?;
    run()
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let (name, files) = crate::source::resolve(&a.model)?;
    let scalpel_engine::ModelFiles::Gguf(bytes) = files else { bail!("bench compares against candle's GGUF llama: pass a .gguf file") };
    let precision: Precision = a.precision.parse()?;
    let kernels: Vec<Kernels> = a.kernels.split(',').map(|k| k.trim().parse()).collect::<Result<_, _>>()?;
    if kernels.is_empty() {
        bail!("--kernels lists no kernels");
    }
    let mut models = Vec::new();
    for &k in &kernels {
        models.push(Model::load_with(&name, ModelSource::Gguf(&bytes), precision, k)?);
    }
    if a.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let model = &models[0];
    let prompt = bench::prompt(model, a.prompt_tokens, a.decode_tokens)?;
    let n = models.len();
    let (mut op, mut od) = (vec![vec![]; n], vec![vec![]; n]);
    let (mut hp, mut hd, mut rp, mut rd) = (vec![], vec![], vec![], vec![]);
    for m in &models {
        bench::warm_up(m, &prompt, a.decode_tokens)?;
    }
    for round in 0..a.rounds {
        if !a.json {
            eprintln!("round {}/{}...", round + 1, a.rounds);
        }
        for (i, m) in models.iter().enumerate() {
            let s = bench::measure(m, &prompt, a.decode_tokens, None)?;
            op[i].push(s.prefill);
            od[i].push(s.decode);
        }
        let s = reference(&bytes, &prompt, a.decode_tokens)?;
        rp.push(s.prefill);
        rd.push(s.decode);
        let s = bench::measure(model, &prompt, a.decode_tokens, Some(&mut NoOpHook))?;
        hp.push(s.prefill);
        hd.push(s.decode);
    }
    let op: Vec<f64> = op.into_iter().map(median).collect();
    let od: Vec<f64> = od.into_iter().map(median).collect();
    let (rp, rd, hp, hd) = (median(rp), median(rd), median(hp), median(hd));
    let label = |i: usize| format!("{} ({})", kernels[i], models[i].kernels());
    // The memory-bandwidth bound on decode: matrix bytes per token over the read rate.
    let rate = bench::read_rate(256 << 20, 3);
    let bound = |m: &Model| rate / m.matrix_bytes() as f64;
    let mut ours_json = serde_json::Map::new();
    for i in 0..n {
        ours_json.insert(
            kernels[i].to_string(),
            json!({"kernels_in_use": models[i].kernels().to_string(), "prefill_tok_s": op[i], "decode_tok_s": od[i],
                "ratio_over_reference": {"prefill": op[i] / rp, "decode": od[i] / rd},
                "matrix_bytes_per_token": models[i].matrix_bytes(), "weight_bytes": models[i].weight_bytes(),
                "decode_bound_tok_s": bound(&models[i]),
                "share_of_bound": od[i] / bound(&models[i])}),
        );
    }
    let v = json!({
        "ours": ours_json,
        "candle_reference": {"prefill_tok_s": rp, "decode_tok_s": rd},
        "read_bytes_per_s": rate,
        "ratio_last_over_first_kernels": {"prefill": op[n - 1] / op[0], "decode": od[n - 1] / od[0]},
        "ours_with_noop_hook": {"kernels": kernels[0].to_string(), "prefill_tok_s": hp, "decode_tok_s": hd},
        "settings": {"model": name, "precision": a.precision, "kernels": a.kernels, "prompt_tokens": a.prompt_tokens,
            "decode_tokens": a.decode_tokens, "rounds": a.rounds, "threads": a.threads, "statistic": "median", "warm_up_runs": 1},
    });
    if a.json {
        println!("{v}");
    } else {
        println!("model {name}, ours in {} precision, {} threads, median of {} rounds after a warm-up run", a.precision, a.threads, a.rounds);
        println!("                                 prefill tok/s   decode tok/s");
        for i in 0..n {
            println!("ours, kernels {:<18} {:>13.1}   {:>12.1}", label(i), op[i], od[i]);
        }
        println!("candle reference                 {rp:>13.1}   {rd:>12.1}");
        println!("ours, {:<17} no-op hook {hp:>11.1}   {hd:>12.1}", label(0));
        for i in 0..n {
            println!("ratio {:<18}/reference {:>11.3}   {:>12.3}", label(i), op[i] / rp, od[i] / rd);
        }
        if n > 1 {
            println!("ratio {} / {}            {:>13.3}   {:>12.3}", kernels[n - 1], kernels[0], op[n - 1] / op[0], od[n - 1] / od[0]);
        }
        println!("streaming read {:.1} GB/s (one thread, 256 MiB)", rate / 1e9);
        for (i, m) in models.iter().enumerate() {
            println!(
                "decode bound, kernels {:<14} {:.1} MB/token -> {:.1} tok/s; measured {:.0}% of it; weights hold {:.1} MB",
                label(i),
                m.matrix_bytes() as f64 / 1e6,
                bound(m),
                100.0 * od[i] / bound(m),
                m.weight_bytes() as f64 / 1e6
            );
        }
    }
    Ok(())
}
