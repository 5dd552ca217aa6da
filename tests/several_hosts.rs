//! Workers on other hosts (docs/api.md, "Workers and pools"): an `exec` pool whose `create` starts each worker on
//! a "host" of its own — a network namespace joined to the server's by a veth pair, with addresses of its own,
//! made and removed by the test. Cutting one host's link mid-job puts the job back in the queue, and it finishes
//! on the other host; when the link comes back, the cut worker's late calls get 409, it stops the job's
//! container and takes jobs again. Real `gantry server` and `gantry worker` processes, as root.

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};
use support::exec_vms::Vms;
use support::farm::Farm;
use support::local::processes_with;
use support::outside::ip;
use support::{eventually, run};

/// Network namespaces joined to this one by veth pairs; removed (their links with them) when dropped.
struct Hosts {
    /// Each host: its namespace, its link's end on the server's side, the server's address as it reaches it.
    hosts: Vec<(String, String, String)>,
}

impl Hosts {
    fn make(count: u8) -> Hosts {
        let tag = &uuid::Uuid::now_v7().simple().to_string()[26..];
        // A /24 of its own per host; the third byte from the tag keeps side-by-side runs apart.
        let base = u8::from_str_radix(&tag[..2], 16).unwrap() % 100;
        let mut hosts = Hosts { hosts: Vec::new() };
        for i in 0..count {
            let ns = format!("gx-host-{tag}-{i}");
            let outside = format!("gxo{tag}{i}");
            let inside = format!("gxi{tag}{i}");
            let net = format!("10.231.{}", base * 2 + i + 1);
            ip(&["netns", "add", &ns]);
            hosts
                .hosts
                .push((ns.clone(), outside.clone(), format!("{net}.1")));
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns,
            ]);
            ip(&["addr", "add", &format!("{net}.1/24"), "dev", &outside]);
            ip(&["link", "set", &outside, "up"]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{net}.2/24"),
                "dev",
                &inside,
            ]);
            ip(&["-n", &ns, "link", "set", &inside, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
        }
        hosts
    }

    fn link(&self, ns: &str, state: &str) {
        let (_, outside, _) = self.hosts.iter().find(|h| h.0 == ns).unwrap();
        ip(&["link", "set", outside, state]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for (ns, _, _) in &self.hosts {
            // The veth pair goes with the namespace.
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

async fn job_of(farm: &Farm, repo: &str, number: i64) -> Value {
    farm.get(&format!("/repos/{repo}/pipelines/{number}")).await["jobs"][0].clone()
}

#[test]
fn a_job_cut_off_with_its_host_finishes_on_the_other_and_the_cut_worker_rejoins() {
    run(Duration::from_secs(240), async {
        let hosts = Hosts::make(2);
        let vms = Vms::new("hosts", "worker");
        let pool = format!("hosts-{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let dir = support::scratch_dir("hosts-config");
        let config = dir.join("gantry.toml");
        std::fs::write(
            &config,
            vms.pool(
                &pool,
                "min = 2\nmax = 2\nidle_timeout = \"10m\"\nboot_timeout = \"60s\"\n",
            ),
        )
        .unwrap();
        // Leases of 4 s: a cut worker's job is back in the queue soon; registrations are kept long, so the cut
        // worker comes back under its own.
        let farm = Farm::serve_with(&[
            "--listen",
            "0.0.0.0:0",
            "--config",
            config.to_str().unwrap(),
            "--lease-secs",
            "4",
            "--worker-grace-secs",
            "600",
        ]);
        let port = farm.url.rsplit(':').next().unwrap().to_owned();
        let urls: Vec<(&str, String)> = hosts
            .hosts
            .iter()
            .map(|(ns, _, addr)| (ns.as_str(), format!("http://{addr}:{port}")))
            .collect();
        vms.set_hosts(&urls);

        // Both hosts get their worker, each reaching the server at its own link's address.
        let names: Vec<String> = (1..=2).map(|n| format!("{pool}-{n}")).collect();
        eventually("a worker on each host", Duration::from_secs(60), || async {
            let workers = farm.get("/workers").await;
            let idle = workers["workers"]
                .as_array()?
                .iter()
                .filter(|w| w["pool"] == pool.as_str() && w["state"] == "idle")
                .count();
            (idle == 2).then_some(())
        })
        .await;
        let host_of = |name: &str| {
            std::fs::read_to_string(vms.dir.join(format!("host-{name}")))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_ne!(
            host_of(&names[0]),
            host_of(&names[1]),
            "both workers on one host"
        );

        // A job whose first attempt never ends by itself; a second one finishes.
        let marker = format!("cut-off-{}", uuid::Uuid::now_v7().simple());
        let repo_name = format!("{pool}-repo");
        let repo = farm.hooked_repo(&repo_name);
        repo.push_pipeline(&format!(
            "jobs:\n  slow:\n    runs-on: [{pool}]\n    steps:\n      - echo started\n      - 'if [ \"$GANTRY_ATTEMPT\" = 1 ]; then sleep 600; fi # {marker}'\n      - echo finished\n"
        ));
        let first = eventually("the job to start", Duration::from_secs(60), || async {
            let job = job_of(&farm, &repo_name, 1).await;
            let id = job["id"].as_str()?.to_owned();
            let log = farm.get_bytes(&format!("/jobs/{id}/log")).await;
            (job["status"] == "running" && log.starts_with(b"started\n"))
                .then(|| job["worker"].as_str().unwrap().to_owned())
        })
        .await;
        let other = names.iter().find(|n| **n != first).unwrap().clone();
        let cut_host = host_of(&first);
        hosts.link(&cut_host, "down");
        let cut = Instant::now();

        let pipeline = farm.finished_pipeline(&repo_name, 1).await;
        let job = &pipeline["jobs"][0];
        assert_eq!(pipeline["status"], "success", "{pipeline:#}");
        assert_eq!(job["worker"], other.as_str(), "{pipeline:#}");
        assert_eq!(job["attempt"], 2, "{pipeline:#}");
        eprintln!(
            "link cut → job finished on the other host: {:?}",
            cut.elapsed()
        );
        assert!(
            !processes_with(&marker).is_empty(),
            "the cut worker's first attempt should still run: it cannot know yet"
        );

        // The link comes back: the cut worker hears 409, stops the first attempt's container, and serves again.
        hosts.link(&cut_host, "up");
        eventually(
            "the cut worker to stop the old attempt",
            Duration::from_secs(90),
            || async { processes_with(&marker).is_empty().then_some(()) },
        )
        .await;
        let log = vms.worker_log(&first);
        assert!(log.contains("the server answered 409"), "{log}");
        // It asks for jobs again: its last call is after the link came back.
        let back = chrono::Utc::now();
        eventually(
            "the cut worker to call again",
            Duration::from_secs(60),
            || async {
                let workers = farm.get("/workers").await;
                let w = workers["workers"]
                    .as_array()?
                    .iter()
                    .find(|w| w["name"] == first.as_str())?
                    .clone();
                let seen: chrono::DateTime<chrono::Utc> = w["last_seen"].as_str()?.parse().ok()?;
                (seen > back).then_some(())
            },
        )
        .await;
        repo.push_pipeline(&format!(
            "jobs:\n  a:\n    runs-on: [{pool}]\n    steps: [sleep 5]\n  b:\n    runs-on: [{pool}]\n    steps: [sleep 5]\n"
        ));
        let pipeline = farm.finished_pipeline(&repo_name, 2).await;
        assert_eq!(pipeline["status"], "success", "{pipeline:#}");
        let mut ran_on: Vec<&str> = pipeline["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["worker"].as_str().unwrap())
            .collect();
        ran_on.sort();
        assert_eq!(ran_on, names, "both workers take jobs again: {pipeline:#}");
        drop(vms);
        drop(hosts);
    });
}
