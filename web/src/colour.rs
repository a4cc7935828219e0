//! The colours of heatmaps and the text on them (host-testable: no DOM).

/// A colour as (red, green, blue).
pub type Rgb = (u8, u8, u8);

pub fn css(c: Rgb) -> String {
    format!("rgb({},{},{})", c.0, c.1, c.2)
}

/// Diverging colour for `v` on a scale symmetric around 0 with `max` = |v|max:
/// blue (negative) – white – red (positive). Readable in print (no reliance
/// on background images) and for red–green colour blindness.
pub fn diverging(v: f32, max: f32) -> Rgb {
    let t = if max > 0.0 { (v / max).clamp(-1.0, 1.0) } else { 0.0 };
    let (r, g, b) = if t >= 0.0 { (178.0, 24.0, 43.0) } else { (33.0, 102.0, 172.0) };
    let a = t.abs();
    let mix = |c: f32| (255.0 + (c - 255.0) * a).round() as u8;
    (mix(r), mix(g), mix(b))
}

/// Sequential colour for `t` in [0, 1]: white → dark blue.
pub fn sequential(t: f32) -> Rgb {
    let t = t.clamp(0.0, 1.0);
    let mix = |a: f32, b: f32| (a + (b - a) * t).round() as u8;
    (mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

/// WCAG relative luminance of a colour.
fn luminance(c: Rgb) -> f64 {
    let lin = |v: u8| {
        let v = v as f64 / 255.0;
        if v <= 0.03928 { v / 12.92 } else { ((v + 0.055) / 1.055).powf(2.4) }
    };
    0.2126 * lin(c.0) + 0.7152 * lin(c.1) + 0.0722 * lin(c.2)
}

/// WCAG contrast ratio of two colours.
fn contrast(a: Rgb, b: Rgb) -> f64 {
    let (la, lb) = (luminance(a), luminance(b));
    (la.max(lb) + 0.05) / (la.min(lb) + 0.05)
}

/// The text colour, white or black, with the higher WCAG contrast on `bg`:
/// at least 4.58:1 on any background (where the two are equal), so every
/// cell passes WCAG AA (4.5:1).
pub fn ink(bg: Rgb) -> &'static str {
    if contrast(bg, (255, 255, 255)) > contrast(bg, (0, 0, 0)) {
        "#fff"
    } else {
        "#000"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heatmap_text_meets_wcag_aa_on_every_scale_colour() {
        let mut worst = f64::INFINITY;
        for i in 0..=1000 {
            let t = i as f32 / 1000.0;
            for bg in [sequential(t), diverging(t, 1.0), diverging(-t, 1.0)] {
                let ink = if ink(bg) == "#fff" { (255, 255, 255) } else { (0, 0, 0) };
                worst = worst.min(contrast(bg, ink));
            }
        }
        assert!(worst >= 4.5, "lowest contrast {worst:.2}:1");
    }
}
