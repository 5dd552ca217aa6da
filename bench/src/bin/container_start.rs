//! Container start: create → run `/bin/true` → destroy, with Gantry's runtime (overlay root over the host's `/`,
//! every namespace including network, a cgroup with memory and pids limits, capabilities dropped, seccomp), the
//! same without a network namespace of its own, and, in the same run, the peers measured by
//! `../shared/tools/peer-container-bench` (fork/exec, unshare, bwrap, crun, runc on a busybox rootfs). Prints one
//! JSON line per runtime and the ratios. Root only.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin container_start [RUNS]`

use anyhow::{Context, Result};
use gantry_bench::{count_arg, gantry_bin, quantile, scratch};
use gantry_model::Resources;
use gantry_worker::runtime::{
    ContainerConfig, ContainerRuntime, ImageRoot, NamespacesRuntime, RuntimeOptions,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many containers are started before measuring (page cache, the first spare init).
const WARMUP: usize = 5;

fn main() -> Result<()> {
    let runs = count_arg(200)?;
    let dir = scratch("start");
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    // The peers run /bin/true in a busybox rootfs; ours gets the same one, as an image of one layer.
    let busybox = busybox_rootfs(&dir.join("busybox"))?;
    let ours = measure(&dir, &workspace, runs, Some(&busybox), false)?;
    print(
        "gantry",
        "busybox rootfs, all namespaces, user included",
        runs,
        &ours,
    );
    let host_net = measure(&dir, &workspace, runs, Some(&busybox), true)?;
    print(
        "gantry-host-net",
        "busybox rootfs, all namespaces but network and user",
        runs,
        &host_net,
    );
    let host_image = measure(&dir, &workspace, runs, None, false)?;
    print(
        "gantry-host-image",
        "image host (an overlay of the host's /), all namespaces, user included",
        runs,
        &host_image,
    );
    compare_guards(&dir, &workspace, runs, &busybox)?;
    let _ = std::fs::remove_dir_all(&dir);
    peers(runs.min(100), ours[1], host_net[1])
}

/// What the terminal guards cost (a session per container, and seccomp's rules on `ioctl` and `socket`
/// arguments): two runtimes, one with them and one without, starting containers in turn (A, B, A, B…) so that
/// the VM's swings fall on both alike, three times `runs` each; besides each side's p50, the p50 of the
/// difference within each pair (what drifts between pairs cancels out).
fn compare_guards(dir: &Path, workspace: &Path, runs: usize, rootfs: &Path) -> Result<()> {
    let runs = runs * 3;
    let with = runtime(dir, "gw", false)?;
    let without = runtime(dir, "go", false)?.without_session_and_argument_rules_for_measuring()?;
    let (mut a, mut b, mut diff) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs + WARMUP {
        // Which goes first alternates too: the second of a pair finds caches the first warmed.
        let (took_a, took_b) = if i % 2 == 0 {
            let a = start_once(&with, &config("gw", i, workspace, Some(rootfs)))?;
            (
                a,
                start_once(&without, &config("go", i, workspace, Some(rootfs)))?,
            )
        } else {
            let b = start_once(&without, &config("go", i, workspace, Some(rootfs)))?;
            (
                start_once(&with, &config("gw", i, workspace, Some(rootfs)))?,
                b,
            )
        };
        if i >= WARMUP {
            a.push(took_a);
            b.push(took_b);
            diff.push(took_a - took_b);
        }
    }
    let [a50, b50] = [&mut a, &mut b].map(|ms| quantile(ms, 0.5));
    let paired = quantile(&mut diff, 0.5);
    println!(
        "{}",
        serde_json::json!({
            "compare": "terminal guards: setsid per container + seccomp argument rules (TIOCSTI, TIOCLINUX, AF_VSOCK, AF_ALG)",
            "runs": runs,
            "with_p50_ms": a50,
            "without_p50_ms": b50,
            "cost_p50_ms": a50 - b50,
            "paired_cost_p50_ms": paired,
            "with_p10_ms": quantile(&mut a, 0.1),
            "without_p10_ms": quantile(&mut b, 0.1),
            "target": "cost <= 0.2 ms"
        })
    );
    Ok(())
}

/// A rootfs like the peers' bench makes: a static busybox as `/bin/busybox`, `sh` and `true` links to it.
fn busybox_rootfs(root: &Path) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    anyhow::ensure!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static"
    );
    for sub in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(sub))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    for link in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(link))?;
    }
    Ok(root.to_path_buf())
}

