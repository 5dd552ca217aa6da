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
    /// A token: the admin token, or one from `gantry token create` (needed for changes, and for reads on a
    /// private farm or of a private repository).
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

    /// The response if it succeeded, else an error with the server's message.
    async fn succeeded(response: reqwest::Response) -> Result<reqwest::Response> {
        let status = response.status();
        if !status.is_success() {
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            bail!(
                "the server answered {status}: {}",
                body["error"].as_str().unwrap_or("no message")
            );
        }
        Ok(response)
    }

    async fn answer<T: DeserializeOwned>(response: reqwest::Response) -> Result<T> {
        Ok(Self::succeeded(response).await?.json().await?)
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
        Self::succeeded(response).await?;
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
        /// Where its webhooks come from (gitea also stands for Forgejo; git is a plain git server's
        /// post-receive hook, see `gantry hook install`).
        #[arg(long, default_value = "git", value_parser = ["github", "gitlab", "gitea", "git"])]
        forge: String,
        /// The forge's name for it (owner/name; GitLab group/…/name) [default: read from --url].
        #[arg(long, alias = "forge-full-name")]
        full_name: Option<String>,
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
        /// Pull requests from forks may run jobs on `image: host`, this host's own file system (default:
        /// false, and such a pipeline ends in error).
        #[arg(long)]
        fork_host_image: Option<bool>,
        /// At most this many of its jobs run at once (0: no limit).
        #[arg(long)]
        max_running_jobs: Option<u32>,
        /// The pools its jobs may run on, comma-separated ("": any pool).
        #[arg(long)]
        pools: Option<String>,
        /// Only tokens (read scope or more) may read its pipelines, logs, deliveries and artifacts, whatever
        /// the farm's `private`.
        #[arg(long)]
        private: Option<bool>,
        /// The forge's API base URL for commit statuses ("": derived from the clone URL).
        #[arg(long)]
        forge_api_url: Option<String>,
        /// The context of its commit statuses ("": the server's `status_context`).
        #[arg(long)]
        status_context: Option<String>,
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
        /// The job: its id, or REPO NUMBER JOB (`demo 1 hello`).
        #[arg(num_args = 1..=3, required = true, value_name = "ID | REPO NUMBER JOB")]
        job: Vec<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// A job's log (raw bytes); `--follow` streams it live until the job ends.
    Log {
        /// The job: its id, or REPO NUMBER JOB (`demo 1 hello`).
        #[arg(num_args = 1..=3, required = true, value_name = "ID | REPO NUMBER JOB")]
        job: Vec<String>,
        /// Keep streaming until the job ends.
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// What to paste where, after adding `repo`: each forge names its webhook fields its own way.
fn added_repo_instructions(repo: &RepoView) -> String {
    let url = repo.webhook_url.as_deref().unwrap_or_default();
    let secret = repo.secret.as_deref().unwrap_or_default();
    let mut out = format!(
        "added repository {} ({}, {})\n",
        repo.name, repo.url, repo.forge
    );
    let how = match repo.forge.as_str() {
        "github" => format!(
            "In GitHub: Settings → Webhooks → Add webhook\n  Payload URL:  {url}\n  Content type: application/json\n  \
             Secret:       {secret}\n  Events:       pushes and pull requests\n"
        ),
        "gitlab" => format!(
            "In GitLab: Settings → Webhooks → Add new webhook\n  URL:          {url}\n  Secret token: {secret}\n  \
             Trigger:      push events, tag push events, merge request events\n"
        ),
        "gitea" => format!(
            "In Gitea or Forgejo: Settings → Webhooks → Add webhook → Gitea (or Forgejo)\n  Target URL:   {url}\n  \
             Content type: application/json\n  Secret:       {secret}\n  Trigger on:   push events and pull requests\n"
        ),
        _ => format!(
            "For a plain git server: gantry hook install /path/to/{}.git --repo {}\n  webhook URL:    {url}\n  \
             webhook secret: {secret}\n",
            repo.name, repo.name
        ),
    };
    out.push_str(&how);
    out
}

/// Runs `gantry repo …`.
pub async fn repo(cmd: RepoCommand) -> Result<()> {
    match cmd {
        RepoCommand::Add {
            name,
            url,
            forge,
            full_name,
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
                        forge_full_name: full_name,
                        secret,
                    },
                )
                .await?;
            print!("{}", added_repo_instructions(&repo));
        }
        RepoCommand::Set {
            name,
            cancel_previous,
            fork_host_image,
            max_running_jobs,
            pools,
            private,
            forge_api_url,
            status_context,
            tokens,
            api,
        } => {
            let pools = pools.map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            });
            let (clone_token, status_token) = tokens.read()?;
            let settings = RepoSettings {
                cancel_previous,
                fork_host_image,
                max_running_jobs,
                private,
                pools,
                forge_api_url,
                status_context,
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
                "{}: private {}, cancel_previous {}, fork_host_image {}, max_running_jobs {limit}, \
                 pools {}, clone token {}, status token {}",
                repo.name,
                repo.private,
                repo.cancel_previous,
                repo.fork_host_image,
                repo.pools
                    .as_ref()
                    .map_or("any".to_owned(), |p| p.join(",")),
                if repo.has_clone_token { "set" } else { "none" },
                if repo.has_status_token { "set" } else { "none" },
            );
        }
        RepoCommand::List { api } => {
            let repos: Vec<RepoView> = Api::new(&api).get("/repos").await?;
            for r in repos {
                let private = if r.private { "\tprivate" } else { "" };
                println!("{}\t{}\t{}{private}", r.name, r.forge, r.url);
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
            if let Some(j) = p.jobs.first() {
                println!(
                    "follow a job's log: gantry job log {repo} {number} {} --follow",
                    j.name
                );
            }
        }
    }
    Ok(())
}

