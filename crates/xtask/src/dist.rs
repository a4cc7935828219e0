//! `cargo xtask dist`: the playground as a folder of static files that any
//! static host serves (GitHub Pages, a Hugging Face static Space, S3,
//! `python3 -m http.server`), under a sub-path, with the default model
//! fetched from a URL or shipped next to the page. docs/deploy.md.
//!
//! The default model's URL lives in one place, the page's
//! `<meta name="scalpel-model-url">` (index.html; the page reads it, see
//! `web/src/lib.rs` `MODEL_URL_META`); `--model-url` rewrites it in the
//! built copy. Without `--model-url` the model file is copied next to the
//! page, at the URL the meta names.

use crate::setup::{note, step, Ctx};
use crate::{check_flags, flag_value, R};
use std::fs;
use std::path::{Path, PathBuf};

/// The `<meta name>` holding the default model's URL (web/src/lib.rs `MODEL_URL_META`).
pub const MODEL_URL_META: &str = "scalpel-model-url";

pub const USAGE: &str = "\
  cargo xtask dist [--model-url URL] [--base PATH] [--out DIR]
      Build the playground as static files for any static host (docs/deploy.md).
      --model-url  the default model, an http(s) URL of a .gguf file (e.g.
                   https://huggingface.co/USER/REPO/resolve/main/FILE.gguf);
                   without it the model file (98 MB) is copied into the folder.
      --base       the path the site is served under, e.g. /scalpel/ (default
                   ./ : relative links, works under any path ending in /).
      --out        the folder to write (default dist/).";

/// What `cargo xtask dist` was asked for, checked.
#[derive(Debug, PartialEq)]
pub struct DistArgs {
    pub model_url: Option<String>,
    /// Trunk's `--public-url`: `./` or an absolute path ending in `/`.
    pub base: String,
    pub out: Option<PathBuf>,
}

pub fn parse_args(args: &[String]) -> R<DistArgs> {
    check_flags(args, &["--model-url", "--base", "--out"], &[])?;
    let model_url = flag_value(args, "--model-url")?.map(|u| check_model_url(&u)).transpose()?;
    let base = match flag_value(args, "--base")? {
        Some(b) => check_base(&b)?,
        None => "./".to_string(),
    };
    let out = flag_value(args, "--out")?.map(PathBuf::from);
    if out.as_ref().is_some_and(|o| o.as_os_str().is_empty()) {
        return Err("--out needs a folder".into());
    }
    Ok(DistArgs { model_url, base, out })
}

/// `--base`: `./` (relative), or the absolute path the site is served
/// under. A missing trailing `/` is added.
pub fn check_base(b: &str) -> R<String> {
    let b = b.trim();
    if b.is_empty() || b == "." || b == "./" {
        return Ok("./".into());
    }
    if b.contains("://") {
        return Err(format!(
            "--base `{b}` is a URL; give the path the site is served under, e.g. --base /scalpel/ for https://user.github.io/scalpel/"
        ));
    }
    if !b.starts_with('/') {
        return Err(format!("--base `{b}` must start with `/` (e.g. /scalpel/), or be ./ for relative links"));
    }
    if let Some(c) = b.chars().find(|c| !(c.is_ascii_alphanumeric() || "/-._~%!$&'()*+,;=:@".contains(*c))) {
        return Err(format!("--base `{b}` has the character {c:?}, which does not belong in a URL path"));
    }
    if b.contains("//") {
        return Err(format!("--base `{b}` has an empty segment (`//`)"));
    }
    if b.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("--base `{b}` has a `.` or `..` segment; give the path as the browser sees it"));
    }
    Ok(if b.ends_with('/') { b.to_string() } else { format!("{b}/") })
}

