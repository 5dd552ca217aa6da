//! Plain git repositories: `gantry hook install` writes the post-receive hook, `gantry notify` is what it runs.

use super::api::{Api, ApiArgs};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use gantry_model::wire::{GANTRY_DELIVERY_HEADER, GANTRY_SIGNATURE_HEADER, HookOutcome, RepoView};
use sha2::Digest;
use std::io::BufRead;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

const HOOK_TEMPLATE: &str = include_str!("../../deploy/git-hooks/post-receive");
const HOOK_MARKER: &str = "Gantry's post-receive hook";

/// `gantry hook …`.
#[derive(Subcommand)]
pub enum HookCommand {
    /// Install the post-receive hook into a bare repository, so that every push of a branch starts a pipeline.
    Install {
        /// The bare repository's path.
        bare_repo: PathBuf,
        /// The repository's name in Gantry.
        #[arg(long)]
        repo: String,
        /// The webhook secret [default: asked from the server with the admin token].
        #[arg(long, env = "GANTRY_HOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Replace a post-receive hook that is not Gantry's.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `gantry notify`'s options.
#[derive(Args)]
pub struct NotifyArgs {
    /// The server's URL.
    #[arg(long, env = "GANTRY_SERVER")]
    server: String,
    /// The repository's name in Gantry.
    #[arg(long)]
    repo: String,
    /// The webhook secret.
    #[arg(long, env = "GANTRY_HOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// How long to wait for the server's verdict of the pushed pipeline file (the server allows at most 5).
    #[arg(
        long,
        env = "GANTRY_VERDICT_WAIT",
        value_name = "SECONDS",
        default_value_t = 2.0
    )]
    wait: f64,
}

/// Runs `gantry hook …`.
pub async fn run(cmd: HookCommand) -> Result<()> {
    let HookCommand::Install {
        bare_repo,
        repo,
        secret,
        force,
        api,
    } = cmd;
    if !bare_repo.join("objects").is_dir() || !bare_repo.join("HEAD").is_file() {
        bail!("{} is not a bare git repository", bare_repo.display());
    }
    let secret = match secret {
        Some(s) => s,
        None => {
            let view: RepoView = Api::new(&api).get(&format!("/repos/{repo}/secret")).await?;
            view.secret.context("the server did not send the secret")?
        }
    };
    let hooks = bare_repo.join("hooks");
    std::fs::create_dir_all(&hooks)?;
    let path = hooks.join("post-receive");
    if let Ok(existing) = std::fs::read_to_string(&path)
        && !existing.contains(HOOK_MARKER)
        && !force
    {
        bail!(
            "{} already has a post-receive hook that is not Gantry's (use --force to replace it)",
            bare_repo.display()
        );
    }
    let quote = |s: &str| s.replace('\'', r"'\''");
    let exe = std::env::current_exe()?;
    let script = HOOK_TEMPLATE
        .replace("@GANTRY_SERVER@", &quote(api.server.trim_end_matches('/')))
        .replace("@GANTRY_REPO@", &quote(&repo))
        .replace("@GANTRY_HOOK_SECRET@", &quote(&secret))
        .replace("@GANTRY_BIN@", &quote(&exe.to_string_lossy()));
    // The hook holds the secret: written under another name with mode 0700 from the start (never readable by
    // others, even for a moment), then renamed into place.
    let temp = hooks.join(".post-receive.gantry-new");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&temp)
        .with_context(|| format!("cannot write {}", temp.display()))?;
    std::io::Write::write_all(&mut file, script.as_bytes())?;
    drop(file);
    std::fs::rename(&temp, &path).with_context(|| format!("cannot install {}", path.display()))?;
    println!(
        "installed {}: pushes of branches now notify {} for repository {repo}",
        path.display(),
        api.server
    );
    Ok(())
}

/// What the hook tells whoever pushed `git_ref`, a line each.
fn report(repo: &str, git_ref: &str, outcome: &HookOutcome) -> Vec<String> {
    let Some(n) = outcome.pipeline else {
        return vec![match &outcome.reason {
            Some(reason) => format!("{git_ref}: no pipeline: {reason}"),
            None => format!("{git_ref}: {}", outcome.outcome),
        }];
    };
    let head = format!("{git_ref}: pipeline #{n} ({})", outcome.outcome);
    let follow = format!("follow it: gantry pipeline show {repo} {n}");
    let Some(verdict) = &outcome.verdict else {
        return vec![format!("{head}, reading its .gantry.yml"), follow];
    };
    if let Some(error) = &verdict.error {
        return vec![format!("{head}: error: {error}")];
    }
    let n = verdict.jobs.len();
    let plural = if n == 1 { "" } else { "s" };
    let mut jobs = format!("{head}: {n} job{plural}: {}", verdict.jobs.join(", "));
    if !verdict.skipped.is_empty() {
        jobs.push_str(&format!(
            " ({} skipped by their `when:`)",
            verdict.skipped.join(", ")
        ));
    }
    vec![jobs, follow]
}

/// Reads post-receive lines (`OLD NEW REF`) from stdin and sends each branch update, signed.
pub async fn notify(args: NotifyArgs) -> Result<()> {
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    // The server answers with the pipeline, and with its verdict of the file if reading it takes less than
    // `wait`: whoever pushed sees a broken file now, not later in `pipeline list`.
    let url = format!(
        "{}/hooks/git?repo={}&wait={}",
        args.server.trim_end_matches('/'),
        args.repo,
        args.wait
    );
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut parts = line.split_whitespace();
        let (Some(before), Some(after), Some(git_ref)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !git_ref.starts_with("refs/heads/") {
            continue;
        }
        let body = serde_json::to_vec(
            &serde_json::json!({ "ref": git_ref, "before": before, "after": after }),
        )?;
        let signature = gantry_server::forge::sign_sha256(&args.secret, &body);
        let delivery = format!(
            "{}-{}",
            std::process::id(),
            hex::encode(sha2::Sha256::digest(&body))
        );
        let sent = client
            .post(&url)
            .header(GANTRY_SIGNATURE_HEADER, signature)
            .header(GANTRY_DELIVERY_HEADER, delivery.as_str())
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        // A post-receive hook cannot undo the push, so a failure is reported, not fatal.
        match sent {
            Ok(r) if r.status().is_success() => {
                let outcome: HookOutcome = r.json().await.unwrap_or(HookOutcome {
                    outcome: "sent".into(),
                    pipeline: None,
                    reason: None,
                    verdict: None,
                });
                for line in report(&args.repo, git_ref, &outcome) {
                    say!("gantry: {line}");
                }
            }
            Ok(r) => {
                let status = r.status();
                eprintln!(
                    "gantry: {git_ref}: the server answered {status}: {}",
                    r.text().await.unwrap_or_default()
                );
            }
            Err(e) => eprintln!("gantry: {git_ref}: cannot reach {}: {e}", args.server),
        }
    }
    Ok(())
}