/// The id of the job `target` names: an id, or REPO NUMBER JOB (looked up in the pipeline).
async fn job_id(api: &Api, target: &[String]) -> Result<String> {
    match target {
        [id] => Ok(id.clone()),
        [repo, number, name] => {
            let path = format!("/repos/{repo}/pipelines/{number}");
            let mut p: PipelineView = api.get(&path).await?;
            // Right after a push the pipeline may not have its jobs yet (its file is being read): wait a little.
            for _ in 0..20 {
                if !p.jobs.is_empty() || p.status.is_finished() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                p = api.get(&path).await?;
            }
            match p.jobs.iter().find(|j| &j.name == name) {
                Some(j) => Ok(j.id.to_string()),
                None => {
                    let names: Vec<&str> = p.jobs.iter().map(|j| j.name.as_str()).collect();
                    bail!(
                        "{repo} #{number} has no job {name:?}; its jobs: {}",
                        names.join(", ")
                    )
                }
            }
        }
        _ => bail!("name a job by its id, or by REPO NUMBER JOB (e.g. `demo 1 hello`)"),
    }
}

/// Runs `gantry job …`.
pub async fn job(cmd: JobCommand) -> Result<()> {
    match cmd {
        JobCommand::Show { job, api } => {
            let api = Api::new(&api);
            let id = job_id(&api, &job).await?;
            let j: JobView = api.get(&format!("/jobs/{id}")).await?;
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
            job,
            follow: false,
            api,
        } => {
            let api = Api::new(&api);
            let id = job_id(&api, &job).await?;
            let response = api
                .request(reqwest::Method::GET, &format!("/jobs/{id}/log"))
                .send()
                .await?;
            let response = Api::succeeded(response).await?;
            std::io::stdout().write_all(&response.bytes().await?)?;
        }
        JobCommand::Log {
            job,
            follow: true,
            api,
        } => {
            let api = Api::new(&api);
            let id = job_id(&api, &job).await?;
            follow_log(&api, &id).await?
        }
    }
    Ok(())
}

/// Prints a job's log as it grows, from its SSE stream, until the `end` event.
async fn follow_log(api: &Api, id: &str) -> Result<()> {
    let response = api
        .request(reqwest::Method::GET, &format!("/jobs/{id}/log/stream"))
        .send()
        .await?;
    let response = Api::succeeded(response).await?;
    let mut stream = response.bytes_stream();
    let mut reader = gantry_model::wire::SseReader::default();
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        for sse in reader.push(&chunk?) {
            match sse.kind.as_str() {
                "message" if !sse.data.is_empty() => {
                    let event: LogEvent = serde_json::from_str(&sse.data)?;
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
