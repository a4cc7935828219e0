//! Speed, measured one way for `scalpel bench` and the page's benchmark:
//! [`SEED_TEXT`] cycled to the prompt length, one prefill forward pass, then
//! greedy KV-cached decode steps.

use scalpel_engine::{argmax, kernel_threads, on_one_thread, Error, Hook, KvCache, Logits, Model, Result, Tensor};
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

/// The greedy next token of a pass's last-position logits.
fn greedy_next(logits: Tensor) -> Result<u32> {
    Ok(argmax(&logits.flatten_all()?.to_vec1::<f32>()?))
}

/// Prefill `prompt`, then `decode` greedy steps, with `hook` (if any) on every pass.
pub fn measure(model: &Model, prompt: &[u32], decode: usize, mut hook: Option<&mut dyn Hook>) -> Result<Speeds> {
    let t0 = Instant::now();
    let mut cache = KvCache::new(&model.config);
    let mut token = greedy_next(model.forward(&model.ids_tensor(prompt)?, Some(&mut cache), hook.as_deref_mut(), Logits::Last)?)?;
    let prefill = prompt.len() as f64 / t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..decode {
        token = greedy_next(model.forward(&model.ids_tensor(&[token])?, Some(&mut cache), hook.as_deref_mut(), Logits::Last)?)?;
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

/// Decode steps per window of [`thread_gain`].
pub const GAIN_WINDOW: usize = 8;

/// What the kernels' threads add to one thread's speed, from [`thread_gain`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThreadGain {
    /// The kernels' threads on the "all" side.
    pub threads: usize,
    /// Medians over pairs of (all threads' tok/s ÷ one thread's).
    pub prefill: f64,
    pub decode: f64,
    /// Each side's median tok/s: (one thread, all threads).
    pub prefill_tok_s: (f64, f64),
    pub decode_tok_s: (f64, f64),
    /// Pairs measured.
    pub prefill_pairs: usize,
    pub decode_pairs: usize,
}

/// The kernels' threads against the calling thread alone, in one run:
/// `runs` + 1 greedy runs of `prompt` and `decode` steps (the first not
/// counted, as in [`measure_rounds`]), each run's prefill and each window
/// of [`GAIN_WINDOW`] decode steps on all the threads or on one
/// ([`on_one_thread`]), the two sides alternating: runs in pairs for
/// prefill, windows in pairs for decode, and which side goes first in a
/// pair alternates from run to run, so neither always has the shorter
/// cache.
///
/// Why alternate in one run: on this project's shared 2-core VM, a decode
/// step's products on 2 threads took 5.4 to 11 ms from one second to the
/// next in the same page, while one thread stayed within a few percent (two
/// threads reading weights from memory share a bandwidth the VM gives in
/// varying amounts), so timing each thread count in its own page mostly
/// measured when it ran (docs/kernels.md, "Threads").
///
/// Threads give the same bits, so every run must produce the same tokens:
/// an error names the first that does not. `keep_going` is asked between
/// windows; false ends with [`Error::Cancelled`].
pub fn thread_gain(model: &Model, prompt: &[u32], decode: usize, runs: usize, keep_going: &dyn Fn() -> bool) -> Result<ThreadGain> {
    let threads = kernel_threads();
    if threads < 2 {
        return Err(Error::input("the kernels run on 1 thread here: there is nothing to compare with 1 thread"));
    }
    if runs < 2 || runs % 2 == 1 {
        return Err(Error::input(format!("the thread comparison needs an even number of runs, at least 2 (got {runs})")));
    }
    if decode < 2 * GAIN_WINDOW {
        return Err(Error::input(format!("the thread comparison needs at least {} decode tokens (got {decode})", 2 * GAIN_WINDOW)));
    }
    let windows = decode / GAIN_WINDOW / 2 * 2;
    // Seconds `f` took, on all the threads or on this one alone.
    fn timed<R: Send>(alone: bool, f: impl FnOnce() -> R + Send) -> (R, f64) {
        let t = Instant::now();
        let r = if alone { on_one_thread(f) } else { f() };
        (r, t.elapsed().as_secs_f64())
    }
    let (mut prefills, mut decodes) = (Vec::new(), Vec::new()); // (alone, tok/s)
    let mut first: Option<Vec<u32>> = None;
    for run in 0..=runs {
        let mut cache = KvCache::new(&model.config);
        let alone = run % 2 == 1;
        let (logits, secs) = timed(alone, || model.forward(&model.ids_tensor(prompt)?, Some(&mut cache), None, Logits::Last));
        let mut token = greedy_next(logits?)?;
        let mut tokens = vec![token];
        prefills.push((alone, prompt.len() as f64 / secs));
        for w in 0..windows {
            if !keep_going() {
                return Err(Error::Cancelled);
            }
            let alone = (w + run) % 2 == 1;
            let (steps, secs) = timed(alone, || {
                (0..GAIN_WINDOW)
                    .map(|_| {
                        token = greedy_next(model.forward(&model.ids_tensor(&[token])?, Some(&mut cache), None, Logits::Last)?)?;
                        Ok(token)
                    })
                    .collect::<Result<Vec<u32>>>()
            });
            tokens.extend(steps?);
            decodes.push((alone, GAIN_WINDOW as f64 / secs));
        }
        match &first {
            None => first = Some(tokens),
            Some(want) => {
                if let Some(i) = want.iter().zip(&tokens).position(|(a, b)| a != b) {
                    return Err(Error::input(format!(
                        "run {run} of the thread comparison generated another token than the first run at step {i} ({} against {}): threads must give the same bits (a bug)",
                        tokens[i], want[i]
                    )));
                }
            }
        }
    }
    // Runs 1.. and their windows, in pairs (the warm-up run left out).
    let gain = |xs: &[(bool, f64)]| {
        let ratios = xs.chunks_exact(2).map(|p| if p[0].0 { p[1].1 / p[0].1 } else { p[0].1 / p[1].1 }).collect::<Vec<_>>();
        let side = |alone: bool| median(xs.iter().filter(|x| x.0 == alone).map(|x| x.1).collect());
        (median(ratios), (side(true), side(false)), xs.len() / 2)
    };
    let (prefill, prefill_tok_s, prefill_pairs) = gain(&prefills[1..]);
    let (decode, decode_tok_s, decode_pairs) = gain(&decodes[windows..]);
    Ok(ThreadGain { threads, prefill, decode, prefill_tok_s, decode_tok_s, prefill_pairs, decode_pairs })
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

    /// The default model, quantized with Scalpel's kernels (None where it is not installed).
    fn smollm2() -> Option<Model> {
        let bytes = std::fs::read(scalpel_testkit::default_model_path()?).unwrap();
        Some(Model::load_with("smollm2", ModelSource::Gguf(&bytes), Precision::Quantized, Kernels::Scalpel).unwrap())
    }

    /// The text handed to llama.cpp tokenizes back to the benchmark's token
    /// count with the model's own tokenizer (the cycled ids, decoded, would
    /// give 62 of 64).
    #[test]
    fn prompt_text_tokenizes_back_to_n_tokens() {
        let Some(m) = smollm2() else { return };
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
        let Some(m) = smollm2() else { return };
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

    /// `thread_gain` on 2 threads: both sides measured, in pairs (1 of
    /// prefill, 2 of decode from 2 runs of 2 windows), the same tokens in
    /// every run (else it errs); bad settings and a stop get their
    /// messages. Without the `threads` feature (this crate tested alone)
    /// there is one thread, and it says there is nothing to compare.
    #[test]
    fn thread_gain_compares_the_threads_with_one() {
        let Some(m) = smollm2() else { return };
        let p = prompt(&m, 8, 16).unwrap();
        rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(|| {
            if kernel_threads() == 1 {
                let err = thread_gain(&m, &p, 16, 2, &|| true).unwrap_err().to_string();
                assert!(err.contains("nothing to compare"), "{err}");
                return;
            }
            let g = thread_gain(&m, &p, 16, 2, &|| true).unwrap();
            assert_eq!((g.threads, g.prefill_pairs, g.decode_pairs), (2, 1, 2), "{g:?}");
            for x in [g.prefill, g.decode, g.prefill_tok_s.0, g.prefill_tok_s.1, g.decode_tok_s.0, g.decode_tok_s.1] {
                assert!(x.is_finite() && x > 0.0, "{g:?}");
            }
            for (runs, decode, want) in [(3, 16, "even number of runs"), (0, 16, "at least 2"), (2, 15, "at least 16 decode tokens")] {
                let err = thread_gain(&m, &p, decode, runs, &|| true).unwrap_err().to_string();
                assert!(err.contains(want), "{runs} runs, {decode} tokens: {err}");
            }
            assert!(matches!(thread_gain(&m, &p, 16, 2, &|| false), Err(Error::Cancelled)));
        });
    }
}
