//! A stand-in of the Kubernetes API for the `kubernetes` provider's tests, serving the documented requests and
//! answers the provider relies on: discovery (`/version`, `/api`, `/api/v1`), and pods in a namespace — create,
//! get, delete, list and watch (JSON lines from a resource version), with equality label selectors. Pods only
//! live here: nothing runs them. Every request is recorded, and the next answer to a verb can be forced to a
//! failure (403, 409, 500) as a real API server gives it (a `Status`).

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One request the stand-in got.
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's parameters.
    pub query: HashMap<String, String>,
    /// The JSON body, if any.
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: String,
}

#[derive(Default)]
struct Cluster {
    /// (namespace, name) → pod.
    pods: BTreeMap<(String, String), Value>,
    version: u64,
    /// Every change, for watches from a version: (version, namespace, type, pod).
    events: Vec<(u64, String, String, Value)>,
    requests: Vec<Request>,
    /// Verb (`create`, `delete`, `list`, `watch`) → the codes its next answers are forced to.
    failures: HashMap<String, Vec<u16>>,
}

type Shared = Arc<(Mutex<Cluster>, tokio::sync::Notify)>;

/// A running stand-in.
pub struct KubeStandIn {
    shared: Shared,
    /// Its URL (`http://127.0.0.1:PORT`).
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn forced(verb: &str, namespace: &str, code: u16) -> Response {
    match code {
        403 => status(
            403,
            "Forbidden",
            &format!(
                "pods is forbidden: User \"system:serviceaccount:{namespace}:gantry-server\" cannot {verb} resource \"pods\" in API group \"\" in the namespace \"{namespace}\""
            ),
        ),
        409 => status(409, "AlreadyExists", "pods already exists"),
        _ => status(
            code,
            "InternalError",
            "Internal error occurred: etcdserver: request timed out",
        ),
    }
}

fn matches(pod: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        pod["metadata"]["labels"][key].as_str() == Some(value.trim_start_matches('='))
    })
}

impl KubeStandIn {
    /// Starts one on a free port of 127.0.0.1.
    pub async fn start() -> KubeStandIn {
        let shared: Shared = Arc::new((Mutex::new(Cluster::default()), tokio::sync::Notify::new()));
        let app = Router::new()
            .route("/version", get(|| async { axum::Json(json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})) }))
            .route("/api", get(|| async { axum::Json(json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})) }))
            .route("/api/v1", get(|| async {
                axum::Json(json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": [{
                    "name": "pods", "singularName": "pod", "namespaced": true, "kind": "Pod",
                    "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                    "shortNames": ["po"]}]}))
            }))
            .route("/api/v1/namespaces/{ns}/pods", get(list_or_watch).post(create))
            .route("/api/v1/namespaces/{ns}/pods/{name}", get(read).delete(delete))
            .fallback(|| async { status(404, "NotFound", "the server could not find the requested resource") })
            .layer(axum::middleware::from_fn_with_state(shared.clone(), record))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        KubeStandIn { shared, url, task }
    }

    /// A kubeconfig file in `dir` pointing at the stand-in, with a bearer token; its path.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    server: {}\n\
                 users:\n- name: gantry\n  user:\n    token: standin-token\ncontexts:\n- name: standin\n  context:\n    \
                 cluster: standin\n    user: gantry\ncurrent-context: standin\n",
                self.url
            ),
        )
        .unwrap();
        path
    }

    /// Forces the next answers to `verb` (`create`, `delete`, `list`, `watch`) to these codes, in order.
    pub fn fail_next(&self, verb: &str, codes: &[u16]) {
        let mut cluster = self.shared.0.lock().unwrap();
        cluster
            .failures
            .entry(verb.into())
            .or_default()
            .extend(codes);
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.0.lock().unwrap().requests.clone()
    }

    /// The pods of `namespace`, by name.
    pub fn pods(&self, namespace: &str) -> BTreeMap<String, Value> {
        let cluster = self.shared.0.lock().unwrap();
        cluster
            .pods
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((_, name), pod)| (name.clone(), pod.clone()))
            .collect()
    }
}

