//! Worked examples that load in one click: each a whole link state.

use super::{Panel, Shared, StackItem, UiOp, VectorSpec};
use crate::protocol::{Metric, PatchSite};

/// A worked example that loads in one click.
pub struct Preset {
    pub id: &'static str,
    pub title: &'static str,
    pub blurb: &'static str,
    pub state: Shared,
}

/// Prompts for the sentiment direction (also in tests/reference/data).
const POSITIVE: &str = "I loved this movie, it was wonderful.\nThe food at this restaurant is delicious.\nWhat a beautiful and sunny day.\nShe was thrilled with her new job.\nThis book is fantastic and inspiring.";
const NEGATIVE: &str = "I hated this movie, it was awful.\nThe food at this restaurant is disgusting.\nWhat a miserable and rainy day.\nShe was devastated by losing her job.\nThis book is boring and depressing.";

pub fn presets() -> Vec<Preset> {
    let base = Shared::default();
    let love_hate = {
        let mut s = base.clone();
        s.panel = Panel::Steer;
        s.prompt = "I think my neighbour is".into();
        s.sampling.max_new_tokens = 16;
        let mut it = StackItem::new(1, UiOp::Add, 30);
        it.layer = Some(4);
        it.site = "hook_resid_pre".into();
        it.strength = 5.0;
        // Multi-token prompts: a one-token prompt's only position is the
        // attention sink, whose activation swamps the difference.
        it.vector = VectorSpec::PromptPair { plus: "I love you".into(), minus: "I hate you".into() };
        s.stack = vec![it];
        s
    };
    let ioi = {
        let mut s = base.clone();
        s.panel = Panel::Patch;
        s.patch.family = PatchSite::ResidPre;
        s.patch.metric = Metric::LogitDiffNorm;
        s
    };
    let ablation = {
        let mut s = base.clone();
        s.panel = Panel::Steer;
        s.prompt = "The movie was absolutely".into();
        s.sampling.max_new_tokens = 20;
        let mut it = StackItem::new(1, UiOp::ProjectOut, 30);
        it.layer = None;
        it.site = "hook_resid_post".into();
        // Layer 14: the best leave-one-out separation before the last layers
        // (`scalpel vector --positive … --negative …`).
        it.vector_layer = Some(14);
        it.vector = VectorSpec::Sets { positive: POSITIVE.into(), negative: NEGATIVE.into(), pca: false };
        s.stack = vec![it];
        s
    };
    let lens = {
        let mut s = base.clone();
        s.panel = Panel::Lens;
        s.prompt = "The Eiffel Tower is located in the city of".into();
        s.lens.target = " Paris".into();
        s
    };
    vec![
        Preset { id: "love-hate", title: "\"Love − Hate\" steering", blurb: "ActAdd: add 5 × (act(I love you) − act(I hate you)) at layer 4", state: love_hate },
        Preset { id: "ioi", title: "IOI name-mover patching", blurb: "Which layer and position carry the indirect object?", state: ioi },
        Preset { id: "directional-ablation", title: "Directional ablation", blurb: "Project a sentiment direction (read at layer 14) out of every layer", state: ablation },
        Preset { id: "fact-lens", title: "Logit lens: a fact lookup", blurb: "At which layer does ' Paris' appear?", state: lens },
    ]
}
