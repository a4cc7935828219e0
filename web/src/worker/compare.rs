//! A comparison: baseline and intervened generation from the same prompt
//! and sampling, streamed, then each scored by one forward pass over the
//! prompt and the output under the same interventions. It runs on the CPU
//! engine or on the WebGPU backend; everything but the two generations (the document,
//! the baseline cache, the streaming, the scoring, the report) is shared.

use super::model::{encode, with_model};
use super::{gpu, post, stop_requested};
use crate::js::now_ms;
use crate::protocol::{Comparison, GenerateOptions, ItemReport, Lane, LaneResult, Prompt, Response};
use scalpel_engine::{Logits, Model, Tokenizer};
use scalpel_experiments::readouts::top_probs;
use scalpel_interventions::run::{self, GenEvent};
use scalpel_interventions::{vectors, Document, Interventions, VERSION};
use scalpel_types::Edit;
use std::cell::RefCell;

/// The last baseline lane, reused while backend, prompt and sampling stay
/// the same (only the document changes as the user edits the stack).
struct Baseline {
    backend: String,
    ids: Vec<u32>,
    sampling: GenerateOptions,
    lane: LaneResult,
}

thread_local! {
    static BASELINE: RefCell<Option<Baseline>> = const { RefCell::new(None) };
}

/// The model, its kernels or the GPU backend changed.
pub fn forget_baseline() {
    BASELINE.with(|b| *b.borrow_mut() = None);
}

/// The document compiled for this prompt length (vectors and SAE latents
/// resolved); None when it has no enabled intervention.
pub fn compile(m: &Model, doc: &str, prompt_len: usize) -> Result<Option<Interventions>, String> {
    if doc.trim().is_empty() {
        return Ok(None);
    }
    let what = |e: String| format!("interventions: {e}");
    let d = scalpel_interventions::parse(doc).map_err(what)?;
    if !d.interventions.iter().any(|i| i.enabled) {
        return Ok(None);
    }
    let res = vectors::Resources { saes: super::features::saes(), read_file: None };
    let (d, saes) = vectors::resolve(m, &d, &res).map_err(what)?;
    Interventions::compile_until(m, &d, prompt_len, &saes, &stop_requested)
        .map(Some)
        .map_err(|e| if e == scalpel_interventions::STOPPED { e } else { what(e) })
}

fn no_interventions(m: &Model, prompt_len: usize) -> Result<Interventions, String> {
    Interventions::compile(m, &Document { version: VERSION, interventions: vec![] }, prompt_len).map_err(|e| e.to_string())
}

/// Where the two generations run.
enum Backend {
    Cpu,
    /// The document lowered to in-place GPU edits.
    Gpu(Vec<Edit>),
}

/// Runs a comparison and posts `Compared` (or `Cancelled`). On WebGPU when
/// asked and possible; otherwise on the CPU engine, saying why in the
/// warnings.
pub async fn compare(prompt: &Prompt, sampling: &GenerateOptions, doc: &str, top_k: u32, gpu: bool) -> Result<(), String> {
    sampling.validate()?;
    // Compile first: a bad document is reported before any generation.
    let (ids, tok, iv, mut warnings, backend) = with_model(|m| {
        let ids = encode(m, prompt)?;
        super::model::check_fits(m, ids.len(), sampling.max_new_tokens)?;
        let iv = compile(m, doc, ids.len())?;
        let mut notes = Vec::new();
        let backend = match (gpu, gpu::started()) {
            (false, _) => Backend::Cpu,
            (true, false) => {
                notes.push("ran on the CPU engine: the WebGPU backend is not started".to_string());
                Backend::Cpu
            }
            (true, true) => match iv.as_ref().map(|iv| iv.lower(m)).transpose() {
                Ok(edits) => Backend::Gpu(edits.unwrap_or_default()),
                Err(why) => {
                    notes.push(format!("ran on the CPU engine, not WebGPU: {why}"));
                    Backend::Cpu
                }
            },
        };
        Ok((ids, m.tokenizer().clone(), iv, notes, backend))
    })?;
    let label = match &backend {
        Backend::Cpu => with_model(|m| Ok(super::model::backend(m)))?,
        Backend::Gpu(_) => gpu::label()?,
    };
    let cached = BASELINE.with(|b| match &*b.borrow() {
        Some(b) if b.backend == label && b.ids == ids && b.sampling == *sampling => Some(LaneResult { reused: true, ..b.lane.clone() }),
        _ => None,
    });
    let baseline = match cached {
        Some(lane) => lane,
        None => {
            let Some((lane, _)) = run_lane(&backend, &tok, &ids, sampling, None, Lane::Baseline, top_k).await? else {
                post(&Response::Cancelled);
                return Ok(());
            };
            let b = Baseline { backend: label.clone(), ids: ids.clone(), sampling: sampling.clone(), lane: lane.clone() };
            BASELINE.with(|slot| *slot.borrow_mut() = Some(b));
            lane
        }
    };
    let (intervened, report) = match iv {
        None => (None, vec![]),
        Some(mut iv) => {
            let Some((lane, (report, notes))) = run_lane(&backend, &tok, &ids, sampling, Some(&mut iv), Lane::Intervened, top_k).await? else {
                post(&Response::Cancelled);
                return Ok(());
            };
            warnings.extend(notes);
            (Some(lane), report)
        }
    };
    warnings.dedup();
    let prompt_tokens = tok.token_strings(&ids);
    post(&Response::Compared(Box::new(Comparison { prompt_tokens, baseline, intervened, report, warnings, backend: label })));
    Ok(())
}

