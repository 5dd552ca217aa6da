//! A throwaway PostgreSQL server, started once per test process from the local server binaries (or the server at
//! `GANTRY_TEST_POSTGRES_URL`), with a fresh database per test. A watchdog stops it when the test process ends.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

static SERVER: OnceLock<String> = OnceLock::new();

fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().expect("the PostgreSQL server binaries are missing: apt-get install postgresql (they go to /usr/lib/postgresql/*/bin)")
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start() -> String {
    if let Ok(url) = std::env::var("GANTRY_TEST_POSTGRES_URL") {
        return url.trim_end_matches('/').to_owned();
    }
    let bin = bin_dir();
    let dir = PathBuf::from(format!(
        "/tmp/gantry-test-pg-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The server refuses to run as root: it runs as the `postgres` user the Debian package creates.
    run(
        Command::new("chown").args(["postgres:postgres"]).arg(&dir),
        "chown",
    );
    let data = dir.join("data");
    run(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"]),
        "initdb",
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
        dir.display()
    );
    run(
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("log"))
            .args(["-w", "-o", &options, "start"]),
        "pg_ctl start",
    );
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop >/dev/null 2>&1; rm -rf {dir}",
        pid = std::process::id(),
        pg_ctl = bin.join("pg_ctl").display(),
        data = data.display(),
        dir = dir.display(),
    );
    // `setsid -f` forks the watchdog off and returns at once, so it outlives this process without being its child.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("cannot start the PostgreSQL watchdog (setsid is in util-linux)");
    assert!(started.success(), "cannot start the PostgreSQL watchdog");
    format!("postgres://postgres@127.0.0.1:{port}")
}

/// A new, empty database on the throwaway server; returns its URL.
pub async fn fresh_database() -> String {
    let server = SERVER.get_or_init(start).clone();
    let name = format!("gantry_test_{}", uuid::Uuid::now_v7().simple());
    let admin: sqlx::PgPool = sqlx::PgPool::connect(&format!("{server}/postgres"))
        .await
        .expect("cannot connect to the test PostgreSQL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    format!("{server}/{name}")
}
