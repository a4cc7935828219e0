//! A small, safe Markdown subset for exercise texts a link carries:
//! paragraphs (blank-line separated), `- ` / `* ` lists, `**bold**`,
//! `*italic*` and `` `code` ``. Everything becomes text nodes: no raw
//! HTML, links or images, whatever the link holds.

#[derive(Clone, Debug, PartialEq)]
pub enum Inline {
    Text(String),
    Bold(String),
    Italic(String),
    Code(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Paragraph(Vec<Inline>),
    List(Vec<Vec<Inline>>),
}

/// `text` as blocks of inline runs.
pub fn parse(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut para: Vec<&str> = Vec::new();
    let mut items: Vec<String> = Vec::new();
    let flush = |para: &mut Vec<&str>, items: &mut Vec<String>, blocks: &mut Vec<Block>| {
        if !para.is_empty() {
            blocks.push(Block::Paragraph(inline(&para.join(" "))));
            para.clear();
        }
        if !items.is_empty() {
            blocks.push(Block::List(items.iter().map(|i| inline(i)).collect()));
            items.clear();
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() {
            flush(&mut para, &mut items, &mut blocks);
        } else if let Some(item) = t.strip_prefix("- ").or_else(|| t.strip_prefix("* ")) {
            if !para.is_empty() {
                blocks.push(Block::Paragraph(inline(&para.join(" "))));
                para.clear();
            }
            items.push(item.to_string());
        } else if !items.is_empty() && line.starts_with([' ', '\t']) {
            // A continuation line of the last item.
            if let Some(last) = items.last_mut() {
                last.push(' ');
                last.push_str(t);
            }
        } else {
            if !items.is_empty() {
                blocks.push(Block::List(items.iter().map(|i| inline(i)).collect()));
                items.clear();
            }
            para.push(t);
        }
    }
    flush(&mut para, &mut items, &mut blocks);
    blocks
}

/// Inline runs: `code` first (nothing inside it is markup), then **bold**
/// and *italic*; an unmatched marker stays as text.
pub fn inline(s: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        let closed = |marker: &str, rest: &str| -> Option<(String, usize)> {
            let body = rest.strip_prefix(marker)?;
            let end = body.find(marker)?;
            let inner = &body[..end];
            // As in Markdown, `* 3 *` is not emphasis: no space inside the markers.
            let tight = !inner.starts_with(char::is_whitespace) && !inner.ends_with(char::is_whitespace);
            (end > 0 && (marker == "`" || tight)).then(|| (inner.to_string(), marker.len() * 2 + end))
        };
        let found = match c {
            '`' => closed("`", rest).map(|(b, n)| (Inline::Code(b), n)),
            '*' => closed("**", rest).map(|(b, n)| (Inline::Bold(b), n)).or_else(|| closed("*", rest).map(|(b, n)| (Inline::Italic(b), n))),
            _ => None,
        };
        match found {
            Some((run, n)) => {
                if !text.is_empty() {
                    out.push(Inline::Text(std::mem::take(&mut text)));
                }
                out.push(run);
                rest = &rest[n..];
            }
            None => {
                text.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    if !text.is_empty() {
        out.push(Inline::Text(text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_lists_and_inline_runs() {
        let b = parse("First **bold** and *it* with `a*b`.\nsame para\n\n- one\n- two `x`\n\nlast");
        assert_eq!(
            b,
            vec![
                Block::Paragraph(vec![
                    Inline::Text("First ".into()),
                    Inline::Bold("bold".into()),
                    Inline::Text(" and ".into()),
                    Inline::Italic("it".into()),
                    Inline::Text(" with ".into()),
                    Inline::Code("a*b".into()),
                    Inline::Text(". same para".into()),
                ]),
                Block::List(vec![vec![Inline::Text("one".into())], vec![Inline::Text("two ".into()), Inline::Code("x".into())]]),
                Block::Paragraph(vec![Inline::Text("last".into())]),
            ]
        );
    }

    #[test]
    fn html_and_unmatched_markers_stay_text() {
        assert_eq!(inline("<img src=x onerror=alert(1)> 2 * 3 ** 4 `"), vec![Inline::Text("<img src=x onerror=alert(1)> 2 * 3 ** 4 `".into())]);
        assert_eq!(parse(""), vec![]);
        assert_eq!(inline("**"), vec![Inline::Text("**".into())]);
    }
}