/// One lane on `backend`: generated, streamed, scored, with the document's
/// report and warnings (what each item did while generating; empty for the
/// baseline). None if stopped.
async fn run_lane(
    backend: &Backend,
    tok: &Tokenizer,
    ids: &[u32],
    sampling: &GenerateOptions,
    iv: Option<&mut Interventions>,
    lane: Lane,
    top_k: u32,
) -> Result<Option<(LaneResult, Report)>, String> {
    let mut stream = Stream::new(tok, lane);
    let scored = match backend {
        Backend::Cpu => with_model(|m| cpu_lane(m, ids, sampling, iv, &mut stream))?,
        Backend::Gpu(edits) => {
            let edits: &[Edit] = if iv.is_some() { edits } else { &[] };
            gpu::lane(ids, sampling, edits, &mut stream).await?.map(|(rows, calls)| {
                let report = iv.map(|iv| {
                    for call in calls {
                        iv.count_applications(edits, call);
                    }
                    (iv.report(), iv.run_warnings())
                });
                (rows, report.unwrap_or_default())
            })
        }
    };
    Ok(scored.map(|(rows, report)| (stream.finish(&rows, top_k), report)))
}

/// What the document did in a lane: each item's report, and warnings.
type Report = (Vec<ItemReport>, Vec<String>);

/// A lane's logits rows (`rows[k]` predicted output token `k`) and its report.
type Scored = (Vec<Vec<f32>>, Report);

/// Generates under `iv` (none: the baseline), then scores prompt + output
/// under the same document: the logits row before each generated token,
/// and the report of the generation.
fn cpu_lane(
    m: &mut Model,
    ids: &[u32],
    sampling: &GenerateOptions,
    iv: Option<&mut Interventions>,
    stream: &mut Stream,
) -> Result<Option<Scored>, String> {
    let report_wanted = iv.is_some();
    let mut none;
    let iv = match iv {
        Some(iv) => iv,
        None => {
            none = no_interventions(m, ids.len())?;
            &mut none
        }
    };
    run::generate(m, ids, sampling, iv, &mut |ev| stream.event(ev)).map_err(|e| e.to_string())?;
    if stream.stopped {
        return Ok(None);
    }
    // The report counts the generation's applications; scoring starts the
    // compiled document afresh.
    let report = if report_wanted { (iv.report(), iv.run_warnings()) } else { Default::default() };
    iv.reset();
    let full = stream.full(ids, m.config.n_ctx);
    // Only the rows shown: the one after the prompt and one per output token.
    let logits = run::logit_rows(m, &full, iv, Logits::From(ids.len() - 1)).map_err(|e| e.to_string())?;
    let rows: Vec<Vec<f32>> = logits.to_vec2().map_err(|e| e.to_string())?;
    Ok(Some((rows, report)))
}

