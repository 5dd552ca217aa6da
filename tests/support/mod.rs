//! What the end-to-end tests share: a farm started with the real binary, a throwaway PostgreSQL, git helpers.
#![allow(dead_code)] // each test binary uses a different part of it

pub mod exec_vms;
pub mod farm;
pub mod git;
pub mod git_http;
pub mod kube_standin;
pub mod local;
pub mod oci;
pub mod outside;
pub mod postgres;
pub mod pulls;
pub mod registry;
pub mod standin;
pub mod terminal;
pub mod worker;

use std::future::Future;
use std::time::Duration;

/// Runs an async test body under a timeout, so a hang fails the test with a message instead of stalling CI.
pub fn run<F: Future<Output = ()>>(limit: Duration, body: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(limit, body)
            .await
            .unwrap_or_else(|_| panic!("the test did not finish within {limit:?}"))
    });
}

/// A fresh directory under the target dir (on the host's root filesystem, unlike /tmp, which jobs cannot see).
pub fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{tag}-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` every 50 ms until it returns something, or panics after `limit` saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Like [`eventually`], for tests without a runtime.
pub fn eventually_blocking<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The first child process of `pid` that `pgrep -P` lists, if any.
pub fn first_child(pid: u32) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .expect("pgrep (apt-get install procps)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
}

/// Makes each case two tests, `on_sqlite::case` and `on_postgres::case`. Cases take the database's URL,
/// `async fn case(database: Option<String>)` (None: the farm's own SQLite file; Some: a fresh database on the
/// throwaway PostgreSQL), or with `with OPEN;` what `OPEN(url).await` makes of it (the store suite opens a store).
#[macro_export]
macro_rules! on_both_databases {
    (with $open:path; $($case:ident),* $(,)?) => {
        mod on_sqlite {
            $(#[test] fn $case() {
                $crate::support::run(std::time::Duration::from_secs(240), async {
                    super::$case($open(None).await).await
                })
            })*
        }
        mod on_postgres {
            $(#[test] fn $case() {
                $crate::support::run(std::time::Duration::from_secs(240), async {
                    let url = $crate::support::postgres::fresh_database().await;
                    super::$case($open(Some(url)).await).await
                })
            })*
        }
    };
    ($($case:ident),* $(,)?) => {
        $crate::on_both_databases!(with $crate::support::database_url; $($case),*);
    };
}

/// The URL as it is: what cases of [`on_both_databases`] that take the URL get.
pub async fn database_url(url: Option<String>) -> Option<String> {
    url
}

/// HMAC-SHA256 of `body` under `secret`, in hex: how forges sign a delivery (Gitea sends it bare).
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The `sha256=HEX` signature header value GitHub and Gantry's own hooks send.
pub fn signature(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hmac_hex(secret, body))
}

/// A memory figure of process `pid` from `/proc/PID/status` (`VmRSS`, `VmHWM`, …) in bytes, or 0 once it is gone.
pub fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
