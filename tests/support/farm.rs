//! A farm started the way a user starts one: the real `gantry up` binary on a fresh data dir and port 0.

use super::eventually;
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `gantry` binary under test.
pub const GANTRY: &str = env!("CARGO_BIN_EXE_gantry");

/// A running `gantry up`; stopped with SIGINT (like Ctrl-C) when dropped.
pub struct Farm {
    child: Child,
    /// The server's base URL.
    pub url: String,
    /// The admin token it printed on first start.
    pub admin: String,
    /// Its data dir.
    pub data_dir: PathBuf,
    /// The `default` pool's token, as `gantry server` prints it on first start.
    pub pool_token: Option<String>,
    /// What it printed before it said it was up.
    pub banner: String,
    http: reqwest::Client,
    /// How it was started (`up` or `server`, and the flags), to start it again.
    command: (String, Vec<String>),
}

impl Farm {
    /// Starts `gantry up` on SQLite.
    pub fn up() -> Farm {
        Farm::up_with(&[])
    }

    /// Starts `gantry up` with more flags (e.g. `--database postgres://…`).
    pub fn up_with(extra: &[&str]) -> Farm {
        Farm::start("up", extra)
    }

    /// Starts `gantry up` with `config` as its configuration file (TOML) and more flags.
    pub fn up_with_config(config: &str, extra: &[&str]) -> Farm {
        let dir = super::scratch_dir("config");
        let path = dir.join("gantry.toml");
        std::fs::write(&path, config).unwrap();
        let mut flags = vec!["--config", path.to_str().unwrap()];
        flags.extend_from_slice(extra);
        Farm::up_with(&flags)
    }

    /// Starts `gantry up` whose jobs run in user namespaces (`true`, the default where the host allows it) or
    /// without one (`false`, as on a host that has none): a boundary must hold either way.
    pub fn up_userns(user_namespace: bool) -> Farm {
        Farm::up_with_config(
            &format!("[worker]\nuser_namespace = {user_namespace}\n"),
            &[],
        )
    }

    /// [`Farm::up_with`] on `database` (PostgreSQL), or on the SQLite file in the data dir when none.
    pub fn up_on(database: Option<&str>, extra: &[&str]) -> Farm {
        Farm::up_with(&with_database(database, extra))
    }

    /// [`Farm::serve_with`] on `database` (PostgreSQL), or on the SQLite file in the data dir when none.
    pub fn serve_on(database: Option<&str>, extra: &[&str]) -> Farm {
        Farm::serve_with(&with_database(database, extra))
    }

    /// Starts `gantry server` (a server without a worker; see [`Farm::worker`]) with more flags.
    pub fn serve_with(extra: &[&str]) -> Farm {
        Farm::start("server", extra)
    }

    /// Starts `gantry up` on the data dir `data_dir` (made if missing).
    pub fn up_in(data_dir: PathBuf, extra: &[&str]) -> Farm {
        std::fs::create_dir_all(&data_dir).unwrap();
        Farm::start_in("up", extra, data_dir)
    }

    /// [`Farm::serve_with`] with more environment variables (e.g. `KUBECONFIG`).
    pub fn serve_with_env(extra: &[&str], env: &[(&str, &str)]) -> Farm {
        Farm::start_in_env("server", extra, super::scratch_dir("farm"), env)
    }

    fn start(command: &str, extra: &[&str]) -> Farm {
        Farm::start_in(command, extra, super::scratch_dir("farm"))
    }

    fn start_in(command: &str, extra: &[&str], data_dir: PathBuf) -> Farm {
        Farm::start_in_env(command, extra, data_dir, &[])
    }

    fn start_in_env(
        command: &str,
        extra: &[&str],
        data_dir: PathBuf,
        env: &[(&str, &str)],
    ) -> Farm {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.with_extension("log"))
            .unwrap();
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(GANTRY)
            .arg(command)
            .args(listen)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(extra)
            .env("GANTRY_LOG", "info,gantry_server=debug,gantry_worker=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("cannot start gantry up");
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let (mut url, mut admin, mut pool_token) = (None, None, None);
        let mut banner = String::new();
        let mut stdout = stdout;
        for line in (&mut stdout).lines() {
            let line = line.unwrap();
            banner.push_str(&line);
            banner.push('\n');
            if let Some(token) = line.trim().strip_prefix("admin token:") {
                admin = Some(token.trim().to_owned());
            }
            if let Some(token) = line.trim().strip_prefix("default pool token:") {
                pool_token = Some(token.trim().to_owned());
            }
            let listening = line
                .strip_prefix("Gantry is up: dashboard at ")
                .or_else(|| line.strip_prefix("Gantry server listening: dashboard at "));
            if let Some(rest) = listening {
                url = Some(
                    rest.split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/')
                        .to_owned(),
                );
                break;
            }
        }
        let url = url.unwrap_or_else(|| {
            panic!(
                "gantry {command} did not start; see {}",
                data_dir.with_extension("log").display()
            )
        });
        let admin = admin
            .or_else(|| {
                let at = extra.iter().position(|flag| *flag == "--admin-token")?;
                extra.get(at + 1).map(|token| token.to_string())
            })
            .expect("gantry printed no admin token (first start) and none was given");
        // A private farm answers reads only to a token: the helpers read as the admin there.
        let http = if extra.contains(&"--private") {
            let mut headers = reqwest::header::HeaderMap::new();
            let value = format!("Bearer {admin}").parse().unwrap();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            reqwest::Client::builder()
                .default_headers(headers)
                .build()
                .unwrap()
        } else {
            reqwest::Client::new()
        };
        Farm {
            child,
            url,
            admin,
            data_dir,
            pool_token,
            banner,
            http,
            command: (
                command.to_owned(),
                extra.iter().map(|s| s.to_string()).collect(),
            ),
        }
    }

