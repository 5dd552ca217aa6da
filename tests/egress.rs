//! `network: egress` (docs/pipeline.md, "Network"; docs/container.md, "Network"), through the real binaries
//! as root: an "outside" host (a network namespace with an HTTP server, a DNS server for a made-up name, the
//! metadata address and an address in an `egress_deny` range) that an egress job reaches by name and a `none`
//! job cannot reach; from an egress job, every address of this host — on the server's port and on a port the
//! test opens on all addresses — the metadata address, the denied range and another egress job running at the
//! same time are out of reach; a SIGKILLed worker's bridge and table are gone after its restart, and nothing
//! of Gantry's is left on the host after a clean stop. Needs nftables, dnsmasq-base, busybox-static, curl.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::farm::{Farm, job};
use support::outside::{self, Outside};
use support::{eventually, run};

/// A port open on every address of this host that answers HTTP, counting who connected.
fn host_port() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let from_jobs = Arc::new(AtomicUsize::new(0));
    let count = from_jobs.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            if stream
                .peer_addr()
                .is_ok_and(|a| a.ip().to_string().starts_with("172.30."))
            {
                count.fetch_add(1, Ordering::SeqCst);
            }
            let mut buf = [0; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nhost");
        }
    });
    (port, from_jobs)
}

/// Gantry's links and tables on this host (`gtb-`, `gtv-`, `gantry_`), by name.
fn gantry_network_things() -> Vec<String> {
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let mut things: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_owned())
        .filter(|name| name.starts_with("gtb-") || name.starts_with("gtv-"))
        .collect();
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft is missing: install nftables (scripts/deps.sh test does)");
    things.extend(
        String::from_utf8_lossy(&tables.stdout)
            .lines()
            .filter(|l| l.contains("gantry_"))
            .map(str::to_owned),
    );
    things
}

/// The bridge name the worker called `name` uses (see `runtime/egress`).
fn bridge_of(worker: &str) -> String {
    use sha2::Digest;
    let digest = hex::encode(sha2::Sha256::digest(worker.as_bytes()));
    format!("gtb-{}", &digest[..11])
}

