//! A llama-family model on the GPU: weights dequantized to f32 at load (the
//! engine's `f32` precision), a KV cache, prefill and decode, TransformerLens
//! hook points that can be read (copying only that tensor back) or edited on
//! the GPU, and greedy or seeded sampled decoding with a 4-byte readback per
//! token.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use candle_core::Device;
use scalpel_engine::gguf::Gguf;
use scalpel_engine::{Config, GenerateOptions, HookPoint, Sampler, Site};

use crate::device::{params, Gpu, Kernel};
use scalpel_types::{Edit, EditOp};
use crate::{GpuError, Result};

/// Sizes chosen at load.
#[derive(Clone, Debug)]
pub struct GpuModelOptions {
    /// KV-cache capacity in positions (clamped to the model's context).
    pub max_seq: usize,
    /// Keep Q8_0 and Q4_1 matrices quantized on the GPU (repacked into
    /// 4-byte words, dequantized on the fly by `matvec_q` / `embed_q`)
    /// instead of dequantizing everything to f32 at load. Off by default.
    pub quantized: bool,
}

impl Default for GpuModelOptions {
    fn default() -> Self {
        GpuModelOptions { max_seq: 1024, quantized: false }
    }
}

/// Which logits a forward call copies back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogitsOut {
    /// None (e.g. decode with GPU argmax).
    None,
    /// The last position's row, `[1, vocab]`.
    #[default]
    Last,
    /// Every new position, `[t, vocab]`.
    All,
}

/// An activation kept on the GPU (from [`ForwardRequest::keep`]), to patch
/// into a later run with [`EditOp::Patch`].
#[derive(Clone, Debug)]
pub struct GpuTensor {
    pub buffer: wgpu::Buffer,
    /// Absolute position of row 0.
    pub start: usize,
    pub rows: usize,
    pub width: usize,
}

/// A hook edit applied on the GPU, in place, at its hook point: the
/// lowered form of an intervention (`scalpel_types::Edit`), its patch source
/// on the GPU (kept from a run, or uploaded by [`upload_edits`](crate::upload_edits)).
pub type GpuEdit = Edit<GpuTensor>;

/// Sampling of one next token on the GPU (`sample.wgsl`), with the CPU
/// engine's semantics (`scalpel_engine::Sampler`): temperature, then top-k,
/// then top-p, then the first token whose cumulative probability exceeds
/// `uniform` (a number in [0, 1) from `Sampler::next_uniform`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleStep {
    /// > 0 (0 is greedy: use `argmax`).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub uniform: f32,
}

/// What one forward call computes and copies back.
#[derive(Clone, Debug, Default)]
pub struct ForwardRequest {
    pub logits: LogitsOut,
    /// Greedy next token on the GPU (lowest id on ties), 4 bytes back.
    pub argmax: bool,
    /// A sampled next token on the GPU instead of the greedy one, 4 bytes back.
    pub sample: Option<SampleStep>,
    /// Hook points copied back to the CPU.
    pub read: Vec<HookPoint>,
    /// Hook points copied into new GPU buffers (no readback).
    pub keep: Vec<HookPoint>,
    pub edits: Vec<GpuEdit>,
}

/// A generation on the GPU: see [`GpuModel::generate`].
#[derive(Clone, Debug)]
pub struct GenerateRequest<'a> {
    /// Length, temperature, top-k, top-p and seed (`stop_at_eos` is the
    /// caller's: the GPU model has no tokenizer, so pass its ids in `stop`).
    pub opts: &'a GenerateOptions,
    /// Stop after any of these ids (kept in the output, as on the CPU).
    pub stop: &'a [u32],
    pub edits: &'a [GpuEdit],
    /// Decode steps submitted per readback (1..=64).
    pub ahead: usize,
}

#[derive(Clone, Debug, Default)]
pub struct GpuGeneration {
    pub ids: Vec<u32>,
    /// The absolute positions each forward call ran (the prompt, then one
    /// per kept decode step), to count which edits applied.
    pub calls: Vec<Range<usize>>,
}

/// A hook value read back: `[t, d_model]`, `[t, d_mlp]` or for `attn.hook_z`
/// `[t, n_heads, d_head]` (no batch axis).
#[derive(Clone, Debug)]
pub struct HookValue {
    pub point: HookPoint,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

#[derive(Debug, Default)]
pub struct ForwardOutput {
    /// Row-major `[rows, vocab]`.
    pub logits: Option<Vec<f32>>,
    pub next_token: Option<u32>,
    pub hooks: Vec<HookValue>,
    pub kept: Vec<(HookPoint, GpuTensor)>,
}

/// A weight matrix `[out, in]` on the GPU: f32, or repacked blocks of a
/// quantized format (`fmt`, see `quant.rs`).
struct Mat {
    buf: wgpu::Buffer,
    fmt: Option<u32>,
}

struct LayerW {
    ln1: wgpu::Buffer,
    wqkv: Mat,
    wo: Mat,
    ln2: wgpu::Buffer,
    wgu: Mat,
    wdown: Mat,
    kc: wgpu::Buffer,
    vc: wgpu::Buffer,
}

struct Weights {
    embed: Mat,
    unembed: Option<Mat>,
    ln_f: wgpu::Buffer,
    cos: wgpu::Buffer,
    sin: wgpu::Buffer,
    dummy: wgpu::Buffer,
    layers: Vec<LayerW>,
}

/// Activation buffers for up to `cap` new tokens per call.
struct Work {
    cap: usize,
    logit_rows: usize,
    ids: wgpu::Buffer,
    x: wgpu::Buffer,
    xn: wgpu::Buffer,
    qkv: wgpu::Buffer,
    q: wgpu::Buffer,
    z: wgpu::Buffer,
    attn_out: wgpu::Buffer,
    mid: wgpu::Buffer,
    gu: wgpu::Buffer,
    h: wgpu::Buffer,
    mlp_out: wgpu::Buffer,
    xf: wgpu::Buffer,
    logits: wgpu::Buffer,
    /// Sampling scratch: exp((l - max) / T) of one row.
    probs: wgpu::Buffer,
    /// The sampler's uniform numbers, by absolute position % RND_RING.
    rnd: wgpu::Buffer,
}

/// Sampled steps that can be chained before the host writes new numbers.
const RND_RING: usize = 64;

#[derive(Clone, Copy)]
enum Wg {
    /// (x, t, 1): one row of workgroups per new token.
    Rows(u32),
    /// A linear layer with n outputs: tiled matmul, or matvec when t == 1.
    Linear(u32),
    /// A quantized linear layer with n outputs: `matmul_q`, or `matvec_q`
    /// when t == 1.
    QLinear(u32),
    /// `matvec_q` on x row 0 only (z = 1), n outputs.
    QVec(u32),
    /// Always matvec (one input row), n outputs.
    Vec(u32),
    /// (x, 1, 1).
    Fixed(u32),
}

struct Op {
    k: Kernel,
    bg: wgpu::BindGroup,
    wg: Wg,
}

enum Item {
    Op(Op),
    Site(HookPoint),
}

struct Plan {
    body: Vec<Item>,
    tail_last: Vec<Item>,
    tail_all: Vec<Item>,
    argmax_last: Op,
    argmax_all: Op,
}

enum Cmd<'a> {
    D(&'a wgpu::ComputePipeline, &'a wgpu::BindGroup, [u32; 3]),
    C(&'a wgpu::Buffer, &'a wgpu::Buffer, u64),
}

