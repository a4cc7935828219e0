use web_time::Instant;

use scalpel_engine::config::NormKind;
use scalpel_engine::{
    Hook, HookPoint,
    Matrix, Model, Result, Site,
};
use scalpel_types::readouts::*;

use super::*;

#[derive(Clone, Debug)]
pub struct DlaRequest {
    pub ids: Vec<u32>,
    pub answer: u32,
    /// If given, the metric is logit[answer] − logit[wrong]; otherwise logit[answer].
    pub wrong: Option<u32>,
    /// Position whose logits are attributed (negative = from the end).
    pub position: i64,
}

/// Direct logit attribution at one position.
///
/// With x the final residual stream, s the final norm's scale computed from x
/// and *frozen*, w (and b) the final norm's weight (and bias), the model's
/// logits are W_U · (w ⊙ (x − mean(x)) / s + b) for LayerNorm and
/// W_U · (w ⊙ x / s) for RMSNorm. Holding s fixed this is linear in x, and x is
/// the sum of the embeddings, every head's output z_h · W_O[:, h]ᵀ, the
/// attention output biases and every MLP's `hook_mlp_out`. Each component c
/// contributes (w ⊙ (c − mean c) / s) · (W_U[answer] − W_U[wrong]); the
/// LayerNorm bias contributes b · (W_U[answer] − W_U[wrong]). The components sum
/// to the real logit difference (exactly, in exact arithmetic).
///
/// Blocks with post-norms (Gemma's `ln1_post`) normalise the sum of the
/// heads before it reaches the residual stream: that norm's scale is
/// frozen too, so head h contributes (w_post ⊙ W_O[:, h] z_h / s_post) · u.
/// A final soft-cap (Gemma 2) is not linear: the metric is then taken
/// before it (`DlaResult::final_softcap`).
pub fn direct_logit_attribution(model: &Model, req: &DlaRequest, extra: Option<&mut dyn Hook>) -> Result<DlaResult> {
    let t0 = Instant::now();
    let cfg = &model.config;
    check_ids(model, &req.ids)?;
    check_token(model, "answer", req.answer)?;
    if let Some(w) = req.wrong {
        check_token(model, "wrong", w)?;
    }
    let pos = resolve_position(req.position, req.ids.len())?;
    let (nl, nh, dh, d) = (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model);
    let has_pos = scalpel_engine::HookLayout::has_site(cfg, Site::PosEmbed);
    let mut points = vec![HookPoint::global(Site::Embed), HookPoint::block(nl - 1, Site::ResidPost)];
    if has_pos {
        points.push(HookPoint::global(Site::PosEmbed));
    }
    for l in 0..nl {
        points.extend([Site::Z, Site::AttnOut, Site::MlpOut].map(|s| HookPoint::block(l, s)));
    }
    let (logits, cache) = run_cached(model, &req.ids, &points, extra, Logits::From(pos))?;
    let at = |p: HookPoint| -> Result<Vec<f32>> { row_of(cached(&cache, p)?, pos) };

    // The frozen final norm and the unembedding direction.
    let x = at(HookPoint::block(nl - 1, Site::ResidPost))?;
    let eps = cfg.norm_eps;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
    let s = match cfg.norm {
        NormKind::Rms => (x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64 + eps).sqrt(),
        NormKind::Layer => (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64 + eps).sqrt(),
    };
    // Only the answer's (and wrong token's) rows of the unembedding.
    let wu = model.unembedding_rows(&[req.answer, req.wrong.unwrap_or(req.answer)])?;
    let mut dir: Vec<f64> = row_of(&wu, 0)?.iter().map(|&v| v as f64).collect();
    if req.wrong.is_some() {
        for (a, b) in dir.iter_mut().zip(row_of(&wu, 1)?) {
            *a -= b as f64;
        }
    }
    let (nw, nb) = final_norm_params(model)?;
    let mut u: Vec<f64> = dir.iter().zip(&nw).map(|(&g, &w)| g * w as f64 / s).collect();
    if cfg.norm == NormKind::Layer {
        // (c − mean c) · u = c · (u − mean u)
        let m = u.iter().sum::<f64>() / d as f64;
        u.iter_mut().for_each(|v| *v -= m);
    }
    let ln_final_bias = nb.as_ref().map(|b| b.iter().zip(&dir).map(|(&b, &g)| b as f64 * g).sum::<f64>());

    let mut components = Vec::new();
    let mut push = |name: String, kind, layer, head, v: f64| {
        components.push(DlaComponent { name, kind, layer, head, value: v as f32 });
        v
    };
    let mut sum = 0f64;
    let embed = dot(&at(HookPoint::global(Site::Embed))?, &u);
    sum += push("embed".into(), ComponentKind::Embed, None, None, embed);
    let pos_embed = if has_pos {
        let v = dot(&at(HookPoint::global(Site::PosEmbed))?, &u);
        sum += push("pos_embed".into(), ComponentKind::PosEmbed, None, None, v);
        Some(v as f32)
    } else {
        None
    };
    let mut layers = Vec::with_capacity(nl);
    for l in 0..nl {
        // W_O is [d_model, n_heads·d_head]; g = W_Oᵀ u_l, head h = z_h · g[h].
        let wo: Vec<Vec<f32>> = model.weight(l, Matrix::O)?.to_vec2()?;
        let z = at(HookPoint::block(l, Site::Z))?; // [n_heads·d_head] at `pos`
        let bias_o = model.bias(l, Matrix::O)?.map(|b| b.to_vec1::<f32>()).transpose()?;
        // u_l: u through this block's frozen post-attention norm, if any.
        let u_l: Vec<f64> = match model.post_norm_params(l, false) {
            None => u.clone(),
            Some((w_post, eps_post)) => {
                let raw: Vec<f64> = wo
                    .iter()
                    .enumerate()
                    .map(|(i, row)| row.iter().zip(&z).map(|(&w, &x)| w as f64 * x as f64).sum::<f64>() + bias_o.as_ref().map_or(0.0, |b| b[i] as f64))
                    .collect();
                let s_post = (raw.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps_post as f64).sqrt();
                let w_post: Vec<f32> = w_post.to_vec1()?;
                u.iter().zip(&w_post).map(|(&ui, &w)| ui * w as f64 / s_post).collect()
            }
        };
        let mut g = vec![0f64; nh * dh];
        for (row, &ui) in wo.iter().zip(&u_l) {
            for (gj, &w) in g.iter_mut().zip(row) {
                *gj += w as f64 * ui;
            }
        }
        let mut heads = Vec::with_capacity(nh);
        for h in 0..nh {
            let v = dot(&z[h * dh..(h + 1) * dh], &g[h * dh..(h + 1) * dh]);
            sum += push(format!("L{l}H{h}"), ComponentKind::Head, Some(l), Some(h), v);
            heads.push(v as f32);
        }
        let attn_bias = match bias_o {
            Some(b) => {
                let v = dot(&b, &u_l);
                sum += push(format!("L{l}.attn_bias"), ComponentKind::AttnBias, Some(l), None, v);
                Some(v as f32)
            }
            None => None,
        };
        let attn_out = dot(&at(HookPoint::block(l, Site::AttnOut))?, &u) as f32;
        let mlp = dot(&at(HookPoint::block(l, Site::MlpOut))?, &u);
        sum += push(format!("L{l}.mlp"), ComponentKind::Mlp, Some(l), None, mlp);
        layers.push(DlaLayer { layer: l, heads, attn_bias, attn_out, mlp: mlp as f32 });
    }
    if let Some(v) = ln_final_bias {
        sum += push("ln_final.bias".into(), ComponentKind::LnFinalBias, None, None, v);
    }
    let final_softcap = cfg.extra.final_softcap;
    let row = match final_softcap {
        // The logits before the cap, from the same final residual stream.
        Some(_) => {
            let xt = Tensor::from_vec(x.clone(), (1, d), &candle_core::Device::Cpu)?;
            row_of(&model.unembed_uncapped(&model.final_norm(&xt)?)?, 0)?
        }
        None => row_of(&logits, 0)?,
    };
    let total = row[req.answer as usize] - req.wrong.map(|w| row[w as usize]).unwrap_or(0.0);
    Ok(DlaResult {
        ids: req.ids.clone(),
        tokens: model.tokenizer().token_strings(&req.ids),
        position: pos,
        answer: token_ref(model, req.answer),
        wrong: req.wrong.map(|w| token_ref(model, w)),
        metric: if req.wrong.is_some() { "logit_diff" } else { "logit" }.into(),
        total,
        final_softcap,
        sum_of_components: sum as f32,
        unexplained: (total as f64 - sum) as f32,
        norm: match cfg.norm {
            NormKind::Rms => "rms",
            NormKind::Layer => "layer",
        }
        .into(),
        norm_scale: s as f32,
        embed: embed as f32,
        pos_embed,
        ln_final_bias: ln_final_bias.map(|v| v as f32),
        layers,
        components,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
