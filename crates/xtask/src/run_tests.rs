//! `cargo xtask test`: install, then run every suite, then summarise.

use crate::dist::{self, DistArgs};
use crate::server::Server;
use crate::setup::{self, note, run, step, Ctx};
use crate::{check_flags, flag_value, R};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const STEPS: &[&str] = &["cargo-test", "reference", "web-build", "e2e"];

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Pass,
    Fail,
    Skip,
}

struct Report {
    rows: Vec<(String, Outcome, f64, String)>,
}

impl Report {
    fn add(&mut self, name: &str, o: Outcome, secs: f64, detail: impl Into<String>) {
        self.rows.push((name.to_string(), o, secs, detail.into()));
    }
    fn failed(&self) -> usize {
        self.rows.iter().filter(|r| r.1 == Outcome::Fail).count()
    }
    fn print(&self, total: f64) {
        println!("\n==================== xtask test summary ====================");
        for (name, o, secs, detail) in &self.rows {
            let tag = match o {
                Outcome::Pass => "PASS",
                Outcome::Fail => "FAIL",
                Outcome::Skip => "SKIP",
            };
            let d = if detail.is_empty() { String::new() } else { format!("  ({detail})") };
            println!("  {tag}  {name:<34} {secs:>7.1}s{d}");
        }
        let pass = self.rows.iter().filter(|r| r.1 == Outcome::Pass).count();
        let skip = self.rows.iter().filter(|r| r.1 == Outcome::Skip).count();
        println!("  total time {:.1} min", total / 60.0);
        // The plain closing line CI reads: "N passed, N failed, N skipped".
        println!("steps: {pass} passed, {} failed, {skip} skipped", self.failed());
    }
}

/// Run `f`, time it and record the result under `name`.
fn timed(report: &mut Report, name: &str, f: impl FnOnce() -> R<()>) -> bool {
    let t = Instant::now();
    let r = f();
    let secs = t.elapsed().as_secs_f64();
    match r {
        Ok(()) => {
            report.add(name, Outcome::Pass, secs, "");
            true
        }
        Err(e) => {
            eprintln!("\nxtask: {name} failed: {e}");
            report.add(name, Outcome::Fail, secs, e);
            false
        }
    }
}

fn parse_list(v: Option<String>) -> R<Option<Vec<String>>> {
    let Some(v) = v else { return Ok(None) };
    let items: Vec<String> = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    for i in &items {
        if !STEPS.contains(&i.as_str()) {
            return Err(format!("unknown step `{i}`; steps are {}", STEPS.join(", ")));
        }
    }
    Ok(Some(items))
}

