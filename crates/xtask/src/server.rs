//! A small static file server (std only) for the built app and the model.
//!
//! Sends `Cross-Origin-Opener-Policy: same-origin` and
//! `Cross-Origin-Embedder-Policy: require-corp` on every response, so the
//! page is cross-origin isolated (SharedArrayBuffer is available), and the
//! right MIME types (`application/wasm` for streaming compilation).
//! Supports GET/HEAD, keep-alive and single byte ranges.
//!
//! Like the Hugging Face hub's gated repositories, files under
//! `/models/gated/` answer 401 without `Authorization: Bearer
//! GATED_TEST_TOKEN` and 403 with another token: the browser tests load a
//! gated model with the token a user would paste.

use crate::R;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// The token `/models/gated/` accepts (see the module comment).
pub const GATED_TEST_TOKEN: &str = "hf_scalpel_test_token";
const GATED_PREFIX: &str = "/models/gated/";

pub struct Server {
    listener: TcpListener,
    mounts: Arc<Vec<(String, PathBuf)>>,
    log: bool,
}

impl Server {
    pub fn bind(addr: &str, mounts: Vec<(String, PathBuf)>, log: bool) -> R<Server> {
        let listener = TcpListener::bind(addr).map_err(|e| {
            format!("cannot listen on {addr}: {e} (is another server running? try --port)")
        })?;
        Ok(Server { listener, mounts: Arc::new(mounts), log })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub fn run_forever(self) {
        for conn in self.listener.incoming() {
            let Ok(stream) = conn else { continue };
            let mounts = self.mounts.clone();
            let log = self.log;
            thread::spawn(move || {
                let _ = handle_connection(stream, &mounts, log);
            });
        }
    }

    /// Serve on a background thread (used by the e2e tests).
    pub fn spawn(self) -> SocketAddr {
        let addr = self.addr();
        thread::spawn(move || self.run_forever());
        addr
    }
}

fn handle_connection(stream: TcpStream, mounts: &[(String, PathBuf)], log: bool) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        // Request line.
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("/").to_string();
        let version = parts.next().unwrap_or("HTTP/1.0").to_string();
        // Headers.
        let mut range: Option<String> = None;
        let mut authorization: Option<String> = None;
        let mut close = version == "HTTP/1.0";
        let mut header_bytes = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 {
                return Ok(());
            }
            header_bytes += h.len();
            if header_bytes > 64 * 1024 {
                return respond_simple(&mut out, 431, "Request Header Fields Too Large", true);
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim();
                if k == "range" {
                    range = Some(v.to_string());
                } else if k == "authorization" {
                    authorization = Some(v.to_string());
                } else if k == "connection" {
                    let v = v.to_ascii_lowercase();
                    if v.contains("close") {
                        close = true;
                    } else if v.contains("keep-alive") {
                        close = false;
                    }
                }
            }
        }
        let status = if method != "GET" && method != "HEAD" {
            respond_simple(&mut out, 405, "Method Not Allowed", close)?;
            405
        } else if target.starts_with(GATED_PREFIX) && authorization.as_deref() != Some(&format!("Bearer {GATED_TEST_TOKEN}")) {
            let (code, text) = if authorization.is_none() { (401, "Unauthorized") } else { (403, "Forbidden") };
            respond_simple(&mut out, code, text, close)?;
            code
        } else {
            serve_file(&mut out, mounts, &target, method == "HEAD", range.as_deref(), close)?
        };
        if log {
            println!("    {method} {target} -> {status}");
        }
        if close {
            return Ok(());
        }
    }
}

fn common_headers() -> &'static str {
    "Cross-Origin-Opener-Policy: same-origin\r\n\
     Cross-Origin-Embedder-Policy: require-corp\r\n\
     Cross-Origin-Resource-Policy: same-origin\r\n\
     X-Content-Type-Options: nosniff\r\n\
     Cache-Control: no-cache\r\n"
}

fn respond_simple(out: &mut TcpStream, code: u16, text: &str, close: bool) -> io::Result<()> {
    let body = format!("{code} {text}\n");
    write!(
        out,
        "HTTP/1.1 {code} {text}\r\n{}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: {}\r\n\r\n{body}",
        common_headers(),
        body.len(),
        if close { "close" } else { "keep-alive" }
    )?;
    out.flush()
}

