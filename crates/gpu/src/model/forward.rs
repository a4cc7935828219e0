//! One forward call: the plan's dispatches for `t` new tokens, with the
//! call's edits at their hook sites and copies where hooks are read or
//! kept, then one wait for every readback.

use std::collections::HashMap;

use scalpel_engine::{HookPoint, Site};

use super::encode::{encode, Command};
use super::plan::{Op, RND_RING};
use super::{ForwardOutput, ForwardRequest, GpuModel, GpuTensor, HookValue, LogitsOut};
use crate::device::Kernel;
use crate::{GpuError, Result};

/// A hook read back (`keep: false`) or kept on the GPU: its destination buffer.
struct Read {
    buffer: wgpu::Buffer,
    bytes: u64,
    keep: bool,
}

/// Staging buffers for the logits and the next token, when asked for.
struct Stages {
    logits: Option<(wgpu::Buffer, u64)>,
    token: Option<wgpu::Buffer>,
}

impl GpuModel {
    /// Runs `tokens` at positions `len..len + t`, extending the KV cache.
    pub async fn forward(&mut self, tokens: &[u32], req: &ForwardRequest) -> Result<ForwardOutput> {
        let t = tokens.len();
        self.check_call(tokens)?;
        let start = self.len;
        let all_rows = req.logits == LogitsOut::All;
        let logit_rows = if all_rows { t } else { 1 };
        self.ensure(t, logit_rows);
        let edits = self.edit_ops(&req.edits)?;
        let mut reads = self.reads(req, t)?;
        let sampler = req.sample.map(|s| self.sample_op(&s, all_rows)).transpose()?;
        let gpu = self.gpu.clone();
        let stages = Stages {
            logits: (req.logits != LogitsOut::None).then(|| {
                let bytes = (logit_rows * self.config.d_vocab * 4) as u64;
                (gpu.take_staging(bytes), bytes)
            }),
            token: (req.argmax || sampler.is_some()).then(|| gpu.take_staging(4)),
        };
        let cmds = self.commands(t as u32, req, &edits, &reads, sampler.as_ref(), &stages);
        gpu.queue.write_buffer(&self.work.ids, 0, bytemuck::cast_slice(tokens));
        gpu.queue.write_buffer(&self.step, 0, bytemuck::cast_slice(&[start as u32, t as u32, 0, 0]));
        if let Some(smp) = &req.sample {
            let slot = (start + t - 1) % RND_RING;
            gpu.queue.write_buffer(&self.work.rnd, (slot * 4) as u64, bytemuck::cast_slice(&[smp.uniform]));
        }
        let cb = encode(&gpu.device, &cmds);
        drop(cmds);
        gpu.queue.submit(Some(cb));
        let out = self.read_back(req, t, start, &mut reads, stages).await?;
        self.len = start + t;
        Ok(out)
    }

    fn check_call(&self, tokens: &[u32]) -> Result<()> {
        let t = tokens.len();
        if t == 0 {
            return Err(GpuError::Input("empty prompt: there are no tokens to run".into()));
        }
        if let Some(bad) = tokens.iter().find(|&&id| id as usize >= self.config.d_vocab) {
            return Err(GpuError::Input(format!(
                "token id {bad} is out of range: the vocabulary has {} tokens",
                self.config.d_vocab
            )));
        }
        if self.len + t > self.max_seq {
            return Err(GpuError::Input(format!(
                "{} tokens ({t} new + {} cached) exceed the GPU KV cache of {} positions",
                self.len + t,
                self.len,
                self.max_seq
            )));
        }
        Ok(())
    }

    /// Rows a read of `p` copies: every new position, except the final
    /// norm, whose rows are the logits' rows.
    fn rows_of(&self, p: HookPoint, req: &ForwardRequest, t: usize) -> usize {
        if p.site == Site::LnFinalNormalized && req.logits != LogitsOut::All {
            1
        } else {
            t
        }
    }

    /// Destination buffers for the hooks `req` reads and keeps.
    fn reads(&self, req: &ForwardRequest, t: usize) -> Result<HashMap<HookPoint, Vec<Read>>> {
        let mut reads: HashMap<HookPoint, Vec<Read>> = HashMap::new();
        for (p, keep) in req.read.iter().map(|p| (p, false)).chain(req.keep.iter().map(|p| (p, true))) {
            let width = self.site_view(*p).ok_or_else(|| self.unsupported(*p))?.row;
            let bytes = (self.rows_of(*p, req, t) * width * 4) as u64;
            let buffer = if keep { self.gpu.storage_zeroed("kept", bytes) } else { self.gpu.take_staging(bytes) };
            reads.entry(*p).or_default().push(Read { buffer, bytes, keep });
        }
        Ok(reads)
    }