pub fn cmd_test(args: &[String]) -> R<()> {
    check_flags(args, &["--only", "--skip"], &[])?;
    let only = parse_list(flag_value(args, "--only")?)?;
    let skip = parse_list(flag_value(args, "--skip")?)?.unwrap_or_default();
    let wanted = |s: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == s)) && !skip.iter().any(|x| x == s);
    let want_cargo = wanted("cargo-test");
    let want_ref = wanted("reference");
    let want_e2e = wanted("e2e");
    let want_web = wanted("web-build") || want_e2e;
    let need_cli = want_ref || want_e2e;

    let t0 = Instant::now();
    let ctx = Ctx::new()?;
    let mut rep = Report { rows: Vec::new() };

    // ------------------------------------------------------------ installs
    let mut tools_ok = true;
    if want_web {
        tools_ok &= timed(&mut rep, "setup: web toolchain", || ctx.ensure_web_toolchain());
    }
    let model_ok = timed(&mut rep, "setup: default model", || ctx.ensure_model());
    let mut browser_ok = true;
    if want_e2e {
        browser_ok = timed(&mut rep, "setup: chromium + playwright", || {
            ctx.ensure_browser()?;
            if !want_web {
                ctx.ensure_node()?;
            }
            ctx.ensure_e2e_npm()
        });
    }
    let mut venv: Option<PathBuf> = None;
    let mut venv_ok = true;
    if want_ref {
        venv_ok = timed(&mut rep, "setup: python venv", || {
            venv = ctx.ensure_venv()?;
            Ok(())
        });
    }

    // ------------------------------------------------------------ native
    if want_cargo {
        timed(&mut rep, "cargo test --workspace --release", || {
            step("Native tests (cargo test --workspace --release)");
            // The model is fetched above and Mesa's lavapipe installed: tests
            // that need either must not skip.
            run(Command::new("cargo")
                .args(["test", "--workspace", "--release"])
                .env("SCALPEL_REQUIRE_MODEL", "1")
                .env("SCALPEL_REQUIRE_GPU", "1")
                .env("SCALPEL_MODEL_DIR", ctx.models_dir()))
        });
    }

    let scalpel = ctx.release_bin("scalpel");
    let mut cli_ok = false;
    if need_cli {
        cli_ok = timed(&mut rep, "cargo build --release --bin scalpel", || {
            step("Building the CLI (cargo build --release --bin scalpel)");
            run(Command::new("cargo").args(["build", "--release", "--bin", "scalpel"]))
        });
    }

    if want_ref {
        let name = "pytest tests/reference";
        match (&venv, venv_ok, cli_ok, model_ok) {
            (Some(py), true, true, true) => {
                timed(&mut rep, name, || {
                    step("Reference tests (pytest tests/reference)");
                    note(&format!("SCALPEL_BIN={}", scalpel.display()));
                    run(Command::new(py)
                        .args(["-m", "pytest", "tests/reference", "-ra"])
                        .env("SCALPEL_BIN", &scalpel)
                        .env("SCALPEL_MODEL", ctx.model_path())
                        .env("SCALPEL_MODEL_DIR", ctx.models_dir()))
                });
            }
            (None, true, _, _) => rep.add(name, Outcome::Skip, 0.0, "no tests/reference/requirements.txt"),
            _ => rep.add(name, Outcome::Skip, 0.0, "set-up, CLI build or model failed"),
        }
    }

    // ------------------------------------------------------------ web
    let mut web_ok = false;
    if want_web {
        if tools_ok {
            web_ok = timed(&mut rep, "trunk build --release", || ctx.trunk_build());
        } else {
            rep.add("trunk build --release", Outcome::Skip, 0.0, "toolchain set-up failed");
        }
    }

    // The static build the e2e suite serves from a plain server (no
    // COOP/COEP) under a sub-path, its model at a URL of that server
    // (tests/e2e/dist.test.mjs).
    let e2e_dist = E2eDist::new(&ctx)?;
    if want_e2e {
        let name = "xtask dist --base /scalpel/ (for e2e)";
        if web_ok {
            timed(&mut rep, name, || {
                let a = DistArgs { model_url: Some(e2e_dist.model_url.clone()), base: E2eDist::BASE.into(), out: None };
                dist::build(&ctx, &a, &e2e_dist.dir)
            });
        } else {
            rep.add(name, Outcome::Skip, 0.0, "needs the web build");
        }
    }

    if want_e2e {
        let name = "e2e (Playwright, headless Chromium)";
        if web_ok && cli_ok && browser_ok && model_ok {
            timed(&mut rep, name, || run_e2e(&ctx, &scalpel, &e2e_dist));
        } else {
            rep.add(name, Outcome::Skip, 0.0, "needs web build, CLI, model and browser");
        }
    }

    rep.print(t0.elapsed().as_secs_f64());
    if rep.failed() > 0 {
        Err(format!("{} step(s) failed", rep.failed()))
    } else {
        Ok(())
    }
}

/// Where `tests/e2e/dist.test.mjs` finds its static build and serves it.
struct E2eDist {
    dir: PathBuf,
    /// The default model's URL written into the build: the test's own
    /// server (a free port chosen here) serves the model file there.
    model_url: String,
}

impl E2eDist {
    const BASE: &'static str = "/scalpel/";

    fn new(ctx: &Ctx) -> R<E2eDist> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port for the static-build test: {e}"))?
            .port();
        Ok(E2eDist {
            dir: ctx.root.join("target").join("e2e-dist"),
            model_url: format!("http://127.0.0.1:{port}/hub/{}", setup::MODEL_FILE),
        })
    }
}

fn run_e2e(ctx: &Ctx, scalpel: &std::path::Path, e2e_dist: &E2eDist) -> R<()> {
    step("End-to-end tests (node --test tests/e2e, headless Chromium)");
    let srv = Server::bind("127.0.0.1:0", ctx.mounts(), false)?;
    let addr = srv.spawn();
    let url = format!("http://{addr}/");
    let shots = ctx.screenshots_dir();
    fs::create_dir_all(&shots).map_err(|e| e.to_string())?;
    note(&format!("serving dist/ at {url}; screenshots in {}", shots.display()));
    let dir = ctx.root.join("tests/e2e");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".test.mjs")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err("no tests/e2e/*.test.mjs files".into());
    }
    run(Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .args(&files)
        .env("SCALPEL_URL", &url)
        .env("SCALPEL_BIN", scalpel)
        .env("SCALPEL_MODEL", ctx.model_path())
        .env("SCALPEL_MODEL_DIR", ctx.models_dir())
        .env("SCALPEL_SCREENSHOTS", &shots)
        .env("SCALPEL_CHROMIUM", setup::CHROMIUM)
        .env("SCALPEL_DIST_DIR", &e2e_dist.dir)
        .env("SCALPEL_DIST_BASE", E2eDist::BASE)
        .env("SCALPEL_DIST_MODEL_URL", &e2e_dist.model_url))
}
