//! `gantry secret …` and the token options of `gantry repo set`: values come from a flag, a file or stdin, so
//! they can stay out of the shell's history.

use super::api::{Api, ApiArgs};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::io::Read;
use std::path::PathBuf;

/// `gantry secret …`.
#[derive(Subcommand)]
pub enum SecretCommand {
    /// Set (or replace) a secret: its value from --value, else from stdin (one final newline dropped).
    Set {
        /// Repository name.
        repo: String,
        /// The variable's name (letters, digits, '_'; not CI or GANTRY_*).
        name: String,
        /// The value (it stays in your shell's history: prefer stdin).
        #[arg(long)]
        value: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List a repository's secrets: names and when they were set, never values.
    List {
        /// Repository name.
        repo: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Remove a secret.
    Rm {
        /// Repository name.
        repo: String,
        /// The variable's name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// The tokens of `gantry repo set`: each from the flag, or from a file (`-`: stdin); "" removes it.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The token to clone the repository with (a private one): `TOKEN` or `USER:TOKEN`; "" removes it.
    #[arg(long, conflicts_with = "clone_token_file")]
    clone_token: Option<String>,
    /// Read the clone token from this file (`-`: stdin).
    #[arg(long)]
    clone_token_file: Option<PathBuf>,
    /// The token commit statuses are posted with; "" removes it.
    #[arg(long, conflicts_with = "status_token_file")]
    status_token: Option<String>,
    /// Read the status token from this file (`-`: stdin).
    #[arg(long)]
    status_token_file: Option<PathBuf>,
}

impl TokenArgs {
    /// The clone and status tokens given, read from their files when so asked.
    pub fn read(self) -> Result<(Option<String>, Option<String>)> {
        if self.clone_token_file.as_deref() == Some("-".as_ref())
            && self.status_token_file.as_deref() == Some("-".as_ref())
        {
            bail!("only one token can come from stdin");
        }
        let clone = from_flag_or_file(self.clone_token, self.clone_token_file)?;
        let status = from_flag_or_file(self.status_token, self.status_token_file)?;
        Ok((
            clone.map(|t| t.trim().to_owned()),
            status.map(|t| t.trim().to_owned()),
        ))
    }
}

fn from_flag_or_file(flag: Option<String>, file: Option<PathBuf>) -> Result<Option<String>> {
    match (flag, file) {
        (Some(value), _) => Ok(Some(value)),
        (None, Some(path)) if path.as_os_str() == "-" => Ok(Some(read_stdin()?)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))
            .map(Some),
        (None, None) => Ok(None),
    }
}

fn read_stdin() -> Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the value from stdin")?;
    Ok(text)
}

/// Runs `gantry secret …`.
pub async fn run(cmd: SecretCommand) -> Result<()> {
    match cmd {
        SecretCommand::Set {
            repo,
            name,
            value,
            api,
        } => {
            let value = match value {
                Some(value) => value,
                None => {
                    let text = read_stdin()?;
                    let text = text.strip_suffix('\n').unwrap_or(&text);
                    text.strip_suffix('\r').unwrap_or(text).to_owned()
                }
            };
            let body = serde_json::json!({ "value": value });
            Api::new(&api)
                .call(
                    reqwest::Method::PUT,
                    &secret_path(&repo, &name),
                    Some(&body),
                )
                .await?;
            say!("secret {name} of {repo} set");
        }
        SecretCommand::List { repo, api } => {
            let list: serde_json::Value = Api::new(&api)
                .get(&format!("/repos/{repo}/secrets"))
                .await?;
            for secret in list["secrets"].as_array().into_iter().flatten() {
                say!(
                    "{}\t{}",
                    secret["name"].as_str().unwrap_or(""),
                    secret["updated_at"].as_str().unwrap_or("")
                );
            }
        }
        SecretCommand::Rm { repo, name, api } => {
            Api::new(&api)
                .call(reqwest::Method::DELETE, &secret_path(&repo, &name), None)
                .await?;
            say!("secret {name} of {repo} removed");
        }
    }
    Ok(())
}

/// The API path of a secret (repository names are path-safe; the server checks the secret's name).
fn secret_path(repo: &str, name: &str) -> String {
    format!("/repos/{repo}/secrets/{name}")
}