/// `--model-url`: an absolute http(s) URL of a GGUF file.
pub fn check_model_url(u: &str) -> R<String> {
    let u = u.trim();
    if u.is_empty() {
        return Err("--model-url is empty".into());
    }
    if let Some(c) = u.chars().find(|c| c.is_whitespace() || c.is_control() || "\"'<>\\`".contains(*c)) {
        return Err(format!("--model-url `{u}` has the character {c:?}; percent-encode it"));
    }
    let lower = u.to_ascii_lowercase();
    let rest = match lower.split_once("://") {
        Some(("https", r)) | Some(("http", r)) => r,
        Some((scheme, _)) => {
            return Err(format!("--model-url `{u}`: the page can only fetch http(s) URLs, not `{scheme}:`"))
        }
        None => {
            return Err(format!(
                "--model-url `{u}` is not an absolute URL; give https://HOST/PATH/FILE.gguf (without --model-url the model is copied next to the page)"
            ))
        }
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hostname = host.rsplit('@').next().unwrap_or(host);
    if hostname.is_empty() || hostname.starts_with(':') {
        return Err(format!("--model-url `{u}` has no host"));
    }
    let path = path.split(['?', '#']).next().unwrap_or("");
    if host.contains("huggingface.co") && path.contains("/blob/") {
        return Err(format!(
            "--model-url `{u}` is a Hugging Face page (/blob/), not the file: use /resolve/ instead of /blob/"
        ));
    }
    if !path.ends_with(".gguf") {
        return Err(format!(
            "--model-url `{u}` does not name a .gguf file; the default model is one GGUF file (https://HOST/PATH/FILE.gguf)"
        ));
    }
    Ok(u.to_string())
}

/// The byte range of the `content` value of `<meta name="scalpel-model-url" content="…">`.
fn meta_content_range(html: &str) -> R<std::ops::Range<usize>> {
    let missing = || format!("index.html has no <meta name=\"{MODEL_URL_META}\" content=\"…\">");
    let at = html.find(&format!("name=\"{MODEL_URL_META}\"")).ok_or_else(missing)?;
    let start = html[..at].rfind('<').ok_or_else(missing)?;
    let end = start + html[start..].find('>').ok_or_else(missing)?;
    let tag = &html[start..end];
    let c = tag.find("content=\"").ok_or_else(missing)? + "content=\"".len();
    let len = tag[c..].find('"').ok_or_else(missing)?;
    Ok(start + c..start + c + len)
}

/// The default model's URL as a page names it (HTML entities undone for `&amp;`).
pub fn page_model_url(html: &str) -> R<String> {
    Ok(html[meta_content_range(html)?].replace("&amp;", "&"))
}

/// The page with its default model's URL replaced.
pub fn with_model_url(html: &str, url: &str) -> R<String> {
    let r = meta_content_range(html)?;
    let escaped = url.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;");
    Ok(format!("{}{escaped}{}", &html[..r.start], &html[r.end..]))
}

/// The path a built page loads its script from (Trunk's public URL: `/`,
/// `./` or e.g. `/scalpel/`), from the `import … from '<base>app-….js'` Trunk writes.
pub fn built_base(html: &str) -> Option<String> {
    let from = html.find("import init")?;
    let quote = from + html[from..].find(" from '")? + " from '".len();
    let path = &html[quote..quote + html[quote..].find('\'')?];
    let file = path.rsplit('/').next()?;
    Some(path[..path.len() - file.len()].to_string())
}

pub fn cmd_dist(args: &[String]) -> R<()> {
    let a = parse_args(args)?;
    let ctx = Ctx::new()?;
    let out = match &a.out {
        Some(o) if o.is_absolute() => o.clone(),
        Some(o) => ctx.root.join(o),
        None => ctx.dist_dir(),
    };
    build(&ctx, &a, &out)
}

/// Builds the static site into `out` (used by `cargo xtask test` too).
pub fn build(ctx: &Ctx, a: &DistArgs, out: &Path) -> R<()> {
    if out == ctx.root || ctx.root.starts_with(out) {
        return Err(format!("--out {} would overwrite the repository; give a new folder", out.display()));
    }
    ctx.ensure_web_toolchain()?;
    if a.model_url.is_none() {
        ctx.ensure_model()?;
    }
    ctx.trunk_build_into(out, Some(&a.base))?;

    step(&format!("Static site in {}", out.display()));
    let index = out.join("index.html");
    let html = fs::read_to_string(&index).map_err(|e| format!("cannot read {}: {e}", index.display()))?;
    let model_url = match &a.model_url {
        Some(url) => {
            fs::write(&index, with_model_url(&html, url)?).map_err(|e| format!("cannot write {}: {e}", index.display()))?;
            note(&format!("default model: {url} (written into index.html)"));
            if url.starts_with("http://") && !is_local(url) {
                note("warning: an http:// model URL cannot be fetched by a page served over https (mixed content); use https://");
            }
            url.clone()
        }
        None => {
            let rel = page_model_url(&html)?;
            if rel.contains("://") || rel.starts_with('/') || rel.split('/').any(|s| s == ".." || s == ".") {
                return Err(format!("index.html names the default model `{rel}`, not a path next to the page; pass --model-url"));
            }
            let dest = out.join(&rel);
            fs::create_dir_all(dest.parent().expect("a file path has a parent")).map_err(|e| e.to_string())?;
            let _ = fs::remove_file(&dest);
            // A hard link where possible (same file system), else a copy.
            if fs::hard_link(ctx.model_path(), &dest).is_err() {
                fs::copy(ctx.model_path(), &dest)
                    .map_err(|e| format!("cannot copy the model to {}: {e}", dest.display()))?;
            }
            note(&format!("default model copied to {} (pass --model-url to fetch it from elsewhere)", dest.display()));
            rel
        }
    };
    // GitHub Pages runs Jekyll unless told not to.
    fs::write(out.join(".nojekyll"), "").map_err(|e| e.to_string())?;
    let (files, bytes) = dir_size(out);
    note(&format!("{files} files, {:.1} MB", bytes as f64 / 1e6));
    note(&format!("served under {}; default model {model_url}", a.base));
    let shown = out.strip_prefix(&ctx.root).unwrap_or(out).display().to_string();
    if a.base == "./" {
        note(&format!("try it: python3 -m http.server -d {shown} 8000, then open http://127.0.0.1:8000/"));
    } else {
        let b = &a.base;
        note(&format!(
            "try it: mkdir -p /tmp/site{b} && cp -r {shown}/. /tmp/site{b} && python3 -m http.server -d /tmp/site 8000, then open http://127.0.0.1:8000{b}"
        ));
    }
    note("without COOP/COEP headers Stop restarts the engine worker (docs/deploy.md)");
    Ok(())
}

fn is_local(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

fn dir_size(p: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                let (f, b) = dir_size(&e.path());
                files += f;
                bytes += b;
            } else {
                files += 1;
                bytes += m.len();
            }
        }
    }
    (files, bytes)
}

