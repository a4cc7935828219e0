//! The fixed part of a forward call, built once per buffer size: the
//! activation buffers, and every kernel dispatch of the pass in order with
//! the hook sites between them (where reads copy and edits dispatch).

use scalpel_engine::{Config, HookPoint, Site};

use super::weights::{Mat, Weights};
use super::GpuModel;
use crate::device::{params, Gpu, Kernel};
use crate::GpuError;

/// Activation buffers for up to `cap` new tokens per call.
pub(super) struct Work {
    pub cap: usize,
    pub logit_rows: usize,
    pub ids: wgpu::Buffer,
    pub x: wgpu::Buffer,
    pub xn: wgpu::Buffer,
    pub qkv: wgpu::Buffer,
    pub q: wgpu::Buffer,
    pub z: wgpu::Buffer,
    pub attn_out: wgpu::Buffer,
    pub mid: wgpu::Buffer,
    pub gu: wgpu::Buffer,
    pub h: wgpu::Buffer,
    pub mlp_out: wgpu::Buffer,
    pub xf: wgpu::Buffer,
    pub logits: wgpu::Buffer,
    /// Sampling scratch: exp((l - max) / T) of one row.
    pub probs: wgpu::Buffer,
    /// The sampler's uniform numbers, by absolute position % RND_RING.
    pub rnd: wgpu::Buffer,
}

/// Sampled steps that can be chained before the host writes new numbers.
pub(super) const RND_RING: usize = 64;

/// How many workgroups a dispatch runs, given the call's `t` new tokens.
#[derive(Clone, Copy)]
pub(super) enum Workgroups {
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

/// One kernel dispatch with its bound buffers.
pub(super) struct Op {
    pub kernel: Kernel,
    pub bind_group: wgpu::BindGroup,
    pub workgroups: Workgroups,
}

pub(super) enum Item {
    Op(Op),
    Site(HookPoint),
}

pub(super) struct Plan {
    pub body: Vec<Item>,
    pub tail_last: Vec<Item>,
    pub tail_all: Vec<Item>,
    pub argmax_last: Op,
    pub argmax_all: Op,
}

/// Where a hook's values live: columns `off..off + width` of rows `row`
/// floats wide (q, k and v share the fused qkv rows; the gate and up
/// pre-activations share the gate/up rows).
#[derive(Clone, Copy)]
pub(super) struct SiteView<'a> {
    pub buf: &'a wgpu::Buffer,
    pub row: usize,
    pub off: usize,
    pub width: usize,
}

pub(super) fn f32_bits(x: f32) -> u32 {
    x.to_bits()
}