async fn record(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let query = Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    shared.0.lock().unwrap().requests.push(Request {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        authorization: parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
    });
    next.run(axum::extract::Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The forced answer to `verb`'s next request, if one was asked for.
fn failure(shared: &Shared, verb: &str) -> Option<u16> {
    let mut cluster = shared.0.lock().unwrap();
    let queue = cluster.failures.get_mut(verb)?;
    (!queue.is_empty()).then(|| queue.remove(0))
}

fn change(cluster: &mut Cluster, namespace: &str, kind: &str, pod: &mut Value) {
    cluster.version += 1;
    pod["metadata"]["resourceVersion"] = json!(cluster.version.to_string());
    let event = (
        cluster.version,
        namespace.to_owned(),
        kind.to_owned(),
        pod.clone(),
    );
    cluster.events.push(event);
}

async fn list_or_watch(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if let Some(code) = failure(&shared, if watching { "watch" } else { "list" }) {
        return forced(if watching { "watch" } else { "list" }, &ns, code);
    }
    let selector = query.get("labelSelector").cloned();
    if !watching {
        let cluster = shared.0.lock().unwrap();
        let items: Vec<Value> = cluster
            .pods
            .iter()
            .filter(|((n, _), pod)| *n == ns && matches(pod, selector.as_ref()))
            .map(|(_, pod)| pod.clone())
            .collect();
        let body = json!({"kind": "PodList", "apiVersion": "v1",
            "metadata": {"resourceVersion": cluster.version.to_string()}, "items": items});
        return axum::Json(body).into_response();
    }
    // A watch: the changes after the version asked for, then each new one as it comes, one JSON line each.
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let stream = futures::stream::unfold((shared, from), move |(shared, seen)| {
        let ns = ns.clone();
        let selector = selector.clone();
        async move {
            loop {
                // Listening before looking: a change made in between is not missed.
                let signal = shared.clone();
                let notified = signal.1.notified();
                let mut notified = std::pin::pin!(notified);
                notified.as_mut().enable();
                let next = {
                    let cluster = shared.0.lock().unwrap();
                    cluster
                        .events
                        .iter()
                        .find(|(v, n, _, pod)| {
                            *v > seen && *n == ns && matches(pod, selector.as_ref())
                        })
                        .cloned()
                };
                if let Some((version, _, kind, pod)) = next {
                    let mut line =
                        serde_json::to_vec(&json!({"type": kind, "object": pod})).unwrap();
                    line.push(b'\n');
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(line)),
                        (shared, version),
                    ));
                }
                notified.await;
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn create(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    axum::Json(mut pod): axum::Json<Value>,
) -> Response {
    if let Some(code) = failure(&shared, "create") {
        return forced("create", &ns, code);
    }
    let Some(name) = pod["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            422,
            "Invalid",
            "Pod \"\" is invalid: metadata.name: Required value",
        );
    };
    let mut cluster = shared.0.lock().unwrap();
    if cluster.pods.contains_key(&(ns.clone(), name.clone())) {
        return status(
            409,
            "AlreadyExists",
            &format!("pods \"{name}\" already exists"),
        );
    }
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["uid"] = json!(uuid::Uuid::now_v7().to_string());
    pod["metadata"]["creationTimestamp"] =
        json!(chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string());
    pod["status"] = json!({"phase": "Pending"});
    change(&mut cluster, &ns, "ADDED", &mut pod);
    cluster.pods.insert((ns, name), pod.clone());
    drop(cluster);
    shared.1.notify_waiters();
    (StatusCode::CREATED, axum::Json(pod)).into_response()
}

async fn read(State(shared): State<Shared>, Path((ns, name)): Path<(String, String)>) -> Response {
    match shared.0.lock().unwrap().pods.get(&(ns, name.clone())) {
        Some(pod) => axum::Json(pod.clone()).into_response(),
        None => status(404, "NotFound", &format!("pods \"{name}\" not found")),
    }
}

async fn delete(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    if let Some(code) = failure(&shared, "delete") {
        return forced("delete", &ns, code);
    }
    let mut cluster = shared.0.lock().unwrap();
    let Some(mut pod) = cluster.pods.remove(&(ns.clone(), name.clone())) else {
        return status(404, "NotFound", &format!("pods \"{name}\" not found"));
    };
    // Nothing runs here, so the pod goes at once (a kubelet would first stop its containers).
    change(&mut cluster, &ns, "DELETED", &mut pod);
    drop(cluster);
    shared.1.notify_waiters();
    axum::Json(pod).into_response()
}