pub struct GpuModel {
    pub gpu: Arc<Gpu>,
    pub config: Config,
    pub max_seq: usize,
    len: usize,
    w: Weights,
    step: wgpu::Buffer,
    work: Work,
    plan: Plan,
}

/// Where a hook's values live: columns `off..off + width` of rows `row`
/// floats wide (q, k and v share the fused qkv rows; the gate and up
/// pre-activations share the gate/up rows).
#[derive(Clone, Copy)]
struct SiteView<'a> {
    buf: &'a wgpu::Buffer,
    row: usize,
    off: usize,
    width: usize,
}

fn f32s(x: f32) -> u32 {
    x.to_bits()
}

impl GpuModel {
    /// Loads a llama-family GGUF (the engine's parser and config), every
    /// tensor dequantized to f32 with candle (or kept quantized, see
    /// [`GpuModelOptions::quantized`]). GGUF stores each head's Q/K rows
    /// permuted for interleaved RoPE; they are put back in Hugging Face order
    /// (RoPE on pairs i, i + d_head/2), so `attn.hook_q`/`hook_k`/`hook_rot_q`
    /// hold the values the engine shows, with no permutation per read or edit.
    pub fn from_gguf(gpu: Arc<Gpu>, name: &str, bytes: &[u8], opts: &GpuModelOptions) -> Result<GpuModel> {
        let g = Gguf::parse(name, bytes)?;
        let cfg = Config::from_gguf(&g)?;
        let (d, m, v, dh) = (cfg.d_model, cfg.d_mlp, cfg.d_vocab, cfg.d_head);
        let nkv = cfg.n_kv_heads;
        let kv = nkv * dh;
        if d % 4 != 0 || m % 4 != 0 || dh > 256 {
            return Err(GpuError::Input(format!(
                "{name}: the GPU kernels need d_model and d_mlp divisible by 4 and d_head <= 256 (got {d}, {m}, {dh})"
            )));
        }
        let max_seq = opts.max_seq.clamp(1, cfg.n_ctx);
        let deq = |t: &str, want: &[usize]| -> Result<Vec<f32>> {
            let q = g.qtensor(t)?;
            if q.shape().dims() != want {
                return Err(GpuError::Input(format!("{name}: tensor '{t}' has shape {:?}, expected {want:?}", q.shape().dims())));
            }
            Ok(q.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?)
        };
        // A matrix made of the rows of `parts` (fused QKV, gate/up): kept
        // quantized when asked for and every part has the same Q8_0/Q4_1
        // type and whole blocks per row; f32 otherwise.
        // The stored row behind Hugging Face row r of a Q/K matrix (within
        // each head, stored rows 2i, 2i+1 are HF rows i, i + d_head/2), as
        // the engine's `qk_perm`.
        let half = dh / 2;
        let stored_row = |r: usize| (r / dh) * dh + 2 * (r % dh % half) + (r % dh) / half;
        let hf_order = |rows: usize, row_len: usize, data: Vec<u32>| -> Vec<u32> {
            let mut out = Vec::with_capacity(data.len());
            for r in 0..rows {
                let s = stored_row(r);
                out.extend_from_slice(&data[s * row_len..(s + 1) * row_len]);
            }
            out
        };
        // Parts: (tensor, [rows, cols], Q/K rows to put in HF order).
        let mat = |label: &str, parts: &[(String, [usize; 2], bool)]| -> Result<Mat> {
            let infos = parts
                .iter()
                .map(|(t, _, _)| g.info(t).ok_or_else(|| GpuError::Input(format!("{name}: missing tensor '{t}'"))))
                .collect::<Result<Vec<_>>>()?;
            let fmt = crate::quant::gpu_format(infos[0].dtype);
            let quant = opts.quantized
                && fmt.is_some()
                && infos.iter().zip(parts).all(|(i, (_, want, _))| {
                    i.dtype == infos[0].dtype && i.shape == want[..] && want[1] % 32 == 0
                });
            if quant {
                let fmt = fmt.expect("checked");
                let mut words = Vec::new();
                for (i, (_, [rows, cols], hf)) in infos.iter().zip(parts) {
                    let w = crate::quant::repack(fmt, g.raw(i));
                    let row_len = cols / 32 * crate::quant::block_words(fmt);
                    words.extend(if *hf { hf_order(*rows, row_len, w) } else { w });
                }
                Ok(Mat { buf: gpu.storage(label, bytemuck::cast_slice(&words)), fmt: Some(fmt) })
            } else {
                let mut all = Vec::new();
                for (t, want, hf) in parts {
                    let w = deq(t, want)?;
                    if *hf {
                        let bits = hf_order(want[0], want[1], w.iter().map(|x| x.to_bits()).collect());
                        all.extend(bits.into_iter().map(f32::from_bits));
                    } else {
                        all.extend(w);
                    }
                }
                Ok(Mat { buf: gpu.storage_f32(label, &all), fmt: None })
            }
        };
        let embed = mat("token_embd", &[("token_embd.weight".into(), [v, d], false)])?;
        let unembed = match g.info("output.weight") {
            Some(_) => Some(mat("output", &[("output.weight".into(), [v, d], false)])?),
            None => None,
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        let cache_bytes = (nkv * max_seq * dh * 4) as u64;
        for l in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let wqkv = mat("wqkv", &[(n("attn_q"), [d, d], true), (n("attn_k"), [kv, d], true), (n("attn_v"), [kv, d], false)])?;
            let wgu = mat("wgu", &[(n("ffn_gate"), [m, d], false), (n("ffn_up"), [m, d], false)])?;
            layers.push(LayerW {
                ln1: gpu.storage_f32("attn_norm", &deq(&n("attn_norm"), &[d])?),
                wqkv,
                wo: mat("wo", &[(n("attn_output"), [d, d], false)])?,
                ln2: gpu.storage_f32("ffn_norm", &deq(&n("ffn_norm"), &[d])?),
                wgu,
                wdown: mat("wdown", &[(n("ffn_down"), [d, m], false)])?,
                kc: gpu.storage_zeroed("k cache", cache_bytes),
                vc: gpu.storage_zeroed("v cache", cache_bytes),
            });
        }
        let ln_f = gpu.storage_f32("output_norm", &deq("output_norm.weight", &[d])?);
        // RoPE tables exactly as the engine computes them (f32 on the CPU).
        let theta = cfg.rope_theta;
        let inv_freq: Vec<f32> = (0..dh).step_by(2).map(|i| 1f32 / theta.powf(i as f32 / dh as f32)).collect();
        let (mut cos, mut sin) = (Vec::new(), Vec::new());
        for p in 0..max_seq {
            for &f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let w = Weights {
            embed,
            unembed,
            ln_f,
            cos: gpu.storage_f32("cos", &cos),
            sin: gpu.storage_f32("sin", &sin),
            dummy: gpu.storage_zeroed("dummy", 16),
            layers,
        };
        let step = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("step"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let work = Self::make_work(&gpu, &cfg, 16, 1);
        let plan = Self::make_plan(&gpu, &cfg, max_seq, &w, &work, &step);
        Ok(GpuModel { gpu, config: cfg, max_seq, len: 0, w, step, work, plan })
    }

    /// Positions in the KV cache.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forget positions from `n` on (backtracking); `reset` = `truncate(0)`.
    pub fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }
    pub fn reset(&mut self) {
        self.len = 0;
    }

    fn make_work(gpu: &Gpu, cfg: &Config, cap: usize, logit_rows: usize) -> Work {
        let (d, m, dh) = (cfg.d_model, cfg.d_mlp, cfg.d_head);
        let qkvw = (cfg.n_heads + 2 * cfg.n_kv_heads) * dh;
        let f = |label: &str, n: usize| gpu.storage_zeroed(label, (n * 4) as u64);
        Work {
            cap,
            logit_rows,
            ids: f("ids", cap.max(4)),
            x: f("x", cap * d),
            xn: f("xn", cap * d),
            qkv: f("qkv", cap * qkvw),
            q: f("q", cap * d),
            z: f("z", cap * d),
            attn_out: f("attn_out", cap * d),
            mid: f("mid", cap * d),
            gu: f("gu", cap * 2 * m),
            h: f("h", cap * m),
            mlp_out: f("mlp_out", cap * d),
            xf: f("xf", cap * d),
            logits: f("logits", logit_rows * cfg.d_vocab),
            probs: f("probs", cfg.d_vocab),
            rnd: f("rnd", RND_RING),
        }
    }

    fn make_plan(gpu: &Gpu, cfg: &Config, max_seq: usize, w: &Weights, k: &Work, step: &wgpu::Buffer) -> Plan {
        let (d, m, v, dh) = (cfg.d_model as u32, cfg.d_mlp as u32, cfg.d_vocab as u32, cfg.d_head as u32);
        let (nh, nkv) = (cfg.n_heads as u32, cfg.n_kv_heads as u32);
        let qkvw = (nh + 2 * nkv) * dh;
        let eps = f32s(cfg.norm_eps as f32);
        let op = |kern: Kernel, p: &[u32], bufs: &[&wgpu::Buffer], wg: Wg| -> Op {
            let pb = gpu.uniform(&format!("{kern:?} params"), &params(p));
            Op { k: kern, bg: gpu.bind(kern, step, &pb, bufs), wg }
        };
        let dm = &w.dummy;
        let rows = |n: u32| Wg::Rows(n.div_ceil(256));
        // y[t, n] = x[t, kk] · matᵀ: tiled matmul / matvec for f32,
        // matmul_q / matvec_q for quantized weights (chosen per call by t).
        let lin = |mat: &Mat, n: u32, kk: u32, x: &wgpu::Buffer, y: &wgpu::Buffer| -> Op {
            match mat.fmt {
                None => op(Kernel::Matmul, &[n, kk, 0, 0], &[x, &mat.buf, dm, y], Wg::Linear(n)),
                Some(f) => op(Kernel::MatvecQ, &[n, kk, 0, f], &[x, &mat.buf, dm, y], Wg::QLinear(n)),
            }
        };
        let embed = match w.embed.fmt {
            None => op(Kernel::Embed, &[d], &[&k.ids, &w.embed.buf, &k.x], rows(d)),
            Some(f) => op(Kernel::EmbedQ, &[d, f], &[&k.ids, &w.embed.buf, &k.x], rows(d)),
        };
        let mut body = vec![Item::Op(embed)];
        for (l, lw) in w.layers.iter().enumerate() {
            let s = |site| Item::Site(HookPoint::block(l, site));
            body.push(s(Site::ResidPre));
            body.push(Item::Op(op(Kernel::Norm, &[d, 0, 0, eps], &[&k.x, &lw.ln1, dm, &k.xn], Wg::Rows(1))));
            body.push(s(Site::Ln1Normalized));
            body.push(Item::Op(lin(&lw.wqkv, qkvw, d, &k.xn, &k.qkv)));
            body.push(s(Site::Q));
            body.push(s(Site::K));
            body.push(s(Site::V));
            body.push(Item::Op(op(
                Kernel::RopeKv,
                &[nh, nkv, dh, max_seq as u32],
                &[&k.qkv, &w.cos, &w.sin, &k.q, &lw.kc, &lw.vc],
                Wg::Rows(((nh + 2 * nkv) * dh / 2).div_ceil(64)),
            )));
            body.push(s(Site::RotQ));
            body.push(Item::Op(op(
                Kernel::Attention,
                &[nh, nkv, dh, max_seq as u32, f32s((dh as f32).sqrt())],
                &[&k.q, &lw.kc, &lw.vc, &k.z],
                Wg::Rows(nh),
            )));
            body.push(s(Site::Z));
            body.push(Item::Op(lin(&lw.wo, d, d, &k.z, &k.attn_out)));
            body.push(s(Site::AttnOut));
            body.push(Item::Op(op(Kernel::Add, &[d], &[&k.x, &k.attn_out, &k.mid], rows(d))));
            body.push(s(Site::ResidMid));
            body.push(Item::Op(op(Kernel::Norm, &[d, 0, 0, eps], &[&k.mid, &lw.ln2, dm, &k.xn], Wg::Rows(1))));
            body.push(s(Site::Ln2Normalized));
            body.push(Item::Op(lin(&lw.wgu, 2 * m, d, &k.xn, &k.gu)));
            body.push(s(Site::MlpPre));
            body.push(s(Site::MlpPreLinear));
            body.push(Item::Op(op(Kernel::SiluMul, &[m], &[&k.gu, &k.h], rows(m))));
            body.push(s(Site::MlpPost));
            body.push(Item::Op(lin(&lw.wdown, d, m, &k.h, &k.mlp_out)));
            body.push(s(Site::MlpOut));
            body.push(Item::Op(op(Kernel::Add, &[d], &[&k.mid, &k.mlp_out, &k.x], rows(d))));
            body.push(s(Site::ResidPost));
        }
        let un = w.unembed.as_ref().unwrap_or(&w.embed);
        let lnf = Item::Site(HookPoint::global(Site::LnFinalNormalized));
        let tail_last = vec![
            Item::Op(op(Kernel::Norm, &[d, 1, 0, eps], &[&k.x, &w.ln_f, dm, &k.xf], Wg::Fixed(1))),
            lnf,
            Item::Op(match un.fmt {
                None => op(Kernel::Matmul, &[v, d, 0, 0], &[&k.xf, &un.buf, dm, &k.logits], Wg::Vec(v)),
                Some(f) => op(Kernel::MatvecQ, &[v, d, 0, f], &[&k.xf, &un.buf, dm, &k.logits], Wg::QVec(v)),
            }),
        ];
        let tail_all = vec![
            Item::Op(op(Kernel::Norm, &[d, 0, 0, eps], &[&k.x, &w.ln_f, dm, &k.xf], Wg::Rows(1))),
            Item::Site(HookPoint::global(Site::LnFinalNormalized)),
            Item::Op(lin(un, v, d, &k.xf, &k.logits)),
        ];
        Plan {
            body,
            tail_last,
            tail_all,
            argmax_last: op(Kernel::Argmax, &[v, 0], &[&k.logits, &k.ids], Wg::Fixed(1)),
            argmax_all: op(Kernel::Argmax, &[v, 1], &[&k.logits, &k.ids], Wg::Fixed(1)),
        }
    }

    /// Grows the activation buffers (and rebuilds the bind groups) if needed.
    fn ensure(&mut self, t: usize, logit_rows: usize) {
        if t <= self.work.cap && logit_rows <= self.work.logit_rows {
            return;
        }
        let cap = self.work.cap.max(t.next_power_of_two()).min(self.max_seq);
        let rows = self.work.logit_rows.max(logit_rows);
        self.work = Self::make_work(&self.gpu, &self.config, cap, rows);
        self.plan = Self::make_plan(&self.gpu, &self.config, self.max_seq, &self.w, &self.work, &self.step);
    }

    fn resolve(&self, op: &Op, t: u32) -> (Kernel, [u32; 3]) {
        let maxd = self.gpu.info.max_compute_workgroups_per_dimension.max(1);
        let vec2d = |n: u32| {
            let wgs = n.div_ceil(8);
            if wgs <= maxd {
                [wgs, 1, 1]
            } else {
                [maxd, wgs.div_ceil(maxd), 1]
            }
        };
        match op.wg {
            Wg::Rows(x) => (op.k, [x, t, 1]),
            Wg::Fixed(x) => (op.k, [x, 1, 1]),
            Wg::Vec(n) => (Kernel::Matvec, vec2d(n)),
            Wg::Linear(n) if t == 1 => (Kernel::Matvec, vec2d(n)),
            Wg::Linear(n) => (Kernel::Matmul, [n.div_ceil(64), t.div_ceil(64), 1]),
            Wg::QLinear(n) if t == 1 => (Kernel::MatvecQ, vec2d(n)),
            Wg::QLinear(n) => (Kernel::MatmulQ, [n.div_ceil(64), t.div_ceil(64), 1]),
            Wg::QVec(n) => (op.k, vec2d(n)),
        }
    }

    /// Where the values of a supported hook point live.
    fn site_view(&self, p: HookPoint) -> Option<SiteView<'_>> {
        let cfg = &self.config;
        if let Some(l) = p.layer {
            if l >= cfg.n_layers {
                return None;
            }
        } else if p.site != Site::LnFinalNormalized {
            return None;
        }
        let k = &self.work;
        let (d, m, dh) = (cfg.d_model, cfg.d_mlp, cfg.d_head);
        let (q, kv) = (cfg.n_heads * dh, cfg.n_kv_heads * dh);
        let whole = |buf, width| SiteView { buf, row: width, off: 0, width };
        let part = |buf, row, off, width| SiteView { buf, row, off, width };
        Some(match p.site {
            Site::ResidPre | Site::ResidPost => whole(&k.x, d),
            Site::Ln1Normalized | Site::Ln2Normalized => whole(&k.xn, d),
            Site::Q => part(&k.qkv, q + 2 * kv, 0, q),
            Site::K => part(&k.qkv, q + 2 * kv, q, kv),
            Site::V => part(&k.qkv, q + 2 * kv, q + kv, kv),
            Site::RotQ => whole(&k.q, q),
            Site::Z => whole(&k.z, q),
            Site::AttnOut => whole(&k.attn_out, d),
            Site::ResidMid => whole(&k.mid, d),
            Site::MlpPre => part(&k.gu, 2 * m, 0, m),
            Site::MlpPreLinear => part(&k.gu, 2 * m, m, m),
            Site::MlpPost => whole(&k.h, m),
            Site::MlpOut => whole(&k.mlp_out, d),
            Site::LnFinalNormalized => whole(&k.xf, d),
            _ => return None,
        })
    }

