//! Decoding on the GPU: greedy or seeded sampled steps chained with GPU
//! feedback (each step embeds the id the previous one wrote), under hook
//! edits, with a 4-byte readback per token.

use std::collections::HashMap;

use scalpel_engine::{GenerateOptions, HookPoint, Sampler};

use super::encode::{encode_into, Command};
use super::plan::{Item, Op, RND_RING};
use super::{ForwardRequest, GenerateRequest, GpuGeneration, GpuModel, LogitsOut, SampleStep};
use crate::device::Kernel;
use crate::{GpuError, Result};

impl GpuModel {
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
            let mut cmds: Vec<Command> = Vec::with_capacity(self.plan.body.len() + 4);
            for item in self.plan.body.iter().chain(&self.plan.tail_last) {
                match item {
                    Item::Op(op) => {
                        let (k, wg) = self.resolve(op, 1);
                        cmds.push(Command::Dispatch(gpu.pipeline(k), &op.bind_group, wg));
                    }
                    Item::Site(p) => {
                        for e in edits.get(p).into_iter().flatten() {
                            let (k, wg) = self.resolve(e, 1);
                            cmds.push(Command::Dispatch(gpu.pipeline(k), &e.bind_group, wg));
                        }
                    }
                }
            }
            match sampler {
                Some(op) => cmds.push(Command::Dispatch(gpu.pipeline(Kernel::Sample), &op.bind_group, [1, 1, 1])),
                None => cmds.push(Command::Dispatch(gpu.pipeline(Kernel::Argmax), &self.plan.argmax_last.bind_group, [1, 1, 1])),
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
}
