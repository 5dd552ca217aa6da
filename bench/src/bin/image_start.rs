//! A job from a cached OCI image, end to end: `gantry run` of a pipeline of one-step jobs (`/bin/true`) on a
//! busybox image already in the layer store, with Podman's `podman run --rm --network none` of the same image
//! measured side by side. Gantry's figure is the cost of one more job in a run: (time of a run with 11 jobs −
//! time of a run with 1 job) / 10, which takes out what every `gantry run` pays once (process start, seccomp
//! compilation, the user namespace probe, the sweep). The image is built offline by umoci from Debian's
//! busybox-static. Root only; installs podman if it is missing (or reports it skipped).
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin image_start [RUNS]`

use anyhow::{Context, Result, bail, ensure};
use gantry_bench::{count_arg, gantry_bin, quantile, scratch};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const BUSYBOX: &str = "/bin/busybox";
const PODMAN_IMAGE: &str = "localhost/gantry-bench-busybox:latest";

fn main() -> Result<()> {
    let runs = count_arg(30)?;
    let dir = scratch("image");
    std::fs::create_dir_all(&dir)?;
    // Image paths in pipeline files must be clean (no `..`).
    let dir = dir.canonicalize()?;
    let result = measure(&dir, runs);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(dir: &Path, runs: usize) -> Result<()> {
    let layout = busybox_layout(dir)?;
    let image = format!("oci:{}:busybox", layout.display());
    let config = dir.join("gantry.toml");
    std::fs::write(
        &config,
        format!("[worker]\nimage_dirs = [{:?}]\n", dir.display().to_string()),
    )?;
    let one = tree(dir, "one", &image, 1)?;
    let eleven = tree(dir, "eleven", &image, 11)?;
    let data = dir.join("data");
    let gantry_run = |tree: &Path| -> Result<f64> {
        let started = Instant::now();
        let status = Command::new(gantry_bin())
            .arg("run")
            .arg(tree)
            .arg("--data-dir")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "gantry run {} failed", tree.display());
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    gantry_run(&one)?; // unpacks the image into the layer store: from here on it is cached
    let (mut t1, mut t11) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        t1.push(gantry_run(&one)?);
        t11.push(gantry_run(&eleven)?);
    }
    let (m1, m11) = (quantile(&mut t1, 0.5), quantile(&mut t11, 0.5));
    let per_job = (m11 - m1) / 10.0;
    println!(
        "{}",
        serde_json::json!({"runtime": "gantry", "what": "one more job in a gantry run: cached busybox OCI image, step /bin/true, all namespaces, cgroup, seccomp",
                            "runs": runs, "run_1_job_p50_ms": m1, "run_11_jobs_p50_ms": m11, "per_job_ms": per_job})
    );
    match podman(&layout, runs) {
        Ok(podman_ms) => {
            println!(
                "{}",
                serde_json::json!({"runtime": "podman", "what": "podman run --rm --network none, local busybox image, /bin/true (net of its wrapper)",
                                    "runs": runs, "p50_ms": podman_ms})
            );
            println!(
                "{}",
                serde_json::json!({"ratio": "gantry per job / podman run", "value": per_job / podman_ms})
            );
        }
        Err(e) => println!(
            "{}",
            serde_json::json!({"runtime": "podman", "skipped": format!("{e:#}")})
        ),
    }
    Ok(())
}

/// A working tree whose `.gantry.yml` has `jobs` one-step jobs on `image`.
fn tree(dir: &Path, name: &str, image: &str, jobs: usize) -> Result<PathBuf> {
    let tree = dir.join(name);
    std::fs::create_dir_all(&tree)?;
    let mut file = format!("image: {image}\njobs:\n");
    for i in 0..jobs {
        file.push_str(&format!("  j{i}:\n    steps: [/bin/true]\n"));
    }
    std::fs::write(tree.join(".gantry.yml"), file)?;
    Ok(tree)
}

/// `DIR/layout:busybox`, built by umoci from the host's busybox-static.
fn busybox_layout(dir: &Path) -> Result<PathBuf> {
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: apt-get install busybox-static"
    );
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let image = format!("{}:busybox", layout.display());
    let (layout_arg, bundle_arg) = (path_str(&layout)?, path_str(&bundle)?);
    run("umoci", &["init", "--layout", layout_arg])?;
    run("umoci", &["new", "--image", &image])?;
    run("umoci", &["unpack", "--image", &image, bundle_arg])?;
    let bin = bundle.join("rootfs/bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(BUSYBOX, bin.join("busybox"))?;
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    run("umoci", &["repack", "--image", &image, bundle_arg])?;
    run(
        "umoci",
        &["config", "--image", &image, "--config.cmd", "/bin/sh"],
    )?;
    Ok(layout)
}

/// Podman's p50 for `podman run --rm --network none` of the same image, copied into its storage.
fn podman(layout: &Path, runs: usize) -> Result<f64> {
    if Command::new("podman").arg("--version").output().is_err() {
        let status = Command::new("apt-get")
            .args(["install", "-y", "-qq", "podman"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .context("apt-get")?;
        ensure!(
            status.success(),
            "podman is not installed and apt-get install podman failed"
        );
    }
    let source = format!("oci:{}:busybox", layout.display());
    let destination = format!("containers-storage:{PODMAN_IMAGE}");
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            &source,
            &destination,
        ],
    )?;
    // Podman 4.3's crun refuses this host's hybrid cgroups (the unified mount lists `hugetlb`), and the
    // sandbox refuses its default rlimits: hide the unified mount in a private mount namespace, as for crun in
    // the container bench, and ask for modest limits. The wrapper's own cost is measured and taken out.
    let podman_run = format!(
        "podman run --rm --network none --cgroup-manager cgroupfs --ulimit nofile=1024:1024 \
         --ulimit nproc=1024:1024 {PODMAN_IMAGE} /bin/true"
    );
    let time = |inner: &str| -> Result<f64> {
        let script = format!("mount -t tmpfs none /sys/fs/cgroup/unified && exec {inner}");
        let started = Instant::now();
        run(
            "unshare",
            &["-m", "--propagation", "private", "sh", "-c", &script],
        )?;
        Ok(started.elapsed().as_secs_f64() * 1000.0)
    };
    time(&podman_run)?; // warm
    let (mut ms, mut wrapper) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        ms.push(time(&podman_run)?);
        wrapper.push(time("/bin/true")?);
    }
    let _ = Command::new("podman")
        .args(["rmi", "-f", PODMAN_IMAGE])
        .output();
    Ok(quantile(&mut ms, 0.5) - quantile(&mut wrapper, 0.5))
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("{program} (apt-get install {program})"))?;
    if !out.status.success() {
        bail!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn path_str(path: &Path) -> Result<&str> {
    path.to_str().context("a non-UTF-8 path")
}
