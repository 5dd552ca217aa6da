//! The client verbs: the JSON API from the command line.

use anyhow::{Context, Result, bail};
use base64::Engine;
use clap::{Args, Subcommand};
use futures::StreamExt;
use gantry_model::wire::{
    JobView, LogEvent, NewRepo, PipelinePage, PipelineView, RepoSettings, RepoView,
};
use serde::de::DeserializeOwned;
use std::io::Write;

/// Where the server is and who is asking.
#[derive(Args, Clone, Debug)]
pub struct ApiArgs {
    /// The server's URL.
    #[arg(long, env = "GANTRY_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The admin token (needed for changes).
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// A JSON API client.
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client for the server and token given.
    pub fn new(args: &ApiArgs) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/api/v1", args.server.trim_end_matches('/')),
            token: args.token.clone(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => request.bearer_auth(t),
            None => request,
        }
    }

    async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            bail!(
                "the server answered {status}: {}",
                body["error"].as_str().unwrap_or("no message")
            );
        }
        Ok(response.json().await?)
    }

    /// `GET` a JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let response = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        Self::answer(response).await
    }

    /// `POST` JSON, get JSON.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        self.send(reqwest::Method::POST, path, body).await
    }

    /// `PATCH` JSON, get JSON.
    pub async fn patch<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        self.send(reqwest::Method::PATCH, path, body).await
    }

    /// Sends `method` (with a JSON body when given) and expects success, with no answer to read.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<()> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            bail!(
                "the server answered {status}: {}",
                body["error"].as_str().unwrap_or("no message")
            );
        }
        Ok(())
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T> {
        let response = self
            .request(method, path)
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        Self::answer(response).await
    }
}