#[cfg(test)]
mod test {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn base_paths() {
        assert_eq!(check_base("/scalpel/").unwrap(), "/scalpel/");
        assert_eq!(check_base("/scalpel").unwrap(), "/scalpel/");
        assert_eq!(check_base("/").unwrap(), "/");
        assert_eq!(check_base("/a/b-c_d.e/").unwrap(), "/a/b-c_d.e/");
        assert_eq!(check_base("./").unwrap(), "./");
        assert!(check_base("scalpel/").unwrap_err().contains("must start with `/`"));
        assert!(check_base("https://x.github.io/scalpel/").unwrap_err().contains("is a URL"));
        assert!(check_base("/a b/").unwrap_err().contains("' '"));
        assert!(check_base("/a?x/").unwrap_err().contains("'?'"));
        assert!(check_base("/a//b/").unwrap_err().contains("empty segment"));
        assert!(check_base("/a/../b/").unwrap_err().contains("`..`"));
        assert!(check_base("/\"x/").is_err());
    }

    #[test]
    fn model_urls() {
        let hf = "https://huggingface.co/u/r/resolve/main/m.Q4_1.gguf";
        assert_eq!(check_model_url(hf).unwrap(), hf);
        assert!(check_model_url("http://127.0.0.1:9/hub/m.gguf?download=1").is_ok());
        assert!(check_model_url("https://huggingface.co/u/r/blob/main/m.gguf").unwrap_err().contains("/resolve/"));
        assert!(check_model_url("models/m.gguf").unwrap_err().contains("not an absolute URL"));
        assert!(check_model_url("ftp://x/m.gguf").unwrap_err().contains("`ftp:`"));
        assert!(check_model_url("javascript:alert(1)//x.gguf").unwrap_err().contains("not an absolute URL"));
        assert!(check_model_url("https:///m.gguf").unwrap_err().contains("no host"));
        assert!(check_model_url("https://x/m.safetensors").unwrap_err().contains(".gguf"));
        assert!(check_model_url("https://x/m\".gguf").unwrap_err().contains("percent-encode"));
        assert!(check_model_url("").unwrap_err().contains("empty"));
    }

    #[test]
    fn args() {
        let a = parse_args(&s(&["--base", "/s", "--model-url=https://h/m.gguf"])).unwrap();
        assert_eq!(a, DistArgs { model_url: Some("https://h/m.gguf".into()), base: "/s/".into(), out: None });
        assert_eq!(parse_args(&[]).unwrap().base, "./");
        assert!(parse_args(&s(&["--model"])).unwrap_err().contains("unknown argument"));
        assert!(parse_args(&s(&["--base"])).unwrap_err().contains("needs a value"));
    }

    #[test]
    fn meta_rewrite() {
        let html = "<head>\n  <meta name=\"scalpel-model-url\" content=\"models/a.gguf\" />\n<title>x</title>";
        assert_eq!(page_model_url(html).unwrap(), "models/a.gguf");
        let new = with_model_url(html, "https://h/x.gguf?a=1&b=2").unwrap();
        assert!(new.contains("content=\"https://h/x.gguf?a=1&amp;b=2\""));
        assert_eq!(page_model_url(&new).unwrap(), "https://h/x.gguf?a=1&b=2");
        assert!(page_model_url("<head></head>").unwrap_err().contains("scalpel-model-url"));
    }

    #[test]
    fn base_of_a_build() {
        let page = |b: &str| format!("<script type=\"module\">\nimport init, * as bindings from '{b}app-12ab.js';\n</script>");
        assert_eq!(built_base(&page("/")).as_deref(), Some("/"));
        assert_eq!(built_base(&page("./")).as_deref(), Some("./"));
        assert_eq!(built_base(&page("/scalpel/")).as_deref(), Some("/scalpel/"));
        assert_eq!(built_base("<html></html>"), None);
    }

    /// The page's own index.html names the default model in the meta this module rewrites.
    #[test]
    fn source_index_has_the_meta() {
        let html = fs::read_to_string(crate::root_dir().join("index.html")).unwrap();
        assert_eq!(page_model_url(&html).unwrap(), format!("models/{}", crate::setup::MODEL_FILE));
        let lib = fs::read_to_string(crate::root_dir().join("web/src/lib.rs")).unwrap();
        assert!(lib.contains(&format!("MODEL_URL_META: &str = \"{MODEL_URL_META}\"")), "web/src/lib.rs names another meta");
    }
}