    fn unsupported(&self, p: HookPoint) -> GpuError {
        GpuError::Input(format!(
            "hook point '{}' is not available on the GPU path (supported: blocks.{{0..{}}}.{{{}}}, ln_final.hook_normalized)",
            p.name(),
            self.config.n_layers,
            Site::gpu_readable().iter().map(|s| s.suffix()).collect::<Vec<_>>().join(", ")
        ))
    }

    /// One `edit` dispatch (its own small uniform and bind group) per edit,
    /// grouped by hook point; positions are absolute, so the ops serve every
    /// later call (decode steps) unchanged.
    fn edit_ops(&self, list: &[GpuEdit]) -> Result<HashMap<HookPoint, Vec<Op>>> {
        let gpu = &self.gpu;
        // Edits: one small uniform + source buffer + bind group each.
        let mut edits: HashMap<HookPoint, Vec<Op>> = HashMap::new();
        for e in list {
            let view = self.site_view(e.point).ok_or_else(|| self.unsupported(e.point))?;
            let (target, width) = (view.buf, view.width);
            if e.point.site == Site::LnFinalNormalized {
                return Err(GpuError::Input("ln_final.hook_normalized can be read but not edited on the GPU path".into()));
            }
            let cols = e.cols.clone().unwrap_or(0..width);
            if cols.start >= cols.end || cols.end > width {
                return Err(GpuError::Input(format!("{}: column range {cols:?} is outside 0..{width}", e.point.name())));
            }
            let ncols = cols.len();
            let pos = e.positions.clone().unwrap_or(0..usize::MAX);
            let (mode, alpha, src, src_pos0, src_rows) = match &e.op {
                EditOp::Add { v, alpha } => {
                    if v.len() != ncols {
                        return Err(GpuError::Input(format!("{}: add vector has {} values, expected {ncols}", e.point.name(), v.len())));
                    }
                    (0u32, *alpha, gpu.storage_f32("edit vec", v), 0, 0)
                }
                EditOp::Scale(f) => (1, *f, self.w.dummy.clone(), 0, 0),
                EditOp::Zero => (2, 0.0, self.w.dummy.clone(), 0, 0),
                EditOp::ProjectOut(dir) => {
                    if dir.len() != ncols {
                        return Err(GpuError::Input(format!("{}: direction has {} values, expected {ncols}", e.point.name(), dir.len())));
                    }
                    let n = dir.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
                    if !(n > 0.0 && n.is_finite()) {
                        return Err(GpuError::Input(format!("{}: project_out direction has norm {n}", e.point.name())));
                    }
                    let u: Vec<f32> = dir.iter().map(|x| (*x as f64 / n) as f32).collect();
                    (3, 0.0, gpu.storage_f32("edit dir", &u), 0, 0)
                }
                EditOp::Patch(src) => {
                    // Kept from this site (whole rows) or uploaded (the hook's own width).
                    if src.width != view.row && src.width != width {
                        return Err(GpuError::Input(format!("{}: patch source has width {}, expected {width}", e.point.name(), src.width)));
                    }
                    (4, 0.0, src.buffer.clone(), src.start as u32, src.rows as u32)
                }
            };
            let (src_width, src_off) = match &e.op {
                EditOp::Patch(src) if src.width != view.row => (width, view.off),
                _ => (view.row, 0),
            };
            let p = [
                view.row as u32,
                mode,
                pos.start.min(u32::MAX as usize) as u32,
                pos.end.min(u32::MAX as usize) as u32,
                (view.off + cols.start) as u32,
                (view.off + cols.end) as u32,
                src_pos0,
                src_rows,
                f32s(alpha),
                src_width as u32,
                src_off as u32,
            ];
            let pb = gpu.uniform("edit params", &params(&p));
            let bg = gpu.bind(Kernel::Edit, &self.step, &pb, &[&src, target]);
            edits.entry(e.point).or_default().push(Op { k: Kernel::Edit, bg, wg: Wg::Rows(1) });
        }
        Ok(edits)
    }