#[test]
fn egress_jobs_reach_the_outside_by_name_and_never_the_host_other_jobs_or_denied_ranges() {
    run(Duration::from_secs(300), async {
        let outside = Outside::start();
        let (test_port, from_jobs) = host_port();
        let farm = Farm::serve_with(&["--listen", "0.0.0.0:0"]);
        let server_port = farm.url.rsplit(':').next().unwrap().to_owned();
        let config = support::scratch_dir("egress-config").join("gantry.toml");
        std::fs::write(
            &config,
            format!(
                "[worker]\ndns = [\"{}\"]\negress_deny = [\"{}\"]\n",
                outside.address, outside.denied_range
            ),
        )
        .unwrap();
        let name = format!(
            "egress-{}",
            &uuid::Uuid::now_v7().simple().to_string()[24..]
        );
        let config_flag = ["--config", config.to_str().unwrap(), "--capacity", "2"];
        let mut worker = farm.worker_with(&name, &config_flag);
        let repo = farm.hooked_repo("egress");

        // The targets: this host's every address on the server's port and the test's, the metadata address
        // and the denied range (both served by the outside host, which this host reaches).
        let addresses = outside::host_addresses();
        let mut targets: Vec<String> = addresses
            .iter()
            .flat_map(|a| [format!("{a}:{server_port}"), format!("{a}:{test_port}")])
            .collect();
        targets.push(format!("{}:80", outside::METADATA));
        targets.push(format!("{}:80", outside.denied));
        for target in &targets[..] {
            if target.starts_with("127.") {
                continue;
            }
            let reached = Command::new("curl")
                .args([
                    "-s",
                    "-m",
                    "2",
                    "-o",
                    "/dev/null",
                    &format!("http://{target}/"),
                ])
                .status()
                .unwrap();
            assert!(reached.success(), "this host itself cannot reach {target}");
        }
        let pipeline = format!(
            "jobs:\n  \
             reach:\n    network: egress\n    steps:\n      \
             - getent hosts {name_}\n      \
             - echo got=$(curl -sf -m 5 http://{name_}/page.txt)\n  \
             none:\n    steps:\n      \
             - \"if curl -s -m 3 http://{out}/page.txt; then echo REACHED; exit 1; fi; echo unreachable=yes\"\n  \
             attack:\n    network: egress\n    steps:\n      \
             - echo control=$(curl -sf -m 5 http://{name_}/page.txt)\n      \
             - |\n        \
             gw=$(ip route | awk '/default/ {{print $3}}')\n        \
             for t in {targets} $gw:{server_port} $gw:{test_port} $gw:53; do\n          \
             if curl -s -m 2 -o /dev/null http://$t/; then echo \"REACHED $t\"; exit 1; fi\n          \
             echo \"blocked $t\"\n        \
             done\n",
            name_ = outside::NAME,
            out = outside.address,
            targets = targets.join(" "),
        );
        repo.push_pipeline(&pipeline);
        let jobs = farm.finished_jobs("egress", 1).await;
        for j in &jobs {
            assert_eq!(
                j.json["status"], "success",
                "{}: {}\n{}",
                j.name, j.json, j.log
            );
        }
        let reach = &job(&jobs, "reach").log;
        assert!(reach.contains(&outside.address), "{reach}");
        assert!(reach.contains(&format!("got={}", outside::PAGE)), "{reach}");
        assert!(job(&jobs, "none").log.contains("unreachable=yes"));
        let attack = &job(&jobs, "attack").log;
        assert!(
            attack.contains(&format!("control={}", outside::PAGE)),
            "{attack}"
        );
        for target in &targets {
            assert!(
                attack.contains(&format!("blocked {target}")),
                "{target}: {attack}"
            );
        }
        assert_eq!(
            from_jobs.load(Ordering::SeqCst),
            0,
            "a job reached the test's port"
        );

        // Two egress jobs at once: the second scans its /24 for the first's web server, which this host reaches.
        let peers = "jobs:\n  \
             serve:\n    network: egress\n    steps:\n      \
             - echo page > index.html\n      \
             - \"busybox httpd -p 8000 -h $PWD && echo serving=$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)\"\n      \
             - sleep 20\n  \
             scan:\n    network: egress\n    steps:\n      \
             - sleep 6\n      \
             - |\n        \
             own=$(ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)\n        \
             for i in $(seq 2 12); do\n          \
             ip=${own%.*}.$i; [ $ip = $own ] && continue\n          \
             if curl -s -m 1 -o /dev/null http://$ip:8000/; then echo \"REACHED $ip\"; exit 1; fi\n        \
             done\n        \
             echo scanned=yes\n";
        repo.push_pipeline(peers);
        let serving = eventually(
            "the serving job's address",
            Duration::from_secs(60),
            || async {
                let p = farm.get("/repos/egress/pipelines/2").await;
                let id = p["jobs"]
                    .as_array()?
                    .iter()
                    .find(|j| j["name"] == "serve")?["id"]
                    .as_str()?
                    .to_owned();
                let log = farm.get_bytes(&format!("/jobs/{id}/log")).await;
                let log = String::from_utf8_lossy(&log).into_owned();
                log.split_whitespace()
                    .find_map(|w| w.strip_prefix("serving="))
                    .map(str::to_owned)
            },
        )
        .await;
        let from_host = Command::new("curl")
            .args([
                "-sf",
                "-m",
                "2",
                &format!("http://{serving}:8000/index.html"),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&from_host.stdout).trim(), "page");
        let jobs = farm.finished_jobs("egress", 2).await;
        let scan = job(&jobs, "scan");
        assert_eq!(scan.json["status"], "success", "{}", scan.log);
        assert!(scan.log.contains("scanned=yes"), "{}", scan.log);

        // SIGKILLed with an egress job running, the worker leaves its bridge and table; its restart removes
        // them (and the job's veth is gone with the job).
        let bridge = bridge_of(&name);
        repo.push_pipeline(
            "jobs:\n  long:\n    network: egress\n    steps: [echo started, sleep 600]\n",
        );
        eventually("the long job to run", Duration::from_secs(60), || async {
            let p = farm.get("/repos/egress/pipelines/3").await;
            (p["jobs"][0]["status"] == "running").then_some(())
        })
        .await;
        assert!(gantry_network_things().iter().any(|t| t == &bridge));
        worker.kill();
        let left = gantry_network_things();
        assert!(left.iter().any(|t| t == &bridge), "{left:?}");
        let worker = farm.worker_with(&name, &config_flag);
        eventually(
            "the restarted worker's sweep",
            Duration::from_secs(60),
            || async {
                (worker.output())
                    .contains("removed the egress bridge an earlier run")
                    .then_some(())
            },
        )
        .await;
        let left = gantry_network_things();
        assert!(!left.iter().any(|t| t.contains(&bridge[4..])), "{left:?}");
        let (status, _) = farm
            .admin_call(
                reqwest::Method::POST,
                "/repos/egress/pipelines/3/cancel",
                None,
            )
            .await;
        assert_eq!(status, 200);
        // Stopped cleanly after an egress job, the worker removes its bridge and table itself.
        repo.push_pipeline(
            "jobs:\n  quick:\n    network: egress\n    steps: [\"ip route | grep -q default\"]\n",
        );
        let jobs = farm.finished_jobs("egress", 4).await;
        assert_eq!(jobs[0].json["status"], "success", "{}", jobs[0].log);
        assert!(gantry_network_things().iter().any(|t| t == &bridge));
        let mut worker = worker;
        worker.signal(nix::sys::signal::Signal::SIGINT);
        assert!(worker.wait_exit(Duration::from_secs(30)).is_some());
        let _ = farm.interrupt();
        let left: Vec<String> = gantry_network_things()
            .into_iter()
            .filter(|t| t.contains(&bridge[4..]) || t.starts_with("gtv-"))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    });
}

#[test]
fn gantry_run_gives_egress_jobs_the_network_and_leaves_nothing_behind() {
    let outside = Outside::start();
    let pipeline = format!(
        "network: egress\njobs:\n  fetch:\n    steps:\n      \
         - echo got=$(curl -sf -m 5 http://{}/page.txt)\n  \
         offline:\n    network: none\n    steps:\n      \
         - \"if curl -s -m 2 http://{}/page.txt; then exit 1; fi; echo offline=yes\"\n",
        outside::NAME,
        outside.address
    );
    let tree = support::local::Tree::new("egress-run", &pipeline);
    let config = tree.data_dir.with_extension("toml");
    std::fs::write(
        &config,
        format!("[worker]\ndns = [\"{}\"]\n", outside.address),
    )
    .unwrap();
    let out = tree
        .command(&["--config", config.to_str().unwrap()])
        .env("GANTRY_LOG", "info")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("got={}", outside::PAGE)),
        "{stdout}"
    );
    assert!(stdout.contains("offline=yes"), "{stdout}");
    // The bridge it made, by the name it logged; gone with it, and its table too.
    let line = stderr
        .lines()
        .find(|l| l.contains("egress bridge ready"))
        .unwrap_or_else(|| panic!("no bridge made: {stderr}"));
    let tag = line.split("gtb-").nth(1).unwrap()[..11].to_owned();
    let left: Vec<String> = gantry_network_things()
        .into_iter()
        .filter(|t| t.contains(&tag))
        .collect();
    assert!(left.is_empty(), "gantry run left {left:?}");
}