/// p10, p50 and p99 in ms of `runs` starts of a runtime of its own, on `rootfs` as the image's one layer (none:
/// image `host`), with the host's network if `host_net`.
fn measure(
    dir: &Path,
    workspace: &Path,
    runs: usize,
    rootfs: Option<&Path>,
    host_net: bool,
) -> Result<[f64; 3]> {
    let name = format!(
        "{}{}",
        if host_net { "h" } else { "n" },
        if rootfs.is_some() { "b" } else { "h" }
    );
    let runtime = runtime(dir, &name, host_net)?;
    let mut ms = Vec::with_capacity(runs);
    for i in 0..runs + WARMUP {
        let took = start_once(&runtime, &config(&name, i, workspace, rootfs))?;
        if i >= WARMUP {
            ms.push(took);
        }
    }
    Ok([0.1, 0.5, 0.99].map(|q| quantile(&mut ms, q)))
}

/// A runtime of its own (`tag` tells its containers apart), with the host's network if `host_net`.
fn runtime(dir: &Path, tag: &str, host_net: bool) -> Result<NamespacesRuntime> {
    let runtime = NamespacesRuntime::new(RuntimeOptions {
        worker_name: format!("bench{}{tag}", std::process::id()),
        state_dir: dir.join("containers"),
        init_exe: gantry_bin(),
        extra_masks: vec![dir.to_path_buf()],
        // sysfs can be mounted only by the owner of the network namespace, which a user namespace of the
        // container's own is not when it shares the host's network.
        user_namespace: !host_net,
        host_paths: vec![],
    })?;
    // Its walk for the host's private files runs on every core for ~1 s: not while we measure.
    runtime.wait_for_private_files();
    Ok(if host_net {
        runtime.share_host_network_for_measuring()
    } else {
        runtime
    })
}

/// The `i`th container of the runtime tagged `tag`: `/bin/true` on `rootfs` (none: image `host`).
fn config(tag: &str, i: usize, workspace: &Path, rootfs: Option<&Path>) -> ContainerConfig {
    ContainerConfig {
        id: format!("bench{}{tag}-{i}", std::process::id()),
        hostname: "bench".into(),
        workspace: workspace.to_path_buf(),
        workspace_mount: Default::default(),
        steps: vec!["/bin/true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        resources: Resources::default(),
        masked_paths: Vec::new(),
        timeout: Duration::from_secs(30),
        image: ImageRoot {
            layers: rootfs.into_iter().map(Path::to_path_buf).collect(),
            ..Default::default()
        },
        services: Vec::new(),
    }
}

/// One create → run → destroy, in ms.
fn start_once(runtime: &NamespacesRuntime, config: &ContainerConfig) -> Result<f64> {
    let (tx, mut rx) = tokio::sync::mpsc::channel(gantry_worker::runtime::EVENTS_CAPACITY);
    let started = Instant::now();
    let container = runtime.start(config.clone(), tx)?;
    let outcome = container.wait()?;
    let took = started.elapsed().as_secs_f64() * 1000.0;
    while rx.try_recv().is_ok() {}
    anyhow::ensure!(
        outcome.failure.is_none(),
        "{} failed: {outcome:?}",
        config.id
    );
    Ok(took)
}

fn print(runtime: &str, namespaces: &str, runs: usize, [p10, p50, p99]: &[f64; 3]) {
    let what = format!("create, /bin/sh -c /bin/true, destroy; {namespaces}, cgroup, seccomp");
    println!(
        "{}",
        serde_json::json!({"runtime": runtime, "what": what, "runs": runs, "p10_ms": p10, "p50_ms": p50, "p99_ms": p99})
    );
}

/// Runs the peers' bench and prints their figures and our ratios to each.
fn peers(runs: usize, ours: f64, host_net: f64) -> Result<()> {
    let tool = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/tools/peer-container-bench"
    ));
    if !tool.exists() {
        println!(
            "{}",
            serde_json::json!({"peers": "skipped", "reason": format!("{} is not here (it lives beside the repository, not in it)", tool.display())})
        );
        return Ok(());
    }
    let out = std::process::Command::new(&tool)
        .arg(runs.to_string())
        .output()
        .context("running the peers' bench")?;
    anyhow::ensure!(
        out.status.success(),
        "the peers' bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let median = |peer: &str| {
        lines
            .iter()
            .find(|l| l["peer"] == peer)
            .and_then(|l| l["median_ms"].as_f64())
    };
    let wrapper = median("wrapper").unwrap_or(0.0);
    for line in &lines {
        println!("{line}");
    }
    let ratio = |what: String, peer_ms: f64| {
        for (runtime, value) in [("gantry", ours), ("gantry-host-net", host_net)] {
            println!(
                "{}",
                serde_json::json!({"ratio": format!("{runtime} / {what}"), "peer_ms": peer_ms, "value": value / peer_ms})
            );
        }
    };
    for peer in ["crun", "runc"] {
        if let Some(m) = median(peer) {
            // crun and runc are started through a shell wrapper for unique ids.
            ratio(format!("{peer} (net of its wrapper)"), m - wrapper);
        }
    }
    for peer in ["unshare", "unshare-net", "bwrap", "fork-exec"] {
        if let Some(m) = median(peer) {
            ratio(peer.to_string(), m);
        }
    }
    Ok(())
}
