//! Speed, measured one way for `scalpel bench` and the page's benchmark:
//! [`SEED_TEXT`] cycled to the prompt length, one prefill forward pass, then
//! greedy KV-cached decode steps.

use scalpel_engine::{argmax, Error, Hook, KvCache, Logits, Model, Result, Tensor};
use web_time::Instant;

/// The text cycled into the benchmark prompt.
pub const SEED_TEXT: &str =
    "The quick brown fox jumps over the lazy dog. In 1905, Einstein published four papers that changed physics. ";

/// `n` tokens of [`SEED_TEXT`] cycled, leaving room for `decode` more in the context.
pub fn prompt(model: &Model, n: usize, decode: usize) -> Result<Vec<u32>> {
    if n == 0 {
        return Err(Error::input("the benchmark prompt needs at least 1 token"));
    }
    if n + decode + 1 > model.config.n_ctx {
        return Err(Error::input(format!("prompt + decode tokens exceed the model's context length {}", model.config.n_ctx)));
    }
    let base = model.tokenizer().encode(SEED_TEXT)?;
    Ok(base.iter().copied().cycle().take(n).collect())
}

/// The benchmark prompt's length as text for another engine, which
/// tokenizes it itself (llama.cpp in the page's Benchmark panel): the first
/// `n` tokens of [`SEED_TEXT`] repeated, decoded (after the BOS, if the
/// model's tokenizer adds one: the other engine adds its own). Not
/// [`prompt`]'s ids decoded: cycled ids join `"… physics. "` to `"The"`,
/// which a tokenizer reading the text merges into `" The"`, one token fewer
/// per cycle.
pub fn prompt_text(model: &Model, n: usize) -> Result<String> {
    let tok = model.tokenizer();
    let bos = tok.encode("")?.len();
    let per = tok.encode(SEED_TEXT)?.len().saturating_sub(bos).max(1);
    let ids = tok.encode(&SEED_TEXT.repeat(n / per + 2))?;
    Ok(tok.decode(&ids[bos..(bos + n).min(ids.len())]))
}

/// Tokens per second of one prefill and of the decode steps after it.
#[derive(Clone, Copy, Debug)]
pub struct Speeds {
    pub prefill: f64,
    pub decode: f64,
}

/// Prefill `prompt`, then `decode` greedy steps, with `hook` (if any) on every pass.
pub fn measure(model: &Model, prompt: &[u32], decode: usize, mut hook: Option<&mut dyn Hook>) -> Result<Speeds> {
    let next = |logits: Tensor| -> Result<u32> { Ok(argmax(&logits.flatten_all()?.to_vec1::<f32>()?)) };
    let t0 = Instant::now();
    let mut cache = KvCache::new(&model.config);
    let mut token = next(model.forward(&model.ids_tensor(prompt)?, Some(&mut cache), hook.as_deref_mut(), Logits::Last)?)?;
    let prefill = prompt.len() as f64 / t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..decode {
        token = next(model.forward(&model.ids_tensor(&[token])?, Some(&mut cache), hook.as_deref_mut(), Logits::Last)?)?;
    }
    Ok(Speeds { prefill, decode: decode as f64 / t1.elapsed().as_secs_f64() })
}

/// The median [`Speeds`] of `rounds` runs of [`measure`], after one more
/// run that is not counted (see [`warm_up`]).
pub fn measure_rounds(model: &Model, prompt: &[u32], decode: usize, rounds: usize) -> Result<Speeds> {
    if rounds == 0 {
        return Err(Error::input("the benchmark needs at least 1 round"));
    }
    warm_up(model, prompt, decode)?;
    let runs = (0..rounds).map(|_| measure(model, prompt, decode, None)).collect::<Result<Vec<_>>>()?;
    Ok(Speeds { prefill: median(runs.iter().map(|s| s.prefill).collect()), decode: median(runs.iter().map(|s| s.decode).collect()) })
}