    /// The call's command list: the plan's dispatches, the edits and read
    /// copies at their sites, the argmax or sampler, and the staging copies.
    fn commands<'a>(
        &'a self,
        t: u32,
        req: &ForwardRequest,
        edits: &'a HashMap<HookPoint, Vec<Op>>,
        reads: &'a HashMap<HookPoint, Vec<Read>>,
        sampler: Option<&'a Op>,
        stages: &'a Stages,
    ) -> Vec<Command<'a>> {
        let gpu = &self.gpu;
        let all_rows = req.logits == LogitsOut::All;
        let tail = if all_rows { &self.plan.tail_all } else { &self.plan.tail_last };
        let want_hooks = !edits.is_empty() || !reads.is_empty();
        let mut cmds = Vec::with_capacity(self.plan.body.len() + 8);
        for item in self.plan.body.iter().chain(tail) {
            match item {
                super::plan::Item::Op(op) => cmds.push(self.dispatch(op, t)),
                super::plan::Item::Site(p) if want_hooks => {
                    // blocks.0.hook_resid_pre is also what hook_embed shows.
                    cmds.extend(edits.get(p).into_iter().flatten().map(|e| self.dispatch(e, t)));
                    if let Some(rs) = reads.get(p) {
                        let src = self.site_view(*p).expect("checked by reads()").buf;
                        cmds.extend(rs.iter().map(|r| Command::Copy(src, &r.buffer, r.bytes)));
                    }
                }
                super::plan::Item::Site(_) => {}
            }
        }
        let argmax = if all_rows { &self.plan.argmax_all } else { &self.plan.argmax_last };
        match sampler {
            Some(op) => cmds.push(Command::Dispatch(gpu.pipeline(Kernel::Sample), &op.bind_group, [1, 1, 1])),
            None if req.argmax => cmds.push(Command::Dispatch(gpu.pipeline(Kernel::Argmax), &argmax.bind_group, [1, 1, 1])),
            None => {}
        }
        if let Some((s, bytes)) = &stages.logits {
            cmds.push(Command::Copy(&self.work.logits, s, *bytes));
        }
        if let Some(s) = &stages.token {
            cmds.push(Command::Copy(&self.work.ids, s, 4));
        }
        cmds
    }

    pub(super) fn dispatch<'a>(&'a self, op: &'a Op, t: u32) -> Command<'a> {
        let (kernel, wg) = self.resolve(op, t);
        Command::Dispatch(self.gpu.pipeline(kernel), &op.bind_group, wg)
    }

    /// Waits once for every staged buffer and unpacks hooks, logits and the token.
    async fn read_back(
        &self,
        req: &ForwardRequest,
        t: usize,
        start: usize,
        reads: &mut HashMap<HookPoint, Vec<Read>>,
        stages: Stages,
    ) -> Result<ForwardOutput> {
        let gpu = &self.gpu;
        let mut order: Vec<(HookPoint, usize)> = Vec::new();
        let mut staged: Vec<(wgpu::Buffer, u64)> = Vec::new();
        let mut kept = Vec::new();
        for p in req.read.iter().chain(&req.keep) {
            let Some(r) = reads.get_mut(p).filter(|v| !v.is_empty()).map(|v| v.remove(0)) else { continue };
            let width = self.site_view(*p).expect("checked by reads()").row;
            if r.keep {
                let rows = self.rows_of(*p, req, t);
                let row0 = if rows == t { start } else { start + t - rows };
                kept.push((*p, GpuTensor { buffer: r.buffer, start: row0, rows, width }));
            } else {
                order.push((*p, width));
                staged.push((r.buffer, r.bytes));
            }
        }
        let want_logits = stages.logits.is_some();
        let want_token = stages.token.is_some();
        staged.extend(stages.logits);
        staged.extend(stages.token.map(|s| (s, 4)));
        let data = if staged.is_empty() {
            #[cfg(not(target_arch = "wasm32"))]
            gpu.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| GpuError::Device(format!("poll: {e}")))?;
            Vec::new()
        } else {
            gpu.read_staging(&staged).await?
        };
        let mut out = ForwardOutput { kept, ..Default::default() };
        let mut it = data.into_iter();
        for (p, row) in order {
            out.hooks.push(self.hook_value(p, row, it.next().expect("one per read")));
        }
        if want_logits {
            out.logits = Some(bytemuck::pod_collect_to_vec(&it.next().expect("logits")));
        }
        if want_token {
            let b = it.next().expect("token");
            out.next_token = Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        for (b, _) in staged {
            gpu.give_staging(b);
        }
        Ok(out)
    }

    /// A read hook's values from its copied rows (`row` floats wide).
    fn hook_value(&self, p: HookPoint, row: usize, bytes: Vec<u8>) -> HookValue {
        let mut vals: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let rows = vals.len() / row;
        let view = self.site_view(p).expect("checked by reads()");
        if view.width != row {
            // Whole rows were copied: keep this hook's columns.
            vals = vals.chunks(row).flat_map(|r| r[view.off..view.off + view.width].iter().copied()).collect();
        }
        let cfg = &self.config;
        let shape = match p.site {
            Site::Q | Site::RotQ | Site::Z => vec![rows, cfg.n_heads, cfg.d_head],
            Site::K | Site::V => vec![rows, cfg.n_kv_heads, cfg.d_head],
            _ => vec![rows, view.width],
        };
        HookValue { point: p, shape, data: vals }
    }
}
