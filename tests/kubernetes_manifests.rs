//! The Kubernetes manifests shipped in `deploy/kubernetes/` (its README.md): every document parses into its typed
//! Kubernetes object (k8s-openapi) with no unknown field — a typo such as `nodeSelectr` would be silently ignored
//! by the typed parse, so the fields are checked with `serde_ignored` — and the server's Role grants pods in its
//! namespace only, nothing else.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    Namespace, PersistentVolumeClaim, Pod, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// `doc` as a `T`, and the paths of the fields `T` does not have.
fn typed<T: DeserializeOwned>(doc: &Value) -> (T, Vec<String>) {
    let mut unknown = Vec::new();
    // serde_ignored writes an optional field's step as `?`: `spec.?.nodeSelectr` is `spec.nodeSelectr`.
    let object = serde_ignored::deserialize(doc.clone(), |path| {
        unknown.push(path.to_string().replace(".?", ""))
    })
    .unwrap_or_else(|e| panic!("does not parse: {e}\n{doc:#}"));
    (object, unknown)
}

fn check(doc: &Value) -> Vec<String> {
    match doc["kind"].as_str().unwrap_or_default() {
        "Namespace" => typed::<Namespace>(doc).1,
        "ServiceAccount" => typed::<ServiceAccount>(doc).1,
        "Role" => typed::<Role>(doc).1,
        "RoleBinding" => typed::<RoleBinding>(doc).1,
        "Secret" => typed::<Secret>(doc).1,
        "Deployment" => typed::<Deployment>(doc).1,
        "Service" => typed::<Service>(doc).1,
        "PersistentVolumeClaim" => typed::<PersistentVolumeClaim>(doc).1,
        "Pod" => typed::<Pod>(doc).1,
        other => panic!("a manifest of a kind this test does not know: {other:?}"),
    }
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type_with_no_unknown_field() {
    let mut kinds = Vec::new();
    for file in manifests() {
        let text = std::fs::read_to_string(&file).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
            .unwrap_or_else(|e| panic!("{}: not YAML: {e}", file.display()));
        assert!(!docs.is_empty(), "{}: empty", file.display());
        for doc in docs {
            let unknown = check(&doc);
            assert!(
                unknown.is_empty(),
                "{}: unknown fields {unknown:?}",
                file.display()
            );
            kinds.push(doc["kind"].as_str().unwrap().to_owned());
        }
    }
    kinds.sort();
    for wanted in [
        "Deployment",
        "Namespace",
        "Pod",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
    ] {
        assert!(
            kinds.iter().any(|k| k == wanted),
            "no {wanted} in deploy/kubernetes: {kinds:?}"
        );
    }
}

#[test]
fn the_check_finds_a_misspelt_field() {
    let doc: Value = serde_saphyr::from_str(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec:\n  nodeSelectr: {a: b}\n  containers:\n  - name: w\n    image: i\n    bogusField: 1\n",
    )
    .unwrap();
    let mut unknown = check(&doc);
    unknown.sort();
    assert_eq!(
        unknown,
        ["spec.containers.0.bogusField", "spec.nodeSelectr"]
    );
}

#[test]
fn the_server_may_touch_pods_in_its_namespace_and_nothing_else() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/rbac.yaml"),
    )
    .unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let roles: Vec<Role> = docs
        .iter()
        .filter(|d| d["kind"] == "Role")
        .map(|d| typed::<Role>(d).0)
        .collect();
    assert_eq!(roles.len(), 1, "one Role, and no ClusterRole");
    assert!(
        !docs
            .iter()
            .any(|d| d["kind"] == "ClusterRole" || d["kind"] == "ClusterRoleBinding")
    );
    let rules = roles[0].rules.clone().unwrap_or_default();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]));
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    let mut verbs = rules[0].verbs.clone();
    verbs.sort();
    assert_eq!(verbs, ["create", "delete", "get", "list", "watch"]);
    // The worker pod gets no API token to hand to a job.
    let pod: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/worker-pod.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let (pod, _) = typed::<Pod>(&pod);
    let spec = pod.spec.unwrap();
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_ne!(spec.host_network, Some(true));
    assert_ne!(spec.host_pid, Some(true));
    assert_eq!(spec.containers[0].name, "worker");
}