impl GpuModel {
    pub(super) fn make_work(gpu: &Gpu, cfg: &Config, cap: usize, logit_rows: usize) -> Work {
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

    pub(super) fn make_plan(gpu: &Gpu, cfg: &Config, max_seq: usize, weights: &Weights, work: &Work, step: &wgpu::Buffer) -> Plan {
        let (d, m, v, dh) = (cfg.d_model as u32, cfg.d_mlp as u32, cfg.d_vocab as u32, cfg.d_head as u32);
        let (nh, nkv) = (cfg.n_heads as u32, cfg.n_kv_heads as u32);
        let qkvw = (nh + 2 * nkv) * dh;
        let eps = f32_bits(cfg.norm_eps as f32);
        let op = |kern: Kernel, p: &[u32], bufs: &[&wgpu::Buffer], wg: Workgroups| -> Op {
            let pb = gpu.uniform(&format!("{kern:?} params"), &params(p));
            Op { kernel: kern, bind_group: gpu.bind(kern, step, &pb, bufs), workgroups: wg }
        };
        let dm = &weights.dummy;
        let rows = |n: u32| Workgroups::Rows(n.div_ceil(256));
        // y[t, n] = x[t, kk] · matᵀ: tiled matmul / matvec for f32,
        // matmul_q / matvec_q for quantized weights (chosen per call by t).
        let lin = |mat: &Mat, n: u32, kk: u32, x: &wgpu::Buffer, y: &wgpu::Buffer| -> Op {
            match mat.fmt {
                None => op(Kernel::Matmul, &[n, kk, 0, 0], &[x, &mat.buf, dm, y], Workgroups::Linear(n)),
                Some(f) => op(Kernel::MatvecQ, &[n, kk, 0, f], &[x, &mat.buf, dm, y], Workgroups::QLinear(n)),
            }
        };
        let embed = match weights.embed.fmt {
            None => op(Kernel::Embed, &[d], &[&work.ids, &weights.embed.buf, &work.x], rows(d)),
            Some(f) => op(Kernel::EmbedQ, &[d, f], &[&work.ids, &weights.embed.buf, &work.x], rows(d)),
        };
        let mut body = vec![Item::Op(embed)];
        for (l, layer) in weights.layers.iter().enumerate() {
            let s = |site| Item::Site(HookPoint::block(l, site));
            body.push(s(Site::ResidPre));
            body.push(Item::Op(op(Kernel::Norm, &[d, 0, 0, eps], &[&work.x, &layer.ln1, dm, &work.xn], Workgroups::Rows(1))));
            body.push(s(Site::Ln1Normalized));
            body.push(Item::Op(lin(&layer.wqkv, qkvw, d, &work.xn, &work.qkv)));
            body.push(s(Site::Q));
            body.push(s(Site::K));
            body.push(s(Site::V));
            body.push(Item::Op(op(
                Kernel::RopeKv,
                &[nh, nkv, dh, max_seq as u32],
                &[&work.qkv, &weights.cos, &weights.sin, &work.q, &layer.k_cache, &layer.v_cache],
                Workgroups::Rows(((nh + 2 * nkv) * dh / 2).div_ceil(64)),
            )));
            body.push(s(Site::RotQ));
            body.push(Item::Op(op(
                Kernel::Attention,
                &[nh, nkv, dh, max_seq as u32, f32_bits((dh as f32).sqrt())],
                &[&work.q, &layer.k_cache, &layer.v_cache, &work.z],
                Workgroups::Rows(nh),
            )));
            body.push(s(Site::Z));
            body.push(Item::Op(lin(&layer.wo, d, d, &work.z, &work.attn_out)));
            body.push(s(Site::AttnOut));
            body.push(Item::Op(op(Kernel::Add, &[d], &[&work.x, &work.attn_out, &work.mid], rows(d))));
            body.push(s(Site::ResidMid));
            body.push(Item::Op(op(Kernel::Norm, &[d, 0, 0, eps], &[&work.mid, &layer.ln2, dm, &work.xn], Workgroups::Rows(1))));
            body.push(s(Site::Ln2Normalized));
            body.push(Item::Op(lin(&layer.wgu, 2 * m, d, &work.xn, &work.gu)));
            body.push(s(Site::MlpPre));
            body.push(s(Site::MlpPreLinear));
            body.push(Item::Op(op(Kernel::SiluMul, &[m], &[&work.gu, &work.h], rows(m))));
            body.push(s(Site::MlpPost));
            body.push(Item::Op(lin(&layer.wdown, d, m, &work.h, &work.mlp_out)));
            body.push(s(Site::MlpOut));
            body.push(Item::Op(op(Kernel::Add, &[d], &[&work.mid, &work.mlp_out, &work.x], rows(d))));
            body.push(s(Site::ResidPost));
        }
        let un = weights.unembed.as_ref().unwrap_or(&weights.embed);
        let lnf = Item::Site(HookPoint::global(Site::LnFinalNormalized));
        let tail_last = vec![
            Item::Op(op(Kernel::Norm, &[d, 1, 0, eps], &[&work.x, &weights.ln_f, dm, &work.xf], Workgroups::Fixed(1))),
            lnf,
            Item::Op(match un.fmt {
                None => op(Kernel::Matmul, &[v, d, 0, 0], &[&work.xf, &un.buf, dm, &work.logits], Workgroups::Vec(v)),
                Some(f) => op(Kernel::MatvecQ, &[v, d, 0, f], &[&work.xf, &un.buf, dm, &work.logits], Workgroups::QVec(v)),
            }),
        ];
        let tail_all = vec![
            Item::Op(op(Kernel::Norm, &[d, 0, 0, eps], &[&work.x, &weights.ln_f, dm, &work.xf], Workgroups::Rows(1))),
            Item::Site(HookPoint::global(Site::LnFinalNormalized)),
            Item::Op(lin(un, v, d, &work.xf, &work.logits)),
        ];
        Plan {
            body,
            tail_last,
            tail_all,
            argmax_last: op(Kernel::Argmax, &[v, 0], &[&work.logits, &work.ids], Workgroups::Fixed(1)),
            argmax_all: op(Kernel::Argmax, &[v, 1], &[&work.logits, &work.ids], Workgroups::Fixed(1)),
        }
    }

    /// Grows the activation buffers (and rebuilds the bind groups) if needed.
    pub(super) fn ensure(&mut self, t: usize, logit_rows: usize) {
        if t <= self.work.cap && logit_rows <= self.work.logit_rows {
            return;
        }
        let cap = self.work.cap.max(t.next_power_of_two()).min(self.max_seq);
        let rows = self.work.logit_rows.max(logit_rows);
        self.work = Self::make_work(&self.gpu, &self.config, cap, rows);
        self.plan = Self::make_plan(&self.gpu, &self.config, self.max_seq, &self.weights, &self.work, &self.step);
    }

    pub(super) fn resolve(&self, op: &Op, t: u32) -> (Kernel, [u32; 3]) {
        let maxd = self.gpu.info.max_compute_workgroups_per_dimension.max(1);
        let vec2d = |n: u32| {
            let wgs = n.div_ceil(8);
            if wgs <= maxd {
                [wgs, 1, 1]
            } else {
                [maxd, wgs.div_ceil(maxd), 1]
            }
        };
        match op.workgroups {
            Workgroups::Rows(x) => (op.kernel, [x, t, 1]),
            Workgroups::Fixed(x) => (op.kernel, [x, 1, 1]),
            Workgroups::Vec(n) => (Kernel::Matvec, vec2d(n)),
            Workgroups::Linear(n) if t == 1 => (Kernel::Matvec, vec2d(n)),
            Workgroups::Linear(n) => (Kernel::Matmul, [n.div_ceil(64), t.div_ceil(64), 1]),
            Workgroups::QLinear(n) if t == 1 => (Kernel::MatvecQ, vec2d(n)),
            Workgroups::QLinear(n) => (Kernel::MatmulQ, [n.div_ceil(64), t.div_ceil(64), 1]),
            Workgroups::QVec(n) => (op.kernel, vec2d(n)),
        }
    }

    /// Where the values of a supported hook point live.
    pub(super) fn site_view(&self, p: HookPoint) -> Option<SiteView<'_>> {
        let cfg = &self.config;
        if let Some(l) = p.layer {
            if l >= cfg.n_layers {
                return None;
            }
        } else if p.site != Site::LnFinalNormalized {
            return None;
        }
        let work = &self.work;
        let (d, m, dh) = (cfg.d_model, cfg.d_mlp, cfg.d_head);
        let (q, kv) = (cfg.n_heads * dh, cfg.n_kv_heads * dh);
        let whole = |buf, width| SiteView { buf, row: width, off: 0, width };
        let part = |buf, row, off, width| SiteView { buf, row, off, width };
        Some(match p.site {
            Site::ResidPre | Site::ResidPost => whole(&work.x, d),
            Site::Ln1Normalized | Site::Ln2Normalized => whole(&work.xn, d),
            Site::Q => part(&work.qkv, q + 2 * kv, 0, q),
            Site::K => part(&work.qkv, q + 2 * kv, q, kv),
            Site::V => part(&work.qkv, q + 2 * kv, q + kv, kv),
            Site::RotQ => whole(&work.q, q),
            Site::Z => whole(&work.z, q),
            Site::AttnOut => whole(&work.attn_out, d),
            Site::ResidMid => whole(&work.mid, d),
            Site::MlpPre => part(&work.gu, 2 * m, 0, m),
            Site::MlpPreLinear => part(&work.gu, 2 * m, m, m),
            Site::MlpPost => whole(&work.h, m),
            Site::MlpOut => whole(&work.mlp_out, d),
            Site::LnFinalNormalized => whole(&work.xf, d),
            _ => return None,
        })
    }

    pub(super) fn unsupported(&self, p: HookPoint) -> GpuError {
        GpuError::Input(format!(
            "hook point '{}' is not available on the GPU path (supported: blocks.{{0..{}}}.{{{}}}, ln_final.hook_normalized)",
            p.name(),
            self.config.n_layers,
            Site::gpu_readable().iter().map(|s| s.suffix()).collect::<Vec<_>>().join(", ")
        ))
    }
}