    /// A farm whose process (`child`, which may be a wrapper such as a terminal's) the caller started and
    /// read the URL and admin token of.
    pub fn attach(child: Child, url: String, admin: String, data_dir: PathBuf) -> Farm {
        Farm {
            child,
            url,
            admin,
            data_dir,
            pool_token: None,
            banner: String::new(),
            http: reqwest::Client::new(),
            command: ("up".into(), Vec::new()),
        }
    }

    /// Waits up to `limit` for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILLs the server process (a machine that died): nothing of it runs its shutdown.
    pub fn kill_now(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGKILLs the server process and starts it again on the same data dir and flags (give it a fixed
    /// `--listen` address to keep its URL); the tokens of the first start are kept.
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (command, extra) = self.command.clone();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let mut again = Farm::start_in(&command, &extra, self.data_dir.clone());
        // Swap the new process in; the returned husk holds nothing to stop.
        std::mem::swap(&mut self.child, &mut again.child);
        assert_eq!(again.url, self.url, "restarted on another address");
        std::mem::forget(again);
    }

    /// The data dirs of the local workers `gantry up` started so far (`DATA_DIR/workers/NAME`).
    pub fn worker_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.data_dir.join("workers"))
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    /// Runs a `gantry` client verb against this farm, as the admin; panics on failure; returns stdout.
    pub fn gantry(&self, args: &[&str]) -> String {
        gantry_as(self, &self.admin, args)
    }

    /// A bare repository (with a working clone) in `dir`, added to the farm as `name` with Gantry's
    /// post-receive hook installed: every push of a branch starts a pipeline.
    pub fn hooked_repo_in(&self, name: &str, dir: &std::path::Path) -> super::git::Repo {
        let repo = super::git::Repo::new(dir);
        let bare = repo.bare.to_str().unwrap();
        self.gantry(&["repo", "add", name, "--url", bare]);
        let out = self.gantry(&["hook", "install", bare, "--repo", name]);
        assert!(out.contains("installed"), "{out}");
        repo
    }

    /// [`Farm::hooked_repo_in`] a fresh scratch dir.
    pub fn hooked_repo(&self, name: &str) -> super::git::Repo {
        self.hooked_repo_in(name, &super::scratch_dir(name))
    }

    /// `GET` a path of the server, asserting success.
    async fn get_ok(&self, path: &str) -> reqwest::Response {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response
    }

    /// `GET` a JSON API path (under /api/v1).
    pub async fn get(&self, path: &str) -> Value {
        self.get_ok(&format!("/api/v1{path}"))
            .await
            .json()
            .await
            .unwrap()
    }

    /// `GET` raw bytes (under /api/v1).
    pub async fn get_bytes(&self, path: &str) -> Vec<u8> {
        self.get_ok(&format!("/api/v1{path}"))
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec()
    }

    /// A dashboard page's HTML (a path of the server, not under /api/v1), asserting success.
    pub async fn page(&self, path: &str) -> String {
        self.get_ok(path).await.text().await.unwrap()
    }

    /// `POST` raw bytes with headers to a path of the server (not under /api/v1).
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> reqwest::Response {
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        request.send().await.unwrap()
    }