    /// The `sample` dispatch for these settings (row 0, or the last of `t`
    /// rows when every row's logits were computed).
    fn sample_op(&self, smp: &SampleStep, all_rows: bool) -> Result<Op> {
        if !(smp.temperature.is_finite() && smp.temperature > 0.0) {
            return Err(GpuError::Input(format!("sampling temperature {} must be a finite number > 0 (0 is greedy: argmax)", smp.temperature)));
        }
        if smp.top_k == Some(0) {
            return Err(GpuError::Input("top_k must be at least 1".into()));
        }
        if let Some(tp) = smp.top_p {
            if !(tp > 0.0 && tp <= 1.0) {
                return Err(GpuError::Input(format!("top_p {tp} must be in (0, 1]")));
            }
        }
        if !(0.0..1.0).contains(&smp.uniform) {
            return Err(GpuError::Input(format!("the sampler's uniform number {} must be in [0, 1)", smp.uniform)));
        }
        let v = self.config.d_vocab;
        let top_k = smp.top_k.map_or(v, |k| k.min(v)) as u32;
        let p = [v as u32, all_rows as u32, f32s(smp.temperature), top_k, f32s(smp.top_p.unwrap_or(1.0))];
        let pb = self.gpu.uniform("sample params", &params(&p));
        let k = &self.work;
        let bg = self.gpu.bind(Kernel::Sample, &self.step, &pb, &[&k.logits, &k.rnd, &k.ids, &k.probs]);
        Ok(Op { k: Kernel::Sample, bg, wg: Wg::Fixed(1) })
    }

