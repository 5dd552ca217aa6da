//! Container start: create → run `/bin/true` → destroy, with Gantry's runtime (overlay root over the host's `/`,
//! every namespace including network, a cgroup with memory and pids limits, capabilities dropped, seccomp) and,
//! in the same run, the peers measured by `../shared/tools/peer-container-bench` (fork/exec, unshare, bwrap, crun,
//! runc on a busybox rootfs). Prints one JSON line per runtime and the ratios. Root only.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin container_start [RUNS]`

use anyhow::{Context, Result};
use gantry_bench::{count_arg, gantry_bin, quantile, scratch};
use gantry_model::Resources;
use gantry_worker::runtime::{
    ContainerConfig, ContainerRuntime, NamespacesRuntime, RuntimeOptions,
};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let runs = count_arg(200)?;
    let dir = scratch("start");
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    let name = format!("bench{}", std::process::id());
    let runtime = NamespacesRuntime::new(RuntimeOptions {
        worker_name: name.clone(),
        state_dir: dir.join("containers"),
        init_exe: gantry_bin(),
        extra_masks: vec![dir.clone()],
        user_namespace: true,
    })?;
    let config = |i: usize| ContainerConfig {
        id: format!("{name}-{i}"),
        hostname: "bench".into(),
        workspace: workspace.clone(),
        workspace_mount: Default::default(),
        steps: vec!["/bin/true".into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        resources: Resources::default(),
        masked_paths: Vec::new(),
        timeout: Duration::from_secs(30),
        image: Default::default(),
        services: Vec::new(),
    };
    let mut ms = Vec::with_capacity(runs);
    for i in 0..runs + 5 {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let started = Instant::now();
        let container = runtime.start(config(i), tx)?;
        let outcome = container.wait()?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        while rx.try_recv().is_ok() {}
        anyhow::ensure!(outcome.failure.is_none(), "run {i} failed: {outcome:?}");
        if i >= 5 {
            ms.push(took); // the first few warm the page cache
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ours = quantile(&mut ms, 0.5);
    println!(
        "{}",
        serde_json::json!({"runtime": "gantry", "what": "create, /bin/sh -c /bin/true, destroy; image host, all namespaces, cgroup, seccomp",
                            "runs": runs, "p10_ms": quantile(&mut ms, 0.1), "p50_ms": ours, "p99_ms": quantile(&mut ms, 0.99)})
    );
    peers(runs.min(100), ours)
}

/// Runs the peers' bench and prints their figures and our ratio to each.
fn peers(runs: usize, ours: f64) -> Result<()> {
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
    for peer in ["crun", "runc"] {
        if let Some(m) = median(peer) {
            let net = m - wrapper; // crun and runc are started through a shell wrapper for unique ids
            println!(
                "{}",
                serde_json::json!({"ratio": format!("gantry / {peer} (net of its wrapper)"), "peer_ms": net, "value": ours / net})
            );
        }
    }
    for peer in ["unshare", "unshare-net", "bwrap", "fork-exec"] {
        if let Some(m) = median(peer) {
            println!(
                "{}",
                serde_json::json!({"ratio": format!("gantry / {peer}"), "peer_ms": m, "value": ours / m})
            );
        }
    }
    Ok(())
}