/// A lane as it streams: the tokens so far (a conditional backtrack removes
/// some; an `insert` adds forced ones), posted as `LaneText` after each
/// event, and its timing.
pub struct Stream<'a> {
    tok: &'a Tokenizer,
    lane: Lane,
    pub ids: Vec<u32>,
    inserted: Vec<bool>,
    backtracked: u32,
    sampled: usize,
    clock: TokenClock,
    pub stopped: bool,
}

impl<'a> Stream<'a> {
    fn new(tok: &'a Tokenizer, lane: Lane) -> Self {
        Stream { tok, lane, ids: vec![], inserted: vec![], backtracked: 0, sampled: 0, clock: TokenClock::start(), stopped: false }
    }

    /// Takes one generation event; false when the user asked to stop.
    pub fn event(&mut self, ev: &GenEvent) -> bool {
        match ev {
            GenEvent::Token { id } => {
                self.ids.push(*id);
                self.inserted.push(false);
                self.sampled += 1;
            }
            GenEvent::Inserted { ids, .. } => {
                self.ids.extend(ids);
                self.inserted.extend(ids.iter().map(|_| true));
            }
            GenEvent::Backtrack { removed, .. } => {
                let keep = self.ids.len().saturating_sub(*removed);
                self.ids.truncate(keep);
                self.inserted.truncate(keep);
                self.backtracked += *removed as u32;
            }
        }
        let tok_s = self.clock.tick(self.sampled);
        post(&Response::LaneText { lane: self.lane, ids: self.ids.clone(), text: self.tok.decode(&self.ids), tok_s });
        self.stopped = stop_requested();
        !self.stopped
    }

    pub fn eos_ids(&self) -> Vec<u32> {
        self.tok.eos_ids.clone()
    }

    /// Prompt + output, cut to the context.
    pub fn full(&self, prompt: &[u32], n_ctx: usize) -> Vec<u32> {
        prompt.iter().chain(&self.ids).copied().take(n_ctx).collect()
    }

    /// The lane scored from `rows` (`rows[k]` predicted output token `k`;
    /// row 0 is right after the prompt).
    fn finish(self, rows: &[Vec<f32>], top_k: u32) -> LaneResult {
        let (first_token_ms, decode_tok_s) = self.clock.finish(self.sampled);
        let tok = self.tok;
        let (mut pieces, mut probs, mut alternatives) = (vec![], vec![], vec![]);
        let mut prev = String::new();
        for (k, (&id, row)) in self.ids.iter().zip(rows).enumerate() {
            let lse = scalpel_engine::logsumexp(row);
            probs.push((row[id as usize] - lse).exp());
            alternatives.push(top_probs(tok, row, 5));
            // Decoded with its prefix, so multi-byte characters are not split.
            let text = tok.decode(&self.ids[..=k]);
            pieces.push(text.strip_prefix(prev.as_str()).map(str::to_string).unwrap_or_else(|| tok.decode(&[id])));
            prev = text;
        }
        let next = rows.first().map(|row| top_probs(tok, row, top_k.clamp(1, 50) as usize)).unwrap_or_default();
        LaneResult {
            text: tok.decode(&self.ids),
            ids: self.ids,
            pieces,
            probs,
            alternatives,
            inserted: self.inserted,
            next,
            backtracked: self.backtracked,
            first_token_ms,
            decode_tok_s,
            reused: false,
        }
    }
}

/// The timing of a streamed generation: time to the first token, and the
/// decode speed over the tokens after it.
struct TokenClock {
    t0: f64,
    first: Option<f64>,
}

impl TokenClock {
    fn start() -> Self {
        TokenClock { t0: now_ms(), first: None }
    }

    /// Records the `n`th sampled token; the decode speed so far.
    fn tick(&mut self, n: usize) -> f64 {
        let t = now_ms();
        let first = *self.first.get_or_insert(t);
        decode_speed(n, t - first)
    }

    /// (time to the first token in ms, decode tokens/s) after `n` sampled tokens.
    fn finish(&self, n: usize) -> (f64, f64) {
        match self.first {
            Some(first) => (first - self.t0, decode_speed(n, now_ms() - first)),
            None => (0.0, 0.0),
        }
    }
}

fn decode_speed(n: usize, ms_since_first: f64) -> f64 {
    if n > 1 {
        (n - 1) as f64 / (ms_since_first / 1e3)
    } else {
        0.0
    }
}
