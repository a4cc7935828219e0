//! Hook sites and hook names (TransformerLens's), the one list every crate
//! and the page read.
//!
//! Every tensor a hook sees has a leading batch dimension:
//! resid-like `[batch, pos, d_model]`, q/k/v/z `[batch, pos, head, d_head]`,
//! scores/pattern `[batch, head, q_pos, k_pos]`, mlp `[batch, pos, d_mlp]`.

use serde::{Deserialize, Serialize};

/// Where in a block (or outside the blocks) a hook sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Site {
    Embed,
    PosEmbed,
    ResidPre,
    Ln1Normalized,
    Q,
    K,
    V,
    QNorm,
    KNorm,
    RotQ,
    RotK,
    AttnScores,
    Pattern,
    Z,
    Ln1Post,
    AttnOut,
    ResidMid,
    Ln2Normalized,
    MlpPre,
    MlpPreLinear,
    MlpPost,
    Ln2Post,
    MlpOut,
    ResidPost,
    LnFinalNormalized,
}

/// What a site is, in one row: its name, whether it sits outside the
/// blocks, whether the GPU forward pass can read / edit it, and whether the
/// page offers it for interventions.
struct SiteInfo {
    site: Site,
    suffix: &'static str,
    global: bool,
    gpu_read: bool,
    gpu_edit: bool,
    page: bool,
}

const fn row(site: Site, suffix: &'static str, global: bool, gpu_read: bool, gpu_edit: bool, page: bool) -> SiteInfo {
    SiteInfo { site, suffix, global, gpu_read, gpu_edit, page }
}

/// Every site in forward order. The GPU columns say what `scalpel-gpu`'s
/// forward pass materialises (it has no attention scores or patterns and
/// runs llama-family models only); `page` is the stack's site list.
const SITES: [SiteInfo; 25] = [
    //   site                     name                        global gpu_read gpu_edit page
    row(Site::Embed, "hook_embed", true, false, false, false),
    row(Site::PosEmbed, "hook_pos_embed", true, false, false, false),
    row(Site::ResidPre, "hook_resid_pre", false, true, true, true),
    row(Site::Ln1Normalized, "ln1.hook_normalized", false, true, true, true),
    row(Site::Q, "attn.hook_q", false, true, true, true),
    row(Site::K, "attn.hook_k", false, true, true, true),
    row(Site::V, "attn.hook_v", false, true, true, true),
    row(Site::QNorm, "attn.q_norm.hook_normalized", false, false, false, false),
    row(Site::KNorm, "attn.k_norm.hook_normalized", false, false, false, false),
    row(Site::RotQ, "attn.hook_rot_q", false, true, true, false),
    row(Site::RotK, "attn.hook_rot_k", false, false, false, false),
    row(Site::AttnScores, "attn.hook_attn_scores", false, false, false, false),
    row(Site::Pattern, "attn.hook_pattern", false, false, false, true),
    row(Site::Z, "attn.hook_z", false, true, true, true),
    row(Site::Ln1Post, "ln1_post.hook_normalized", false, false, false, false),
    row(Site::AttnOut, "hook_attn_out", false, true, true, true),
    row(Site::ResidMid, "hook_resid_mid", false, true, true, true),
    row(Site::Ln2Normalized, "ln2.hook_normalized", false, true, true, true),
    row(Site::MlpPre, "mlp.hook_pre", false, true, true, true),
    row(Site::MlpPreLinear, "mlp.hook_pre_linear", false, true, true, false),
    row(Site::MlpPost, "mlp.hook_post", false, true, true, true),
    row(Site::Ln2Post, "ln2_post.hook_normalized", false, false, false, false),
    row(Site::MlpOut, "hook_mlp_out", false, true, true, true),
    row(Site::ResidPost, "hook_resid_post", false, true, true, true),
    row(Site::LnFinalNormalized, "ln_final.hook_normalized", true, true, false, false),
];

const fn info(s: Site) -> &'static SiteInfo {
    &SITES[s as usize]
}

#[derive(Clone, Copy)]
enum Column {
    Any,
    GpuRead,
    GpuEdit,
    Page,
}

const fn sites_where(col: Column) -> ([Site; SITES.len()], usize) {
    let mut out = [Site::Embed; SITES.len()];
    let (mut i, mut n) = (0, 0);
    while i < SITES.len() {
        let s = &SITES[i];
        let on = match col {
            Column::Any => true,
            Column::GpuRead => s.gpu_read,
            Column::GpuEdit => s.gpu_edit,
            Column::Page => s.page,
        };
        if on {
            out[n] = SITES[i].site;
            n += 1;
        }
        i += 1;
    }
    (out, n)
}

const ALL_SITES: ([Site; SITES.len()], usize) = sites_where(Column::Any);
const GPU_READ: ([Site; SITES.len()], usize) = sites_where(Column::GpuRead);
const GPU_EDIT: ([Site; SITES.len()], usize) = sites_where(Column::GpuEdit);
const PAGE: ([Site; SITES.len()], usize) = sites_where(Column::Page);

impl Site {
    /// Every site, in forward order.
    pub const ALL: [Site; SITES.len()] = ALL_SITES.0;

