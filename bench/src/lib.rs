//! What the benchmarks share: a farm started from the release binary, a bare repository to trigger it,
//! percentiles, and the container runtimes Gantry's container start is compared with.

pub mod peers;

use anyhow::{Context, Result, bail};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `gantry` binary to measure: `$GANTRY_BIN`, else the release build.
pub fn gantry_bin() -> PathBuf {
    std::env::var_os("GANTRY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/release/gantry"
            ))
        })
}

/// A running `gantry up` on a scratch data dir; stopped with SIGINT when dropped.
pub struct Farm {
    child: Child,
    /// Base URL.
    pub url: String,
    /// Admin token.
    pub admin: String,
    /// Scratch dir (data dir and repositories).
    pub dir: PathBuf,
}

impl Farm {
    /// Starts a farm with one local worker of `capacity` job slots (the figures compare across versions and
    /// with peers by slots, so the built-in pool does not grow).
    pub fn up(capacity: u32) -> Result<Farm> {
        let slots = capacity.to_string();
        Farm::start("up", &["--capacity", &slots, "--max-workers", "1"])
    }

    /// Starts `gantry COMMAND` (`up`, or `server` for one without a worker) on a scratch data dir, on port 0,
    /// with `extra` flags; the admin token is the one printed at first start, else the one `extra` gives.
    pub fn start(command: &str, extra: &[&str]) -> Result<Farm> {
        let bin = gantry_bin();
        if !bin.exists() {
            bail!(
                "{} is missing: run `cargo build --release` first (or set GANTRY_BIN)",
                bin.display()
            );
        }
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))
            .join(format!("run-{}-{nth}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(bin)
            .args([command, "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.join("data"))
            .args(extra)
            .env(
                "GANTRY_LOG",
                std::env::var("GANTRY_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (mut url, mut admin) = (None, None);
        for line in std::io::BufReader::new(child.stdout.take().context("no stdout")?).lines() {
            let line = line?;
            if let Some(t) = line.trim().strip_prefix("admin token:") {
                admin = Some(t.trim().to_owned());
            }
            let listening = line
                .strip_prefix("Gantry is up: dashboard at ")
                .or_else(|| line.strip_prefix("Gantry server listening: dashboard at "));
            if let Some(rest) = listening {
                url = rest
                    .split_whitespace()
                    .next()
                    .map(|u| u.trim_end_matches('/').to_owned());
                break;
            }
        }
        let given = extra
            .iter()
            .position(|flag| *flag == "--admin-token")
            .and_then(|at| extra.get(at + 1))
            .map(|token| token.to_string());
        Ok(Farm {
            child,
            url: url.with_context(|| format!("gantry {command} did not start"))?,
            admin: admin.or(given).context("no admin token")?,
            dir,
        })
    }

    /// Makes a bare repository with one commit holding `pipeline` as `.gantry.yml`, registers it; returns the
    /// commit sha and the webhook secret.
    pub async fn repo(&self, name: &str, pipeline: &str) -> Result<(String, String)> {
        let bare = self.dir.join(format!("{name}.git"));
        let work = self.dir.join(format!("{name}-work"));
        git(
            &self.dir,
            &["init", "-q", "--bare", bare.to_str().context("path")?],
        )?;
        git(&self.dir, &["init", "-q", work.to_str().context("path")?])?;
        std::fs::write(work.join(".gantry.yml"), pipeline)?;
        git(&work, &["add", "."])?;
        git(
            &work,
            &[
                "-c",
                "user.name=bench",
                "-c",
                "user.email=b@b",
                "commit",
                "-qm",
                "bench",
            ],
        )?;
        git(
            &work,
            &[
                "push",
                "-q",
                bare.to_str().context("path")?,
                "HEAD:refs/heads/main",
            ],
        )?;
        let sha = git(&work, &["rev-parse", "HEAD"])?.trim().to_owned();
        let body = serde_json::json!({ "name": name, "url": bare, "forge": "git" });
        let repo: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/api/v1/repos", self.url))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok((
            sha,
            repo["secret"].as_str().context("no secret")?.to_owned(),
        ))
    }

    /// Sends a signed plain-git webhook for `sha` on branch `branch`; returns the pipeline number.
    pub async fn trigger(
        &self,
        client: &reqwest::Client,
        repo: &str,
        secret: &str,
        sha: &str,
        branch: &str,
    ) -> Result<i64> {
        let body = serde_json::to_vec(
            &serde_json::json!({ "ref": format!("refs/heads/{branch}"), "before": "0".repeat(40), "after": sha }),
        )?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let answer: serde_json::Value = client
            .post(format!("{}/hooks/git?repo={repo}", self.url))
            .header("x-gantry-signature", signature)
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        answer["pipeline"].as_i64().context("no pipeline created")
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git").current_dir(dir).args(args).output()?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The `q` quantile (0..=1) of `values` (sorted in place), nearest-rank.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The count given as the bench's first argument, or `default`.
pub fn count_arg(default: usize) -> Result<usize> {
    count_arg_at(1, default)
}

/// The count given as command-line argument `position` (1 is the first), or `default`.
pub fn count_arg_at(position: usize, default: usize) -> Result<usize> {
    std::env::args()
        .nth(position)
        .map(|a| a.parse().with_context(|| format!("{a:?} is not a count")))
        .transpose()
        .map(|n| n.unwrap_or(default))
}

/// A fresh scratch dir for one bench run, under `target/bench`.
pub fn scratch(kind: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/bench"))
        .join(format!("{kind}-{}", std::process::id()))
}