    /// Calls the JSON API (under /api/v1) as the admin: the status and the body (null when none).
    pub async fn admin_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}/api/v1{path}", self.url))
            .bearer_auth(&self.admin);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Registers a worker named `name` over HTTP, as a test playing the worker's part by hand; returns its token.
    pub async fn register_worker_by_hand(&self, name: &str) -> String {
        let pool_token = self.pool_token.clone().expect("the farm made a pool token");
        let (_, registered) = self.register_with(&pool_token, name).await;
        registered["worker_token"].as_str().unwrap().to_owned()
    }

    /// Registers a worker named `name` with `token` (a pool's or an instance's) over HTTP: the answer's status
    /// and body.
    pub async fn register_with(&self, token: &str, name: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/workers/register", self.url))
            .bearer_auth(token)
            .json(&serde_json::json!({"name": name, "capacity": 1, "protocol_version": 1}))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Leases a job over HTTP as the worker of `token` (registered by hand), playing the worker's part; waits
    /// up to a minute for one.
    pub async fn lease_by_hand(&self, token: &str) -> Value {
        let url = format!("{}/api/v1/lease", self.url);
        eventually("a lease", Duration::from_secs(60), || async {
            let answer = self
                .http
                .post(&url)
                .bearer_auth(token)
                .json(&serde_json::json!({"wait_secs": 5}))
                .send()
                .await
                .ok()?;
            (answer.status() == 200).then_some(answer.json().await.ok()?)
        })
        .await
    }

    /// Waits until pipeline `number` of `repo` exists and is finished; returns it with its jobs.
    pub async fn finished_pipeline(&self, repo: &str, number: i64) -> Value {
        let path = format!("/repos/{repo}/pipelines/{number}");
        eventually(
            &format!("{repo} #{number} to finish"),
            Duration::from_secs(120),
            || async {
                let response = self
                    .http
                    .get(format!("{}/api/v1{path}", self.url))
                    .send()
                    .await
                    .ok()?;
                let p: Value = response.json().await.ok()?;
                (!matches!(p["status"].as_str(), Some("queued" | "running") | None)).then_some(p)
            },
        )
        .await
    }

    /// Each job of a finished pipeline: its name, its JSON and its log.
    pub async fn finished_jobs(&self, repo: &str, number: i64) -> Vec<FinishedJob> {
        let p = self.finished_pipeline(repo, number).await;
        let mut out = Vec::new();
        for job in p["jobs"].as_array().unwrap() {
            let id = job["id"].as_str().unwrap();
            let log = self.get_bytes(&format!("/jobs/{id}/log")).await;
            out.push(FinishedJob {
                name: job["name"].as_str().unwrap().to_owned(),
                json: job.clone(),
                log: String::from_utf8_lossy(&log).into_owned(),
            });
        }
        out
    }
}

/// Runs a `gantry` client verb against `farm` with `token`; panics on failure; returns stdout.
pub fn gantry_as(farm: &Farm, token: &str, args: &[&str]) -> String {
    let out = Command::new(GANTRY)
        .args(args)
        .env("GANTRY_SERVER", &farm.url)
        .env("GANTRY_TOKEN", token)
        .output()
        .unwrap();
    succeeded(args, out)
}

/// The stdout of `gantry ARGS`, which must have succeeded.
fn succeeded(args: &[&str], out: std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gantry {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs a `gantry` client verb against `farm` as the admin with `input` on stdin; panics on failure; returns
/// stdout.
pub fn gantry_with_stdin(farm: &Farm, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(GANTRY)
        .args(args)
        .env("GANTRY_SERVER", &farm.url)
        .env("GANTRY_TOKEN", &farm.admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    succeeded(args, child.wait_with_output().unwrap())
}

/// Runs a `gantry` client verb against `farm` with `token` (or none) that must fail; returns its stderr.
pub fn gantry_fails(farm: &Farm, token: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(GANTRY);
    command.args(args).env("GANTRY_SERVER", &farm.url);
    match token {
        Some(token) => command.env("GANTRY_TOKEN", token),
        None => command.env_remove("GANTRY_TOKEN"),
    };
    let out = command.output().unwrap();
    assert!(
        !out.status.success(),
        "gantry {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn with_database<'a>(database: Option<&'a str>, extra: &[&'a str]) -> Vec<&'a str> {
    let mut flags: Vec<&str> = database.map_or(Vec::new(), |url| vec!["--database", url]);
    flags.extend_from_slice(extra);
    flags
}

/// A job of a finished pipeline.
pub struct FinishedJob {
    /// Its name.
    pub name: String,
    /// As the API shows it.
    pub json: Value,
    /// Its whole log.
    pub log: String,
}

/// The job called `name`.
pub fn job<'a>(jobs: &'a [FinishedJob], name: &str) -> &'a FinishedJob {
    jobs.iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job {name}"))
}

impl Farm {
    /// The `gantry up` process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits up to 20 s for the exit; kills it after that.
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        self.stop()
    }

    /// Ctrl-C, like a user: the worker finishes its jobs; if that takes over 5 s (a test failed mid-job), a
    /// second Ctrl-C stops them; SIGKILL only if even that hangs.
    fn stop(&mut self) -> std::process::ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        for wait in [Duration::from_secs(5), Duration::from_secs(20)] {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            let start = std::time::Instant::now();
            while start.elapsed() < wait {
                if let Ok(Some(status)) = self.child.try_wait() {
                    return status;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        self.stop();
    }
}