    /// Runs `tokens` at positions `len..len + t`, extending the KV cache.
    pub async fn forward(&mut self, tokens: &[u32], req: &ForwardRequest) -> Result<ForwardOutput> {
        self.forward_inner(Some(tokens), tokens.len(), req).await
    }

    async fn forward_inner(&mut self, tokens: Option<&[u32]>, t: usize, req: &ForwardRequest) -> Result<ForwardOutput> {
        if t == 0 {
            return Err(GpuError::Input("empty prompt: there are no tokens to run".into()));
        }
        if let Some(bad) = tokens.and_then(|ts| ts.iter().find(|&&id| id as usize >= self.config.d_vocab)) {
            return Err(GpuError::Input(format!(
                "token id {bad} is out of range: the vocabulary has {} tokens",
                self.config.d_vocab
            )));
        }
        let start = self.len;
        if start + t > self.max_seq {
            return Err(GpuError::Input(format!(
                "{} tokens ({t} new + {start} cached) exceed the GPU KV cache of {} positions",
                start + t,
                self.max_seq
            )));
        }
        let logit_rows = if req.logits == LogitsOut::All { t } else { 1 };
        self.ensure(t, logit_rows);
        let gpu = self.gpu.clone();
        let edits = self.edit_ops(&req.edits)?;
        // Reads and keeps.
        let last_rows = if req.logits == LogitsOut::All { t } else { 1 };
        let rows_of = |p: HookPoint| if p.site == Site::LnFinalNormalized { last_rows } else { t };
        let mut reads: HashMap<HookPoint, Vec<(wgpu::Buffer, u64, bool)>> = HashMap::new();
        for (p, keep) in req.read.iter().map(|p| (p, false)).chain(req.keep.iter().map(|p| (p, true))) {
            let width = self.site_view(*p).ok_or_else(|| self.unsupported(*p))?.row;
            let bytes = (rows_of(*p) * width * 4) as u64;
            let dst = if keep { gpu.storage_zeroed("kept", bytes) } else { gpu.take_staging(bytes) };
            reads.entry(*p).or_default().push((dst, bytes, keep));
        }

        // The command list: dispatches, with copies only where a hook is read.
        let tt = t as u32;
        let mut cmds: Vec<Cmd> = Vec::with_capacity(self.plan.body.len() + 8);
        let tail = if req.logits == LogitsOut::All { &self.plan.tail_all } else { &self.plan.tail_last };
        let want_hooks = !edits.is_empty() || !reads.is_empty();
        for item in self.plan.body.iter().chain(tail) {
            match item {
                Item::Op(op) => {
                    let (k, wg) = self.resolve(op, tt);
                    cmds.push(Cmd::D(gpu.pipeline(k), &op.bg, wg));
                }
                Item::Site(p) if want_hooks => {
                    // blocks.0.hook_resid_pre is also what hook_embed shows.
                    for e in edits.get(p).into_iter().flatten() {
                        let (k, wg) = self.resolve(e, tt);
                        cmds.push(Cmd::D(gpu.pipeline(k), &e.bg, wg));
                    }
                    if let Some(rs) = reads.get(p) {
                        let src = self.site_view(*p).expect("checked").buf;
                        for (dst, bytes, _) in rs {
                            cmds.push(Cmd::C(src, dst, *bytes));
                        }
                    }
                }
                Item::Site(_) => {}
            }
        }
        let argmax = if req.logits == LogitsOut::All { &self.plan.argmax_all } else { &self.plan.argmax_last };
        let sampler = match req.sample {
            Some(smp) => Some(self.sample_op(&smp, req.logits == LogitsOut::All)?),
            None => None,
        };
        if let Some(op) = &sampler {
            cmds.push(Cmd::D(gpu.pipeline(Kernel::Sample), &op.bg, [1, 1, 1]));
        } else if req.argmax {
            cmds.push(Cmd::D(gpu.pipeline(Kernel::Argmax), &argmax.bg, [1, 1, 1]));
        }
        let want_token = req.argmax || sampler.is_some();
        let mut staged: Vec<(wgpu::Buffer, u64)> = Vec::new();
        let logits_bytes = (logit_rows * self.config.d_vocab * 4) as u64;
        let logits_stage = (req.logits != LogitsOut::None).then(|| gpu.take_staging(logits_bytes));
        if let Some(s) = &logits_stage {
            cmds.push(Cmd::C(&self.work.logits, s, logits_bytes));
        }
        let tok_stage = want_token.then(|| gpu.take_staging(4));
        if let Some(s) = &tok_stage {
            cmds.push(Cmd::C(&self.work.ids, s, 4));
        }

        if let Some(ts) = tokens {
            gpu.queue.write_buffer(&self.work.ids, 0, bytemuck::cast_slice(ts));
        }
        gpu.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[start as u32, tt, 0, 0]));
        if let Some(smp) = &req.sample {
            let slot = (start + t - 1) % RND_RING;
            gpu.queue.write_buffer(&self.work.rnd, (slot * 4) as u64, bytemuck::cast_slice(&[smp.uniform]));
        }
        let cb = encode(&gpu.device, &cmds);
        drop(cmds);
        gpu.queue.submit(Some(cb));

        // Read back (one wait for everything).
        let mut order: Vec<(HookPoint, usize)> = Vec::new();
        let mut kept = Vec::new();
        for p in req.read.iter().chain(&req.keep) {
            if let Some(v) = reads.get_mut(p) {
                if !v.is_empty() {
                    let (b, bytes, keep) = v.remove(0);
                    let width = self.site_view(*p).expect("checked").row;
                    if keep {
                        let rows = rows_of(*p);
                        let row0 = if rows == t { start } else { start + t - rows };
                        kept.push((*p, GpuTensor { buffer: b, start: row0, rows, width }));
                    } else {
                        order.push((*p, width));
                        staged.push((b, bytes));
                    }
                }
            }
        }
        if let Some(s) = logits_stage {
            staged.push((s, logits_bytes));
        }
        if let Some(s) = tok_stage {
            staged.push((s, 4));
        }
        let data = if staged.is_empty() {
            #[cfg(not(target_arch = "wasm32"))]
            gpu.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| GpuError::Device(format!("poll: {e}")))?;
            Vec::new()
        } else {
            gpu.read_staging(&staged).await?
        };
        let mut out = ForwardOutput { kept, ..Default::default() };
        let mut it = data.into_iter();
        for (p, row) in order {
            let bytes = it.next().expect("one per read");
            let mut vals: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
            let rows = vals.len() / row;
            let view = self.site_view(p).expect("checked");
            if view.width != row {
                // Whole rows were copied: keep this hook's columns.
                vals = vals.chunks(row).flat_map(|r| r[view.off..view.off + view.width].iter().copied()).collect();
            }
            let (cfg, width) = (&self.config, view.width);
            let shape = match p.site {
                Site::Q | Site::RotQ | Site::Z => vec![rows, cfg.n_heads, cfg.d_head],
                Site::K | Site::V => vec![rows, cfg.n_kv_heads, cfg.d_head],
                _ => vec![rows, width],
            };
            out.hooks.push(HookValue { point: p, shape, data: vals });
        }
        if req.logits != LogitsOut::None {
            out.logits = Some(bytemuck::pod_collect_to_vec(&it.next().expect("logits")));
        }
        if want_token {
            let b = it.next().expect("token");
            out.next_token = Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        for (b, _) in staged {
            gpu.give_staging(b);
        }
        self.len = start + t;
        Ok(out)
    }

    /// Greedy next token after `tokens` (appended to the cache): one command
    /// buffer, argmax on the GPU, a 4-byte readback.
    pub async fn next_token(&mut self, tokens: &[u32]) -> Result<u32> {
        let req = ForwardRequest { logits: LogitsOut::None, argmax: true, ..Default::default() };
        Ok(self.forward(tokens, &req).await?.next_token.expect("argmax requested"))
    }

    /// Greedy generation: prefill `prompt`, then decode up to `max_new`
    /// tokens, stopping after any id in `stop`. Decode steps are submitted
    /// `ahead` at a time: each step's embedding reads the token id the
    /// previous step's argmax wrote on the GPU, so the CPU waits once per
    /// `ahead` tokens (4 bytes each); tokens past a stop id are discarded and
    /// the cache is rolled back. `on_token` returns false to stop.
    pub async fn generate_greedy(
        &mut self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        ahead: usize,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Vec<u32>> {
        let opts = GenerateOptions { max_new_tokens: max_new, ..Default::default() };
        let req = GenerateRequest { opts: &opts, stop, edits: &[], ahead };
        Ok(self.generate(prompt, &req, on_token).await?.ids)
    }

    /// Generation with the engine's options (greedy, or seeded temperature /
    /// top-k / top-p sampling on the GPU, drawing the same uniform numbers
    /// as `scalpel_engine::Sampler`, so a seed picks the same tokens as the
    /// CPU path) under hook `edits` applied on the GPU at every step
    /// (positions are absolute: the prompt is `0..prompt.len()`). Starts from
    /// an empty cache. Decode steps are chained `ahead` (≤ 64) per readback
    /// as in [`generate_greedy`](Self::generate_greedy).
    pub async fn generate(&mut self, prompt: &[u32], req: &GenerateRequest<'_>, mut on_token: impl FnMut(u32) -> bool) -> Result<GpuGeneration> {
        req.opts.validate().map_err(GpuError::Input)?;
        self.reset();
        let mut out = GpuGeneration::default();
        if req.opts.max_new_tokens == 0 {
            return Ok(out);
        }
        if prompt.len() >= self.max_seq {
            return Err(GpuError::Input(format!(
                "the prompt has {} tokens; the GPU KV cache holds {} positions, leaving no room to generate",
                prompt.len(),
                self.max_seq
            )));
        }
        let mut sampler = Sampler::new(req.opts);
        let greedy = req.opts.temperature == 0.0;
        let settings = SampleStep { temperature: req.opts.temperature, top_k: req.opts.top_k, top_p: req.opts.top_p, uniform: 0.0 };
        let first_req = ForwardRequest {
            logits: LogitsOut::None,
            argmax: greedy,
            sample: (!greedy).then(|| SampleStep { uniform: sampler.next_uniform(), ..settings }),
            edits: req.edits.to_vec(),
            ..Default::default()
        };
        let first = self.forward(prompt, &first_req).await?.next_token.expect("a token was requested");
        out.calls.push(0..prompt.len());
        out.ids.push(first);
        if req.stop.contains(&first) || !on_token(first) {
            return Ok(out);
        }
        // Built once for every decode step (after the prefill sized the
        // buffers); the sampler op holds the settings, and each step's
        // uniform number is written to the ring.
        let edits = self.edit_ops(req.edits)?;
        let sampler_op = if greedy { None } else { Some(self.sample_op(&settings, false)?) };
        let ahead = req.ahead.clamp(1, RND_RING);
        'outer: while out.ids.len() < req.opts.max_new_tokens {
            let n = ahead.min(req.opts.max_new_tokens - out.ids.len()).min(self.max_seq.saturating_sub(self.len));
            if n == 0 {
                break;
            }
            let base = self.len;
            let uniforms: Vec<f32> = if greedy { Vec::new() } else { (0..n).map(|_| sampler.next_uniform()).collect() };
            let toks = self.decode_chain(n, &edits, sampler_op.as_ref(), &uniforms).await?;
            for (i, tok) in toks.into_iter().enumerate() {
                out.ids.push(tok);
                out.calls.push(base + i..base + i + 1);
                if req.stop.contains(&tok) || !on_token(tok) || out.ids.len() >= req.opts.max_new_tokens {
                    // The cache holds the inputs of steps 0..=i.
                    self.truncate(base + i + 1);
                    break 'outer;
                }
            }
        }
        Ok(out)
    }

    /// `n` decode steps back to back with GPU feedback (the ids buffer
    /// already holds the input token: written by the last argmax/sample),
    /// with `edits` at their sites, and `sampler` (one uniform number per
    /// step) instead of argmax when given.
    async fn decode_chain(&mut self, n: usize, edits: &HashMap<HookPoint, Vec<Op>>, sampler: Option<&Op>, uniforms: &[f32]) -> Result<Vec<u32>> {
        let gpu = self.gpu.clone();
        self.ensure(1, 1);
        let stage = gpu.take_staging((4 * n) as u64);
        for (i, u) in uniforms.iter().enumerate() {
            let slot = (self.len + i) % RND_RING;
            gpu.queue.write_buffer(&self.work.rnd, (slot * 4) as u64, bytemuck::cast_slice(&[*u]));
        }
        for i in 0..n {
            let mut cmds: Vec<Cmd> = Vec::with_capacity(self.plan.body.len() + 4);
            for item in self.plan.body.iter().chain(&self.plan.tail_last) {
                match item {
                    Item::Op(op) => {
                        let (k, wg) = self.resolve(op, 1);
                        cmds.push(Cmd::D(gpu.pipeline(k), &op.bg, wg));
                    }
                    Item::Site(p) => {
                        for e in edits.get(p).into_iter().flatten() {
                            let (k, wg) = self.resolve(e, 1);
                            cmds.push(Cmd::D(gpu.pipeline(k), &e.bg, wg));
                        }
                    }
                }
            }
            match sampler {
                Some(op) => cmds.push(Cmd::D(gpu.pipeline(Kernel::Sample), &op.bg, [1, 1, 1])),
                None => cmds.push(Cmd::D(gpu.pipeline(Kernel::Argmax), &self.plan.argmax_last.bg, [1, 1, 1])),
            }
            let cb = {
                let mut enc = gpu.device.create_command_encoder(&Default::default());
                encode_into(&mut enc, &cmds);
                enc.copy_buffer_to_buffer(&self.work.ids, 0, &stage, (4 * i) as u64, 4);
                enc.finish()
            };
            // Ordered before this submit, after the previous one.
            gpu.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[(self.len + i) as u32, 1, 0, 0]));
            gpu.queue.submit(Some(cb));
        }
        let bytes = gpu.read_staging(&[(stage.clone(), (4 * n) as u64)]).await?.remove(0);
        gpu.give_staging(stage);
        self.len += n;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// Bytes of weights on the GPU (matrices, embedding/unembedding, norms;
    /// not the KV cache, RoPE tables or activations).
    pub fn weight_bytes(&self) -> u64 {
        let w = &self.w;
        let mut b = w.embed.buf.size() + w.unembed.as_ref().map_or(0, |u| u.buf.size()) + w.ln_f.size();
        for l in &w.layers {
            b += l.ln1.size() + l.ln2.size() + l.wqkv.buf.size() + l.wo.buf.size() + l.wgu.buf.size() + l.wdown.buf.size();
        }
        b
    }

    /// Whether any matrix is kept quantized on the GPU.
    pub fn is_quantized(&self) -> bool {
        self.w.embed.fmt.is_some() || self.w.layers.iter().any(|l| l.wqkv.fmt.is_some() || l.wgu.fmt.is_some() || l.wo.fmt.is_some() || l.wdown.fmt.is_some())
    }

    /// Dispatches per decode step with no hooks (for docs and the bench).
    pub fn dispatches_per_token(&self) -> usize {
        self.plan.body.iter().chain(&self.plan.tail_last).filter(|i| matches!(i, Item::Op(_))).count() + 1
    }
}

fn encode_into(enc: &mut wgpu::CommandEncoder, cmds: &[Cmd]) {
    let mut i = 0;
    while i < cmds.len() {
        match &cmds[i] {
            Cmd::D(..) => {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                while let Some(Cmd::D(pipe, bg, wg)) = cmds.get(i) {
                    pass.set_pipeline(pipe);
                    pass.set_bind_group(0, *bg, &[]);
                    pass.dispatch_workgroups(wg[0], wg[1], wg[2]);
                    i += 1;
                }
            }
            Cmd::C(src, dst, bytes) => {
                enc.copy_buffer_to_buffer(src, 0, dst, 0, *bytes);
                i += 1;
            }
        }
    }
}

fn encode(device: &wgpu::Device, cmds: &[Cmd]) -> wgpu::CommandBuffer {
    let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("forward") });
    encode_into(&mut enc, cmds);
    enc.finish()
}
