//! The most a job may ask of a worker (issue 14, finding 6): `[worker] max_memory, max_pids, max_cpus,
//! max_timeout` refuse a greedy job before it runs (`error`, `infra`, each limit named, not retried), and
//! `max_layer_bytes` stops a gzip bomb pulled from a real registry while it unpacks. A real `gantry up`, a real
//! `docker-registry`.

mod support;

use serde_json::json;
use std::time::Duration;
use support::farm::{Farm, job};
use support::oci::{Entry, Layout, busybox_layer, layer, skopeo_push};
use support::registry::Registry;
use support::{run, scratch_dir};

#[test]
fn a_job_asking_more_than_the_worker_allows_ends_in_error_unretried_and_a_gzip_bomb_stops_unpacking()
 {
    run(Duration::from_secs(300), async {
        // 64 MiB of zeros on top of busybox: about 64 KiB on the wire.
        let registry = Registry::start();
        let dir = scratch_dir("bomb");
        let mut layout = Layout::new(&dir.join("layout"));
        let zeros = vec![0u8; 64 << 20];
        let bomb = layer(&[Entry::File("zeros", &zeros)]);
        assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
        layout.add("bomb", &[busybox_layer(), bomb], json!({}));
        layout.add("plain", &[busybox_layer()], json!({}));
        for tag in ["bomb", "plain"] {
            skopeo_push(
                &layout.dir,
                tag,
                &format!("{}/test/limits:{tag}", registry.addr),
            );
        }
        let farm = Farm::up_with_config(
            "infra_retries = 2\n[worker]\nmax_memory = \"1G\"\nmax_pids = 1000\nmax_cpus = 1\n\
             max_timeout = \"1h\"\nmax_layer_bytes = \"16M\"\n",
            &[],
        );
        let repo = farm.hooked_repo("limits");
        let image = |tag: &str| format!("{}/test/limits:{tag}", registry.addr);
        repo.push_pipeline(&format!(
            "jobs:\n  \
             greedy:\n    timeout: 10000h\n    resources: {{memory: 64Gi, pids: 1000000, cpus: 64}}\n    \
             steps: [\"touch /workspace/ran\"]\n  \
             fits:\n    timeout: 1h\n    resources: {{memory: 1Gi, pids: 1000, cpus: 1}}\n    steps: [\"echo fits\"]\n  \
             bomb:\n    image: {}\n    steps: [\"echo the bomb ran\"]\n  \
             plain:\n    image: {}\n    steps: [\"echo plain ran\"]\n",
            image("bomb"),
            image("plain"),
        ));
        let jobs = farm.finished_jobs("limits", 1).await;

        let greedy = job(&jobs, "greedy");
        assert_eq!(greedy.json["status"], "error", "{:#}", greedy.json);
        assert_eq!(greedy.json["failure_kind"], "infra");
        assert_eq!(greedy.json["attempt"], 1, "refused jobs are not retried");
        let message = greedy.json["message"].as_str().unwrap();
        for part in [
            "max_memory 1024 MiB",
            "max_pids 1000",
            "max_cpus 1",
            "max_timeout 3600 s",
        ] {
            assert!(message.contains(part), "{part:?} not in {message:?}");
        }
        assert!(!greedy.log.contains("ran"), "{}", greedy.log);

        let bomb = job(&jobs, "bomb");
        assert_eq!(bomb.json["status"], "error", "{:#}", bomb.json);
        assert_eq!(bomb.json["failure_kind"], "infra");
        let message = bomb.json["message"].as_str().unwrap();
        assert!(message.contains("max_layer_bytes"), "{message}");
        assert!(!bomb.log.contains("the bomb ran"), "{}", bomb.log);

        for (name, said) in [("fits", "fits"), ("plain", "plain ran")] {
            let j = job(&jobs, name);
            assert_eq!(
                j.json["status"], "success",
                "{name}: {:#}\n{}",
                j.json, j.log
            );
            assert!(j.log.contains(said), "{name}: {}", j.log);
        }
        // Nothing of the bomb, nor of the busybox layer whose pull it cut short, stays half done in the
        // workers' stores (an unpack already started finishes on its own thread, so allow it a moment).
        let tmp: Vec<_> = farm
            .worker_dirs()
            .iter()
            .map(|w| w.join("layers/tmp"))
            .filter(|t| t.exists())
            .collect();
        assert!(!tmp.is_empty(), "no worker pulled a layer");
        let left = || -> Vec<_> {
            tmp.iter()
                .flat_map(|t| std::fs::read_dir(t).unwrap().flatten())
                .map(|e| e.path())
                .collect()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !left().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(left().is_empty(), "left: {:?}", left());
    });
}