    /// The name inside `blocks.{l}.` (or the whole name for global sites).
    pub const fn suffix(self) -> &'static str {
        info(self).suffix
    }

    pub const fn is_global(self) -> bool {
        info(self).global
    }

    /// Sites the GPU forward pass can read back (and keep on the GPU).
    pub fn gpu_readable() -> &'static [Site] {
        &GPU_READ.0[..GPU_READ.1]
    }

    /// Sites an intervention can be lowered to as an in-place GPU edit.
    pub fn gpu_editable() -> &'static [Site] {
        &GPU_EDIT.0[..GPU_EDIT.1]
    }

    /// Sites the page's intervention stack offers (block sites).
    pub fn in_page() -> &'static [Site] {
        &PAGE.0[..PAGE.1]
    }

    /// Per-head hooks: the axis that indexes heads (with the batch axis).
    pub fn head_axis(self) -> Option<usize> {
        match self {
            Site::Q | Site::K | Site::V | Site::QNorm | Site::KNorm | Site::RotQ | Site::RotK | Site::Z => Some(2),
            Site::AttnScores | Site::Pattern => Some(1),
            _ => None,
        }
    }

    /// The axis that indexes positions (with the batch axis): the query
    /// axis for attention scores and patterns.
    pub fn pos_axis(self) -> usize {
        match self {
            Site::AttnScores | Site::Pattern => 2,
            _ => 1,
        }
    }

    /// A block site from its name inside `blocks.{l}.`, or a global site from its whole name.
    pub fn from_suffix(suffix: &str, global: bool) -> Option<Site> {
        SITES.iter().find(|s| s.global == global && s.suffix == suffix).map(|s| s.site)
    }
}

/// What a model says about its hook points: how many blocks it has and
/// which sites it computes (e.g. no `attn.hook_rot_q` without RoPE).
pub trait HookLayout {
    fn n_layers(&self) -> usize;
    fn has_site(&self, site: Site) -> bool;
    /// The architecture's name, for messages.
    fn arch_name(&self) -> &str;
}

/// A hook point: a site, in a block unless the site is global.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HookPoint {
    pub layer: Option<usize>,
    pub site: Site,
}

impl HookPoint {
    pub fn global(site: Site) -> Self {
        HookPoint { layer: None, site }
    }
    pub fn block(layer: usize, site: Site) -> Self {
        HookPoint { layer: Some(layer), site }
    }

    pub fn name(&self) -> String {
        match self.layer {
            None => self.site.suffix().to_owned(),
            Some(l) => format!("blocks.{l}.{}", self.site.suffix()),
        }
    }

    /// Parses a TransformerLens hook name and checks it against the model.
    pub fn parse(name: &str, model: &impl HookLayout) -> Result<HookPoint, String> {
        let unknown = || {
            format!(
                "unknown hook '{name}': expected e.g. 'blocks.0.hook_resid_pre', 'blocks.3.attn.hook_z', \
                 'hook_embed' or 'ln_final.hook_normalized' (see `hook_names()` / `scalpel hooks`)"
            )
        };
        let point = if let Some(rest) = name.strip_prefix("blocks.") {
            let (layer, suffix) = rest.split_once('.').ok_or_else(unknown)?;
            let layer: usize = layer
                .parse()
                .ok()
                .filter(|l: &usize| l.to_string() == layer)
                .ok_or_else(|| format!("hook '{name}': '{layer}' is not a layer number"))?;
            let site = Site::from_suffix(suffix, false).ok_or_else(unknown)?;
            let n = model.n_layers();
            if layer >= n {
                return Err(format!(
                    "hook '{name}': layer {layer} is out of range; the model has {n} layers (0..={})",
                    n.saturating_sub(1)
                ));
            }
            HookPoint::block(layer, site)
        } else {
            HookPoint::global(Site::from_suffix(name, true).ok_or_else(unknown)?)
        };
        if !model.has_site(point.site) {
            return Err(format!("hook '{name}' does not exist in this {} model", model.arch_name()));
        }
        Ok(point)
    }

    /// Every hook point of a model, in forward order.
    pub fn all(model: &impl HookLayout) -> Vec<HookPoint> {
        let globals = |pre: bool| {
            Site::ALL.into_iter().filter(move |s| s.is_global() && (*s != Site::LnFinalNormalized) == pre && model.has_site(*s))
        };
        let mut v: Vec<HookPoint> = globals(true).map(HookPoint::global).collect();
        for l in 0..model.n_layers() {
            v.extend(Site::ALL.into_iter().filter(|s| !s.is_global() && model.has_site(*s)).map(|s| HookPoint::block(l, s)));
        }
        v.extend(globals(false).map(HookPoint::global));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order() {
        for (i, s) in SITES.iter().enumerate() {
            assert_eq!(s.site as usize, i, "{:?}", s.site);
        }
        assert_eq!(Site::ALL.len(), SITES.len());
    }

    #[test]
    fn gpu_edits_are_readable_and_the_final_norm_is_read_only() {
        for s in Site::gpu_editable() {
            assert!(Site::gpu_readable().contains(s), "{s:?}");
        }
        let read_only: Vec<Site> = Site::gpu_readable().iter().copied().filter(|s| !Site::gpu_editable().contains(s)).collect();
        assert_eq!(read_only, [Site::LnFinalNormalized]);
    }

    struct Tiny;
    impl HookLayout for Tiny {
        fn n_layers(&self) -> usize {
            2
        }
        fn has_site(&self, s: Site) -> bool {
            s != Site::PosEmbed
        }
        fn arch_name(&self) -> &str {
            "tiny"
        }
    }

    #[test]
    fn names_round_trip() {
        for p in HookPoint::all(&Tiny) {
            assert_eq!(HookPoint::parse(&p.name(), &Tiny).unwrap(), p);
        }
        assert!(HookPoint::parse("hook_pos_embed", &Tiny).unwrap_err().contains("does not exist"));
        assert!(HookPoint::parse("blocks.2.hook_resid_pre", &Tiny).unwrap_err().contains("out of range"));
        assert!(HookPoint::parse("blocks.01.hook_resid_pre", &Tiny).unwrap_err().contains("not a layer number"));
    }
}
