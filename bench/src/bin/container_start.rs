//! Container start: create → run `/bin/true` → destroy, with Gantry's runtime (overlay root, every namespace
//! including network, a cgroup with memory and pids limits, capabilities dropped, seccomp) on a busybox rootfs, the
//! same without a network namespace of its own, and on image `host` (an overlay of the host's `/`); in the same run
//! the peers of the bench's own harness, `gantry_bench::peers` (fork/exec, unshare, bwrap, crun, runc on a busybox
//! rootfs). The VMs swing by 1.5×, so every round starts one container of each Gantry variant and runs each peer
//! once, in an order shuffled anew each round (see `order`). Prints one JSON line per runtime and per peer, and the
//! ratios; the extra cost of `network: egress` (a veth into the worker's bridge, an address, a route, NAT) over
//! the default loopback-only namespace, from the same rounds; then the terminal guards' A/B. Root only.
//!
//! Run: `cargo build --release && cargo run --release -p gantry-bench --bin container_start [RUNS]`

use anyhow::Result;
use gantry_bench::peers::{self, Peer};
use gantry_bench::{count_arg, gantry_bin, quantile, scratch};
use gantry_model::Resources;
use gantry_worker::runtime::{
    ContainerConfig, ContainerRuntime, ImageRoot, NamespacesRuntime, Network, RuntimeOptions,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How many rounds run before measuring (page cache, the first spare init, crun's and runc's first start).
const WARMUP: usize = 5;

/// One of Gantry's variants: its runtime, the image it starts, and its starts' times in ms.
struct Variant {
    name: &'static str,
    namespaces: &'static str,
    tag: &'static str,
    runtime: NamespacesRuntime,
    rootfs: Option<PathBuf>,
    network: Network,
    ms: Vec<f64>,
}

fn main() -> Result<()> {
    let runs = count_arg(200)?;
    let dir = scratch("start");
    let workspace = dir.join("workspace");
    std::fs::create_dir_all(&workspace)?;
    // The peers run /bin/true in a busybox rootfs; ours gets the same one, as an image of one layer (a copy of
    // its own: crun and runc write mount points into theirs).
    let busybox = peers::busybox_rootfs(&dir.join("busybox"))?;
    let mut peers = peers::prepare(&dir.join("peers"));
    let variant = |name, namespaces, tag, host_net, rootfs: Option<&PathBuf>| -> Result<Variant> {
        Ok(Variant {
            name,
            namespaces,
            tag,
            runtime: runtime(&dir, tag, host_net)?,
            rootfs: rootfs.cloned(),
            network: Network::None,
            ms: Vec::with_capacity(runs),
        })
    };
    let mut egress = variant(
        "gantry-egress",
        "busybox rootfs, all namespaces, user included, network: egress",
        "eb",
        false,
        Some(&busybox),
    )?;
    egress.network = Network::Egress;
    let mut ours = [
        variant(
            "gantry",
            "busybox rootfs, all namespaces, user included",
            "nb",
            false,
            Some(&busybox),
        )?,
        variant(
            "gantry-host-net",
            "busybox rootfs, all namespaces but network and user",
            "hb",
            true,
            Some(&busybox),
        )?,
        variant(
            "gantry-host-image",
            "image host (an overlay of the host's /), all namespaces, user included",
            "nh",
            false,
            None,
        )?,
        egress,
    ];
    let contestants = ours.len() + peers.len();
    for round in 0..WARMUP + runs {
        let warmup = round < WARMUP;
        for at in order(round, contestants) {
            match ours.get_mut(at) {
                Some(v) => {
                    let mut config = config(v.tag, round, &workspace, v.rootfs.as_deref());
                    config.network = v.network;
                    let took = start_once(&v.runtime, &config)?;
                    if !warmup {
                        v.ms.push(took);
                    }
                }
                None => peers[at - ours.len()].run_once(warmup),
            }
        }
    }
    // Both ran once in every round: the p50 of the per-round difference cancels what drifts between rounds.
    let mut paired: Vec<f64> = ours[3]
        .ms
        .iter()
        .zip(&ours[0].ms)
        .map(|(e, n)| e - n)
        .collect();
    let mut p50 = Vec::new();
    for v in &mut ours {
        let figures = [0.1, 0.5, 0.99].map(|q| quantile(&mut v.ms, q));
        print(v.name, v.namespaces, runs, &figures);
        p50.push((v.name, figures[1]));
    }
    // Their runtimes' spare inits and zygotes would only idle beside the guards' A/B.
    drop(ours);
    ratios(&peers, &p50[..2]);
    println!(
        "{}",
        serde_json::json!({
            "compare": "network: egress over none (busybox rootfs, user namespace)",
            "runs": runs,
            "egress_p50_ms": p50[3].1,
            "none_p50_ms": p50[0].1,
            "cost_p50_ms": p50[3].1 - p50[0].1,
            "paired_cost_p50_ms": quantile(&mut paired, 0.5),
            "target": "cost <= 2 ms"
        })
    );
    compare_guards(&dir, &workspace, runs, &busybox)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The order of round `round`'s `n` contestants: a new shuffle each round (xorshift seeded by the round, so
/// runs repeat). Not a mere rotation, which keeps each one's predecessor, and the predecessor matters: the first
/// write to a cgroup v1 `cgroup.procs` after a quiet spell waits for an RCU grace period (~10 ms here), so crun
/// (which writes one) measured p50 15 ms always following bwrap (which writes none), 9.7 ms shuffled.
fn order(round: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (round as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// Prints each peer's line, then the p50 of `ours` over each peer's p50.
fn ratios(peers: &[Peer], ours: &[(&str, f64)]) {
    for peer in peers {
        println!("{}", peer.summary());
    }
    for name in [
        "crun",
        "runc",
        "unshare",
        "unshare-net",
        "bwrap",
        "fork-exec",
    ] {
        let Some(peer_ms) = peers.iter().find(|p| p.name == name).and_then(Peer::p50) else {
            continue;
        };
        let what = name;
        for (runtime, value) in ours {
            println!(
                "{}",
                serde_json::json!({"ratio": format!("{runtime} / {what}"), "peer_ms": peer_ms, "value": value / peer_ms})
            );
        }
    }
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
        egress: Default::default(),
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
        network: Network::None,
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
