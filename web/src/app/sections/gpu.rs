//! The WebGPU backend: start it on the loaded model, run next tokens and a
//! greedy generation on it, benchmark it, and choose whether comparisons
//! run on it. Readouts and patching run on the CPU engine.

use leptos::prelude::*;

use super::super::widgets::Bars;
use super::super::Ctx;
use crate::protocol::{Prompt, Request, Response};

#[component]
pub fn GpuSection() -> impl IntoView {
    let ctx = expect_context::<Ctx>();
    let allow_sw = RwSignal::new(false);
    let has_webgpu = js_sys::Reflect::get(&js_sys::global(), &"navigator".into())
        .ok()
        .and_then(|n| js_sys::Reflect::get(&n, &"gpu".into()).ok())
        .is_some_and(|g| !g.is_undefined());
    let gpu_ready = move || ctx.gpu.with(|g| g.is_some());
    let on_start = move |_| ctx.send(Request::GpuInit { allow_software: allow_sw.get_untracked() });
    let on_run = move |_| {
        let (prompt, max_new) = ctx.st.with_untracked(|s| (Prompt { text: s.prompt.clone(), chat: s.chat }, s.sampling.max_new_tokens as u32));
        ctx.gpu_result.set(None);
        ctx.send(Request::GpuRun { prompt, max_new_tokens: max_new, top_k: 5 });
    };
    let on_bench = move |_| {
        ctx.bench.set(None);
        // Up to 64 decode steps within a 3 s budget (a software adapter does 2).
        ctx.send(Request::GpuBench { prompt_tokens: 32, decode_tokens: 64, rounds: 1 });
    };
    view! {
        <details class="gpu">
            <summary>"WebGPU backend"</summary>
            <p class="muted">{if has_webgpu { "This browser offers WebGPU. Once started, the GPU runs comparisons (generation with the sampling settings; steer, scale, zero, mean over prompts, patch, project out and set a projection to a value, at residual, attention q/k/v/z and MLP hooks, applied on the GPU), next tokens and the benchmark, with the model's weights in the precision chosen above. Documents with other ops run on the CPU engine, with a note; so do patching sweeps and readouts." } else { "This browser does not offer WebGPU (navigator.gpu); the CPU engine runs everything." }}</p>
            <div class="row">
                <label class="check"><input type="checkbox" aria-label="Allow a software GPU adapter" prop:checked=move || allow_sw.get() on:change=move |ev| allow_sw.set(event_target_checked(&ev)) />"allow a software adapter (slow; for testing)"</label>
                <button class="secondary" on:click=on_start disabled=move || !ctx.ready() || !has_webgpu>"Start WebGPU"</button>
                <button class="secondary" on:click=on_run disabled=move || !ctx.ready() || !gpu_ready()>"Run on WebGPU"</button>
                <button class="secondary" on:click=on_bench disabled=move || !ctx.ready() || !gpu_ready()>"Benchmark WebGPU"</button>
            </div>
            <fieldset class="row" aria-label="Run comparisons on" disabled=move || !gpu_ready()>
                <legend>"Run comparisons on"</legend>
                <label class="check"><input type="radio" name="compare-backend" aria-label="CPU engine" prop:checked=move || !ctx.use_gpu.get() on:change=move |_| ctx.use_gpu.set(false) />"CPU engine (wasm)"</label>
                <label class="check"><input type="radio" name="compare-backend" aria-label="WebGPU" prop:checked=move || ctx.use_gpu.get() on:change=move |_| ctx.use_gpu.set(true) />"WebGPU"</label>
            </fieldset>
            <p role="group" aria-label="WebGPU adapter" data-software=move || ctx.gpu.with(|g| match g { Some(Response::GpuReady { software, .. }) => software.to_string(), _ => String::new() })>
                {move || ctx.gpu.with(|g| match g {
                    Some(Response::GpuReady { detail, load_ms, .. }) => format!("WebGPU: {detail} · weights uploaded in {:.1} s", load_ms / 1e3),
                    _ => "WebGPU: not started".to_string(),
                })}
            </p>
            {move || ctx.gpu_result.with(|r| match r {
                Some(Response::GpuResult { next, ids, text, first_token_ms, decode_tok_s }) => {
                    let items: Vec<(String, f32)> = next.iter().map(|t| (t.token.clone(), t.prob)).collect();
                    let next_ids = next.iter().map(|t| t.id.to_string()).collect::<Vec<_>>().join(",");
                    let gen_ids = ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(",");
                    Some(view! {
                        <div role="group" aria-label="WebGPU result" data-next-ids=next_ids data-ids=gen_ids>
                            <Bars label="WebGPU next-token probabilities".into() items=items percent=true/>
                            <p class="generation">{text.clone()}</p>
                            <p class="muted">{format!("first token after {first_token_ms:.0} ms · {decode_tok_s:.1} tokens/s")}</p>
                        </div>
                    })
                }
                _ => None,
            })}
        </details>
    }
}