/// `gantry repo …`.
#[derive(Subcommand)]
pub enum RepoCommand {
    /// Add a repository; prints its webhook URL and secret.
    Add {
        /// Gantry's name for it.
        name: String,
        /// Clone URL (or path, for a repository on this host).
        #[arg(long)]
        url: String,
        /// github or git (GitLab and Gitea receivers come later).
        #[arg(long, default_value = "git")]
        forge: String,
        /// Webhook secret [default: generated].
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List repositories.
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change a repository's settings.
    Set {
        /// Gantry's name for it.
        name: String,
        /// A new push to a branch cancels that branch's unfinished pipelines.
        #[arg(long)]
        cancel_previous: Option<bool>,
        /// At most this many of its jobs run at once (0: no limit).
        #[arg(long)]
        max_running_jobs: Option<u32>,
        #[command(flatten)]
        tokens: super::secret::TokenArgs,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `gantry pipeline …`.
#[derive(Subcommand)]
pub enum PipelineCommand {
    /// A repository's pipelines, newest first.
    List {
        /// Repository name.
        repo: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One pipeline and its jobs.
    Show {
        /// Repository name.
        repo: String,
        /// Pipeline number.
        number: i64,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// `gantry job …`.
#[derive(Subcommand)]
pub enum JobCommand {
    /// One job and its steps.
    Show {
        /// Job id.
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A job's log (raw bytes); `--follow` streams it live until the job ends.
    Log {
        /// Job id.
        id: String,
        /// Keep streaming until the job ends.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs `gantry repo …`.
pub async fn repo(cmd: RepoCommand) -> Result<()> {
    match cmd {
        RepoCommand::Add {
            name,
            url,
            forge,
            secret,
            api,
        } => {
            let repo: RepoView = Api::new(&api)
                .post(
                    "/repos",
                    &NewRepo {
                        name,
                        url,
                        forge: Some(forge),
                        secret,
                    },
                )
                .await?;
            println!("added repository {} ({})", repo.name, repo.url);
            println!("  webhook URL:    {}", repo.webhook_url.unwrap_or_default());
            println!("  webhook secret: {}", repo.secret.unwrap_or_default());
        }
        RepoCommand::Set {
            name,
            cancel_previous,
            max_running_jobs,
            tokens,
            api,
        } => {
            let (clone_token, status_token) = tokens.read()?;
            let settings = RepoSettings {
                cancel_previous,
                max_running_jobs,
                clone_token,
                status_token,
            };
            let repo: RepoView = Api::new(&api)
                .patch(&format!("/repos/{name}"), &settings)
                .await?;
            let limit = repo
                .max_running_jobs
                .map_or("no limit".to_owned(), |n| n.to_string());
            println!(
                "{}: cancel_previous {}, max_running_jobs {limit}, clone token {}, status token {}",
                repo.name,
                repo.cancel_previous,
                if repo.has_clone_token { "set" } else { "none" },
                if repo.has_status_token { "set" } else { "none" },
            );
        }
        RepoCommand::List { api } => {
            let repos: Vec<RepoView> = Api::new(&api).get("/repos").await?;
            for r in repos {
                println!("{}\t{}\t{}", r.name, r.forge, r.url);
            }
        }
    }
    Ok(())
}

fn print_pipeline(p: &PipelineView) {
    println!(
        "{} #{}\t{}\t{}\t{}\t{}",
        p.repo,
        p.number,
        p.status,
        p.git_ref,
        &p.commit[..p.commit.len().min(10)],
        p.message.as_deref().unwrap_or("")
    );
}

/// Runs `gantry pipeline …`.
pub async fn pipeline(cmd: PipelineCommand) -> Result<()> {
    match cmd {
        PipelineCommand::List { repo, api } => {
            let page: PipelinePage = Api::new(&api)
                .get(&format!("/repos/{repo}/pipelines"))
                .await?;
            page.pipelines.iter().for_each(print_pipeline);
        }
        PipelineCommand::Show { repo, number, api } => {
            let p: PipelineView = Api::new(&api)
                .get(&format!("/repos/{repo}/pipelines/{number}"))
                .await?;
            print_pipeline(&p);
            for j in &p.jobs {
                let exit = j.exit_code.map(|c| format!("exit {c}")).unwrap_or_default();
                println!(
                    "  {}\t{}\t{}\t{exit}\t{}",
                    j.id,
                    j.name,
                    j.status,
                    j.message.as_deref().unwrap_or("")
                );
            }
        }
    }
    Ok(())
}

/// Runs `gantry job …`.
pub async fn job(cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Show { id, api } => {
            let j: JobView = Api::new(&api).get(&format!("/jobs/{id}")).await?;
            println!(
                "{}\t{}\tattempt {}\t{}",
                j.name,
                j.status,
                j.attempt,
                j.message.as_deref().unwrap_or("")
            );
            for s in &j.steps {
                let exit = s
                    .exit_code
                    .map(|c| format!("exit {c}"))
                    .unwrap_or_else(|| "running".into());
                println!("  step {}: {}\t{exit}", s.index + 1, s.command);
            }
        }
        JobCommand::Log {
            id,
            follow: false,
            api,
        } => {
            let api = Api::new(&api);
            let response = api
                .request(reqwest::Method::GET, &format!("/jobs/{id}/log"))
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("the server answered {}", response.status());
            }
            std::io::stdout().write_all(&response.bytes().await?)?;
        }
        JobCommand::Log {
            id,
            follow: true,
            api,
        } => follow_log(&Api::new(&api), &id).await?,
    }
    Ok(())
}

/// Prints a job's log as it grows, from its SSE stream, until the `end` event.
async fn follow_log(api: &Api, id: &str) -> Result<()> {
    let response = api
        .request(reqwest::Method::GET, &format!("/jobs/{id}/log/stream"))
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("the server answered {}", response.status());
    }
    let mut stream = response.bytes_stream();
    let mut buffer = Vec::new();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        buffer.extend_from_slice(&chunk?);
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let kind = text
                .lines()
                .find_map(|l| l.strip_prefix("event:"))
                .map(str::trim)
                .unwrap_or("message");
            let data: String = text
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(str::trim_start)
                .collect();
            match kind {
                "message" if !data.is_empty() => {
                    let event: LogEvent = serde_json::from_str(&data)?;
                    stdout.write_all(
                        &base64::engine::general_purpose::STANDARD.decode(event.data)?,
                    )?;
                    stdout.flush()?;
                }
                "end" => return Ok(()),
                _ => {}
            }
        }
    }
    bail!("the connection closed before the job ended; run the command again to resume")
}