/// One run of [`measure`], not counted, so that every timed run starts
/// from the same state. A worker's first runs after it loads a model (or
/// restarts on another thread count) can be slower: in the page, a fresh
/// page's first benchmark (median of 3, no warm-up) decoded 1% and 11%
/// slower than the next three on 2 threads and 5% and 8% on 1, quantized
/// (two pages each; f32 on 1 thread: no difference). `cargo xtask bench`
/// measures 2 threads first thing after the worker restarts, so its
/// 2-thread rows paid that. llama.cpp's side of the page's comparison
/// likewise reports the last of its two runs.
pub fn warm_up(model: &Model, prompt: &[u32], decode: usize) -> Result<()> {
    measure(model, prompt, decode, None).map(|_| ())
}

/// The machine's streaming-read rate in bytes/s: the best of `passes`
/// sums over a buffer of `bytes` (well past the caches: 256 MiB natively),
/// with independent accumulators so the loop is bound by memory, not by
/// the adds. A decode step reads every matrix once, so
/// `Model::matrix_bytes() / rate` is the least time a token can take.
pub fn read_rate(bytes: usize, passes: usize) -> f64 {
    let words = (bytes / 8).max(1 << 10);
    // Touched first, so the pages are real and not the zero page.
    let buf: Vec<u64> = (0..words as u64).collect();
    let mut best = 0f64;
    let mut sink = 0u64;
    for _ in 0..passes.max(1) {
        let t = Instant::now();
        let mut acc = [0u64; 8];
        for chunk in buf.chunks_exact(8) {
            for (a, x) in acc.iter_mut().zip(chunk) {
                *a = a.wrapping_add(*x);
            }
        }
        sink = sink.wrapping_add(acc.iter().fold(0u64, |s, a| s.wrapping_add(*a)));
        best = best.max((words * 8) as f64 / t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    best
}

/// The median (the upper one of an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use scalpel_engine::{Kernels, ModelSource, Precision};

    /// The text handed to llama.cpp tokenizes back to the benchmark's token
    /// count with the model's own tokenizer (the cycled ids, decoded, would
    /// give 62 of 64).
    #[test]
    fn prompt_text_tokenizes_back_to_n_tokens() {
        let Some(path) = scalpel_testkit::default_model_path() else { return };
        let bytes = std::fs::read(&path).unwrap();
        let m = Model::load_with("smollm2", ModelSource::Gguf(&bytes), Precision::Quantized, Kernels::Scalpel).unwrap();
        for n in [1, 5, 64, 200] {
            let text = prompt_text(&m, n).unwrap();
            assert_eq!(m.tokenizer().encode(&text).unwrap().len(), n, "{n} tokens: {text:?}");
        }
        let cycled = m.tokenizer().decode(&prompt(&m, 64, 0).unwrap());
        assert!(m.tokenizer().encode(&cycled).unwrap().len() < 64);
    }

    /// `measure_rounds` refuses 0 rounds with a message, and otherwise
    /// leaves the model's state as it found it: a greedy continuation after
    /// it (warm-up and timed runs each keep their own cache) is the one
    /// before it.
    #[test]
    fn measure_rounds_refuses_zero_and_leaves_the_model_as_it_was() {
        let Some(path) = scalpel_testkit::default_model_path() else { return };
        let bytes = std::fs::read(&path).unwrap();
        let m = Model::load_with("smollm2", ModelSource::Gguf(&bytes), Precision::Quantized, Kernels::Scalpel).unwrap();
        let p = prompt(&m, 8, 4).unwrap();
        let greedy = |m: &Model| {
            let mut cache = KvCache::new(&m.config);
            let logits = m.forward(&m.ids_tensor(&p).unwrap(), Some(&mut cache), None, Logits::Last).unwrap();
            argmax(&logits.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let before = greedy(&m);
        let err = measure_rounds(&m, &p, 4, 0).unwrap_err().to_string();
        assert!(err.contains("at least 1 round"), "{err}");
        let s = measure_rounds(&m, &p, 4, 2).unwrap();
        assert!(s.prefill.is_finite() && s.prefill > 0.0 && s.decode.is_finite() && s.decode > 0.0, "{s:?}");
        assert_eq!(greedy(&m), before);
    }
}