pub fn mime_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref() {
        Some("html") | Some("htm") => "text/html; charset=utf-8",
        Some("js") | Some("mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("json") | Some("map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg") | Some("jpeg") => "image/jpeg",
        Some("ico") => "image/x-icon",
        Some("txt") | Some("md") => "text/plain; charset=utf-8",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Map a request target to a file under one of the mounts; None if outside.
pub fn resolve(mounts: &[(String, PathBuf)], target: &str) -> Option<PathBuf> {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let path = percent_decode(path)?;
    for (prefix, dir) in mounts {
        let Some(rest) = path.strip_prefix(prefix.as_str()) else { continue };
        let rel = Path::new(rest);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return None;
        }
        let mut p = dir.join(rel);
        if rest.is_empty() || rest.ends_with('/') {
            p = p.join("index.html");
        }
        return Some(p);
    }
    None
}

fn parse_range(range: &str, len: u64) -> Option<(u64, u64)> {
    let spec = range.strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        (len.saturating_sub(n), len.checked_sub(1)?)
    } else {
        let s: u64 = a.parse().ok()?;
        let e: u64 = if b.is_empty() { len.checked_sub(1)? } else { b.parse::<u64>().ok()?.min(len.checked_sub(1)?) };
        (s, e)
    };
    (start <= end && end < len).then_some((start, end))
}

fn serve_file(
    out: &mut TcpStream,
    mounts: &[(String, PathBuf)],
    target: &str,
    head: bool,
    range: Option<&str>,
    close: bool,
) -> io::Result<u16> {
    let Some(path) = resolve(mounts, target) else {
        respond_simple(out, 404, "Not Found", close)?;
        return Ok(404);
    };
    let Ok(mut file) = File::open(&path) else {
        respond_simple(out, 404, "Not Found", close)?;
        return Ok(404);
    };
    let len = file.metadata()?.len();
    if file.metadata()?.is_dir() {
        respond_simple(out, 404, "Not Found", close)?;
        return Ok(404);
    }
    let (code, start, count, extra) = match range.map(|r| parse_range(r, len)) {
        None => (200u16, 0u64, len, String::new()),
        Some(Some((s, e))) => (206, s, e - s + 1, format!("Content-Range: bytes {s}-{e}/{len}\r\n")),
        Some(None) => {
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\n{}Content-Range: bytes */{len}\r\nContent-Length: 0\r\n\r\n",
                common_headers()
            )?;
            return Ok(416);
        }
    };
    let reason = if code == 206 { "Partial Content" } else { "OK" };
    write!(
        out,
        "HTTP/1.1 {code} {reason}\r\n{}Content-Type: {}\r\nContent-Length: {count}\r\nAccept-Ranges: bytes\r\n{extra}Connection: {}\r\n\r\n",
        common_headers(),
        mime_type(&path),
        if close { "close" } else { "keep-alive" }
    )?;
    if !head {
        file.seek(SeekFrom::Start(start))?;
        io::copy(&mut (&mut file).take(count), out)?;
    }
    out.flush()?;
    Ok(code)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn resolves_inside_mounts_only() {
        let m = vec![("/models/".to_string(), PathBuf::from("/m")), ("/".to_string(), PathBuf::from("/d"))];
        assert_eq!(resolve(&m, "/"), Some(PathBuf::from("/d/index.html")));
        assert_eq!(resolve(&m, "/a.wasm?x=1"), Some(PathBuf::from("/d/a.wasm")));
        assert_eq!(resolve(&m, "/models/x.gguf"), Some(PathBuf::from("/m/x.gguf")));
        assert_eq!(resolve(&m, "/%61.js"), Some(PathBuf::from("/d/a.js")));
        assert_eq!(resolve(&m, "/../etc/passwd"), None);
        assert_eq!(resolve(&m, "/models/%2e%2e/x"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,3-4", 100), None);
    }

    #[test]
    fn wasm_mime() {
        assert_eq!(mime_type(Path::new("a_bg.wasm")), "application/wasm");
        assert_eq!(mime_type(Path::new("a.js")), "text/javascript; charset=utf-8");
    }
}
