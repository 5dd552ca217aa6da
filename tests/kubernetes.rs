//! The `kubernetes` provider (docs/api.md, "Workers and pools") against a stand-in of the Kubernetes API
//! (`support/kube_standin.rs`; no cluster runs on these machines): it lists then watches the pool's pods by
//! label, makes one pod per worker from the shipped template (`deploy/kubernetes/worker-pod.yaml`) with the
//! pool's labels and the worker's variables, deletes exactly the drained workers' pods by name, and shows the
//! API's 403, 409 and 500 answers in the pool's error while it retries. The workers are played by the test over
//! HTTP with the tokens the pods were given, as a pod's `gantry worker` would.

mod support;

use serde_json::{Value, json};
use std::time::Duration;
use support::farm::Farm;
use support::kube_standin::KubeStandIn;
use support::{eventually, run};

struct HandWorker {
    token: String,
    url: String,
}

impl HandWorker {
    async fn register(farm: &Farm, pool_token: &str, name: &str) -> HandWorker {
        let (_, answer) = farm.register_with(pool_token, name).await;
        HandWorker {
            token: answer["worker_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} did not register: {answer}"))
                .to_owned(),
            url: farm.url.clone(),
        }
    }

    /// The status of a lease call, with the lease when there is one.
    async fn lease(&self) -> (u16, Value) {
        let answer = reqwest::Client::new()
            .post(format!("{}/api/v1/lease", self.url))
            .bearer_auth(&self.token)
            .json(&json!({"wait_secs": 1}))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        (status, answer.json().await.unwrap_or(Value::Null))
    }

    async fn complete(&self, lease: &Value) {
        let answer = reqwest::Client::new()
            .post(format!(
                "{}/api/v1/jobs/{}/complete",
                self.url,
                lease["job_id"].as_str().unwrap()
            ))
            .bearer_auth(&self.token)
            .header("x-gantry-lease", lease["lease_id"].as_str().unwrap())
            .json(&json!({"exit_code": 0, "steps": [], "log_length": 0}))
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{:?}", answer.text().await);
    }

    async fn deregister(&self) {
        let answer = reqwest::Client::new()
            .post(format!("{}/api/v1/workers/deregister", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
    }
}

async fn pool_error(farm: &Farm, name: &str) -> Option<String> {
    let pools = farm.get("/pools").await;
    pools["pools"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["error"]
        .as_str()
        .map(str::to_owned)
}

fn env_of(pod: &Value, key: &str) -> Option<String> {
    pod["spec"]["containers"][0]["env"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == key)?["value"]
        .as_str()
        .map(str::to_owned)
}

#[test]
fn the_kubernetes_provider_makes_and_deletes_pods_by_name_and_shows_the_api_s_refusals() {
    run(Duration::from_secs(240), async {
        let standin = KubeStandIn::start().await;
        let dir = support::scratch_dir("kube");
        let kubeconfig = standin.kubeconfig(&dir);
        let pool = format!("kp-{}", &uuid::Uuid::now_v7().simple().to_string()[24..]);
        let template = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/kubernetes/worker-pod.yaml"
        );
        // A template with a misspelt field is refused, not made into a pod without it.
        let typo = dir.join("typo-pod.yaml");
        std::fs::write(
            &typo,
            "apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: worker\n    image: gantry\n    \
             securityContex: {privileged: true}\n",
        )
        .unwrap();
        let config = dir.join("gantry.toml");
        std::fs::write(
            &config,
            format!(
                "[[pool]]\nname = \"{pool}\"\nprovider = \"kubernetes\"\nlabels = [\"linux\", \"{pool}\"]\nmin = 0\n\
                 max = 2\nidle_timeout = \"2s\"\nboot_timeout = \"2m\"\n[pool.kubernetes]\nnamespace = \"ci\"\n\
                 pod_template = \"{template}\"\n\
                 [[pool]]\nname = \"{pool}-typo\"\nprovider = \"kubernetes\"\nmin = 1\nmax = 1\n\
                 [pool.kubernetes]\nnamespace = \"ci\"\npod_template = \"{typo}\"\n",
                typo = typo.display()
            ),
        )
        .unwrap();
        // The first lists are refused, as with a Role missing.
        standin.fail_next("list", &[403, 403, 403]);
        let farm = Farm::serve_with_env(
            &["--config", config.to_str().unwrap()],
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        );
        let refused = eventually(
            "the 403 in the pool's error",
            Duration::from_secs(30),
            || async { pool_error(&farm, &pool).await.filter(|e| e.contains("403")) },
        )
        .await;
        assert!(refused.contains("pods is forbidden"), "{refused}");
        assert!(refused.contains("deploy/kubernetes/rbac.yaml"), "{refused}");
        // The watcher lists again, then watches; the error clears.
        eventually("the error to clear", Duration::from_secs(30), || async {
            pool_error(&farm, &pool).await.is_none().then_some(())
        })
        .await;

        let refused = eventually(
            "the typo in the other pool's error",
            Duration::from_secs(30),
            || async { pool_error(&farm, &format!("{pool}-typo")).await },
        )
        .await;
        assert!(
            refused.contains("fields a Pod does not have: spec.containers.0.securityContex"),
            "{refused}"
        );

        // Two jobs: two pods. The first create meets a pod of that name (409), shown and retried.
        standin.fail_next("create", &[409]);
        let repo_name = format!("{pool}-repo");
        let repo = farm.hooked_repo(&repo_name);
        repo.push_pipeline(&format!(
            "jobs:\n  a:\n    runs-on: [{pool}]\n    steps: [echo a]\n  b:\n    runs-on: [{pool}]\n    steps: [echo b]\n"
        ));
        let conflict = eventually(
            "the 409 in the pool's error",
            Duration::from_secs(30),
            || async {
                pool_error(&farm, &pool)
                    .await
                    .filter(|e| e.contains("exists already"))
            },
        )
        .await;
        assert!(
            conflict.contains(&format!("a pod named {pool}-1")),
            "{conflict}"
        );
        let pods = eventually("two pods", Duration::from_secs(30), || async {
            let pods = standin.pods("ci");
            (pods.len() == 2).then_some(pods)
        })
        .await;
        let names: Vec<String> = pods.keys().cloned().collect();
        assert_eq!(names, [format!("{pool}-1"), format!("{pool}-2")]);
        for (name, pod) in &pods {
            let labels = &pod["metadata"]["labels"];
            assert_eq!(labels["gantry.dev/pool"], pool.as_str(), "{pod:#}");
            assert_eq!(labels["gantry.dev/worker"], name.as_str(), "{pod:#}");
            // The template's own label and settings are kept.
            assert_eq!(labels["app.kubernetes.io/name"], "gantry-worker", "{pod:#}");
            assert_eq!(
                pod["spec"]["automountServiceAccountToken"], false,
                "{pod:#}"
            );
            assert_eq!(
                env_of(pod, "GANTRY_SERVER").as_deref(),
                Some(farm.url.as_str())
            );
            assert_eq!(
                env_of(pod, "GANTRY_WORKER_NAME").as_deref(),
                Some(name.as_str())
            );
            assert_eq!(
                env_of(pod, "GANTRY_WORKER_LABELS"),
                Some(format!("linux,{pool}"))
            );
            assert_eq!(
                env_of(pod, "GANTRY_WORKER_DATA_DIR").as_deref(),
                Some("/var/lib/gantry-worker")
            );
        }

        // The pods' workers register with their own tokens (each good for its name only) and take a job each.
        let token = |n: usize| env_of(&pods[&names[n]], "GANTRY_POOL_TOKEN").unwrap();
        let one = HandWorker::register(&farm, &token(0), &names[0]).await;
        let two = HandWorker::register(&farm, &token(1), &names[1]).await;
        let lease_of = |w: &HandWorker| {
            let w = HandWorker {
                token: w.token.clone(),
                url: w.url.clone(),
            };
            async move {
                eventually("a lease", Duration::from_secs(30), || async {
                    let (status, lease) = w.lease().await;
                    (status == 200).then_some(lease)
                })
                .await
            }
        };
        let one_lease = lease_of(&one).await;
        let two_lease = lease_of(&two).await;
        // The second finishes; idle past idle_timeout, it is drained (410) and leaves; its pod — and only its —
        // is deleted, by name, after a 500 shown and retried.
        standin.fail_next("delete", &[500]);
        two.complete(&two_lease).await;
        eventually(
            "the second worker to be drained",
            Duration::from_secs(30),
            || async { (two.lease().await.0 == 410).then_some(()) },
        )
        .await;
        two.deregister().await;
        let failed = eventually(
            "the 500 in the pool's error",
            Duration::from_secs(30),
            || async { pool_error(&farm, &pool).await.filter(|e| e.contains("500")) },
        )
        .await;
        assert!(
            failed.contains(&format!("destroying {}", names[1])),
            "{failed}"
        );
        eventually(
            "the drained worker's pod to go",
            Duration::from_secs(30),
            || async {
                let pods = standin.pods("ci");
                (pods.len() == 1 && pods.contains_key(&names[0])).then_some(())
            },
        )
        .await;

        // The first finishes too, and goes the same way.
        one.complete(&one_lease).await;
        let pipeline = farm.finished_pipeline(&repo_name, 1).await;
        assert_eq!(pipeline["status"], "success", "{pipeline:#}");
        eventually(
            "the first worker to be drained",
            Duration::from_secs(30),
            || async { (one.lease().await.0 == 410).then_some(()) },
        )
        .await;
        one.deregister().await;
        eventually("no pod left", Duration::from_secs(30), || async {
            standin.pods("ci").is_empty().then_some(())
        })
        .await;

        // Exactly the documented requests: discovery, then pods in the pool's namespace only — listed and watched
        // by the pool's label, made, and deleted by name (each drained worker's, never another's).
        let requests = standin.requests();
        let pods_path = "/api/v1/namespaces/ci/pods";
        let mut deleted = Vec::new();
        for r in &requests {
            match (r.method.as_str(), r.path.as_str()) {
                ("GET", "/version" | "/api" | "/api/v1") => {}
                ("GET", path) if path == pods_path => {
                    let selector = r.query.get("labelSelector").cloned().unwrap_or_default();
                    assert!(
                        selector == format!("gantry.dev/pool={pool}")
                            || selector == format!("gantry.dev/pool={pool}-typo"),
                        "{r:?}"
                    );
                }
                ("POST", path) if path == pods_path => {
                    assert_eq!(r.body["kind"], "Pod", "{r:?}");
                }
                ("DELETE", path) => {
                    let name = path
                        .strip_prefix(&format!("{pods_path}/"))
                        .unwrap_or_else(|| panic!("{r:?}"));
                    deleted.push(name.to_owned());
                }
                _ => panic!("an undocumented request: {r:?}"),
            }
            assert_eq!(r.authorization, "Bearer standin-token", "{r:?}");
        }
        assert_eq!(
            deleted,
            [names[1].clone(), names[1].clone(), names[0].clone()],
            "the 500 retried, then the other"
        );
        assert!(
            requests.iter().any(|r| r
                .query
                .get("watch")
                .is_some_and(|w| w == "true" || w == "1")),
            "never watched"
        );
    });
}
