//! `cargo xtask serve` and `cargo xtask test`.
//!
//! Both commands install what they need (idempotently, saying what they do),
//! so a fresh machine needs nothing but Rust, Node/npm and Python:
//!
//! * `serve` — wasm target, pinned Trunk, wasm-bindgen-cli, wasm-opt, the
//!   default model; builds the web app (`trunk build --release`) and serves
//!   it on http://127.0.0.1:8080 with cross-origin isolation headers.
//! * `test` — the same installs plus Chromium, a Python venv and the
//!   Playwright driver; then runs every test suite and prints a summary.
//! * `dist` — the same build as a folder for any static host, under a
//!   sub-path, with the default model from a URL (`dist.rs`, docs/deploy.md).

mod dist;
mod server;
mod setup;
mod run_tests;

use std::path::PathBuf;
use std::process::ExitCode;

pub type R<T> = Result<T, String>;

const USAGE_TEXT: &str = "\
Usage:
  cargo xtask serve [--port PORT] [--host HOST] [--no-build]
      Install the toolchain and the default model, build the web app
      (trunk build --release) and serve it (default http://127.0.0.1:8080).
  cargo xtask test [--only STEP[,STEP...]] [--skip STEP[,STEP...]]
      Install what the tests need, then run every suite and print a summary.
      Steps: cargo-test, reference, web-build, wasm-kernels, e2e.
  cargo xtask bench [--no-build]
      The page's benchmark next to llama.cpp's wasm build and the native CLI
      in headless Chromium (tests/e2e/benchmark.mjs); prints a table.
{DIST}
  cargo xtask fetch-model
      Only download the default model into models/.

Environment: CARGO_TARGET_DIR is honoured. Tools go to .tools/ (git-ignored),
the default model to models/ (git-ignored).";

fn usage() -> String {
    USAGE_TEXT.replace("{DIST}", dist::USAGE)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "serve" => cmd_serve(rest),
        "test" => run_tests::cmd_test(rest),
        "dist" => dist::cmd_dist(rest),
        "bench" => run_tests::cmd_bench(rest),
        // Not in the README (serve and test do it themselves); the CLI's
        // "default model not found" message points here.
        "fetch-model" => setup::Ctx::new().and_then(|c| c.ensure_model()),
        "-h" | "--help" | "help" => {
            println!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Parse `--name value` style flags; returns (flags, positional).
pub fn flag_value(args: &[String], name: &str) -> R<Option<String>> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == name {
            return it
                .next()
                .cloned()
                .map(Some)
                .ok_or_else(|| format!("{name} needs a value"));
        }
        if let Some(v) = a.strip_prefix(&format!("{name}=")) {
            return Ok(Some(v.to_string()));
        }
    }
    Ok(None)
}

pub fn check_flags(args: &[String], with_value: &[&str], switches: &[&str]) -> R<()> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let name = a.split('=').next().unwrap_or(a);
        if with_value.contains(&name) {
            if !a.contains('=') {
                i += 1;
            }
        } else if !switches.contains(&a.as_str()) {
            return Err(format!("unknown argument `{a}`\n\n{}", usage()));
        }
        i += 1;
    }
    Ok(())
}

fn cmd_serve(args: &[String]) -> R<()> {
    check_flags(args, &["--port", "--host"], &["--no-build"])?;
    let port: u16 = match flag_value(args, "--port")? {
        Some(p) => p.parse().map_err(|_| format!("bad --port `{p}`"))?,
        None => 8080,
    };
    let host = flag_value(args, "--host")?.unwrap_or_else(|| "127.0.0.1".into());
    let no_build = args.iter().any(|a| a == "--no-build");

    let ctx = setup::Ctx::new()?;
    if !no_build {
        ctx.ensure_web_toolchain()?;
        // llama.cpp's wasm build, for the Benchmark panel's comparison (`Ctx::mounts`).
        ctx.ensure_e2e_npm()?;
    }
    ctx.ensure_model()?;
    if !no_build {
        ctx.trunk_build()?;
    }
    let dist = ctx.dist_dir();
    if !dist.join("index.html").is_file() {
        return Err(format!(
            "{} has no index.html; run without --no-build",
            dist.display()
        ));
    }
    let html = std::fs::read_to_string(dist.join("index.html")).map_err(|e| format!("cannot read dist/index.html: {e}"))?;
    if let Some(base) = dist::built_base(&html).filter(|b| b != "/" && b != "./") {
        return Err(format!(
            "dist/ was built for the sub-path {base} (`cargo xtask dist --base {base}`); `serve` serves at /: run it without --no-build"
        ));
    }
    let model_url = dist::page_model_url(&html).map_err(|e| format!("dist/{e}: it is an older build; run without --no-build"))?;
    let srv = server::Server::bind(&format!("{host}:{port}"), ctx.mounts(), true)?;
    setup::step(&format!(
        "Serving {} and the default model at http://{}/ (Ctrl-C to stop)",
        dist.display(),
        srv.addr()
    ));
    if model_url.contains("://") {
        println!("    default model URL: {model_url} (dist/ was built by `cargo xtask dist --model-url`)");
    } else {
        println!("    default model URL: http://{}/{model_url}", srv.addr());
    }
    srv.run_forever();
    Ok(())
}

pub fn root_dir() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}
