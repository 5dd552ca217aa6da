//! `gantry token create|list|revoke`: named API tokens with a scope (admin).

use super::api::{Api, ApiArgs};
use anyhow::Result;
use clap::Subcommand;
use gantry_model::wire::{NewToken, Scope, TokenList, TokenView};

/// `gantry token …`.
#[derive(Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it (the only time it is shown).
    Create {
        /// A name to list and revoke it by.
        #[arg(long)]
        name: String,
        /// read: read everything, also on a private farm; write: and cancel, retry, trigger; admin: everything.
        #[arg(long)]
        scope: Scope,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// List the tokens (names, scopes, ages; never their values).
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Revoke a token: it stops working at once.
    Revoke {
        /// Its name.
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

/// Runs `gantry token …`.
pub async fn run(cmd: TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Create { name, scope, api } => {
            let made: TokenView = Api::new(&api)
                .post("/tokens", &NewToken { name, scope })
                .await?;
            say!(
                "token {} ({} scope); it is shown only now:\n{}",
                made.name,
                made.scope,
                made.token.unwrap_or_default()
            );
        }
        TokenCommand::List { api } => {
            let list: TokenList = Api::new(&api).get("/tokens").await?;
            for t in list.tokens {
                say!(
                    "{}\t{}\t{}",
                    t.name,
                    t.scope,
                    t.created_at.format("%Y-%m-%d %H:%M")
                );
            }
        }
        TokenCommand::Revoke { name, api } => {
            Api::new(&api)
                .call(reqwest::Method::DELETE, &format!("/tokens/{name}"), None)
                .await?;
            say!("token {name} revoked");
        }
    }
    Ok(())
}
