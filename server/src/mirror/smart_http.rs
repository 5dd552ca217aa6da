//! The mirrors over git's smart HTTP protocol, fetch only, through git's own `git http-backend` run as a CGI
//! program (as Apache or nginx would run it): the handler has authorised the caller (a worker holding a lease
//! of a job of that repository); this runs the program on the request and hands back its answer as a stream.

use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdout, Command};

/// The most a CGI header block may hold before the answer is taken for garbage.
const MAX_HEADERS: usize = 64 * 1024;

/// One request, as CGI passes it on.
#[derive(Debug)]
pub struct GitRequest<'a> {
    /// `GET` or `POST`.
    pub method: &'a str,
    /// The repository and what of it: `/NAME.git/info/refs`, `/NAME.git/git-upload-pack`.
    pub path_info: String,
    /// The query string (`service=git-upload-pack`).
    pub query: &'a str,
    /// The request's `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The request's `Content-Encoding` (git gzips large requests).
    pub content_encoding: Option<&'a str>,
    /// The request's `Git-Protocol` (version 2 when the client asks for it).
    pub git_protocol: Option<&'a str>,
}

/// The program's answer: status, headers, and the body still streaming from it.
pub struct GitResponse {
    /// The HTTP status (`Status:` of the CGI answer; 200 without one).
    pub status: u16,
    /// Its headers but `Status`.
    pub headers: Vec<(String, String)>,
    /// The rest of its output.
    pub body: BufReader<ChildStdout>,
    /// The program, killed when dropped: keep it as long as the body is read.
    pub child: tokio::process::Child,
}

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
pub enum SmartHttpError {
    /// Only fetching is served: a push is refused.
    #[error("this is a read-only mirror: pushing is refused")]
    Push,
    /// `git http-backend` could not be run or answered garbage.
    #[error("git http-backend: {0}")]
    Backend(String),
}

/// Runs `git http-backend` on `request` against the mirrors under `root`, with `body` on its stdin.
pub async fn serve(
    root: &Path,
    request: GitRequest<'_>,
    body: Vec<u8>,
) -> Result<GitResponse, SmartHttpError> {
    if request.path_info.ends_with("/git-receive-pack") || request.query.contains("receive-pack") {
        return Err(SmartHttpError::Push);
    }
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", request.method)
        .env("PATH_INFO", &request.path_info)
        .env("QUERY_STRING", request.query)
        .env("CONTENT_LENGTH", body.len().to_string())
        // The mirrors are the server's own (a root-owned data dir looks "dubious" to git otherwise), and
        // pushes are refused here and by git alike.
        .env("GIT_CONFIG_COUNT", "2")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .env("GIT_CONFIG_KEY_1", "http.receivepack")
        .env("GIT_CONFIG_VALUE_1", "false")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in [
        ("CONTENT_TYPE", request.content_type),
        ("HTTP_CONTENT_ENCODING", request.content_encoding),
        ("GIT_PROTOCOL", request.git_protocol),
    ] {
        if let Some(value) = value {
            command.env(name, value);
        }
    }
    let mut child = command.spawn().map_err(|e| {
        SmartHttpError::Backend(format!(
            "cannot run it ({e}): install git (Debian's git package)"
        ))
    })?;
    let mut stdin = child.stdin.take().expect("piped");
    // Written beside the reading: a big request and a big answer would otherwise wait on each other.
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    if let Some(mut stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            if !text.trim().is_empty() {
                tracing::warn!(stderr = %text.trim(), "git http-backend");
            }
        });
    }
    let mut out = BufReader::new(child.stdout.take().expect("piped"));
    let (status, headers) = read_headers(&mut out).await?;
    Ok(GitResponse {
        status,
        headers,
        body: out,
        child,
    })
}

/// The CGI header block: `Status: 404 Not Found` and the response's own headers, up to the blank line.
async fn read_headers(
    out: &mut BufReader<ChildStdout>,
) -> Result<(u16, Vec<(String, String)>), SmartHttpError> {
    let mut status = 200;
    let mut headers = Vec::new();
    let mut read = 0;
    loop {
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .await
            .map_err(|e| SmartHttpError::Backend(e.to_string()))?;
        read += n;
        if n == 0 || read > MAX_HEADERS {
            return Err(SmartHttpError::Backend(
                "it ended or rambled before the end of its headers".into(),
            ));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            return Ok((status, headers));
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(SmartHttpError::Backend(format!("a header line {line:?}")));
        };
        let value = value.trim().to_owned();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .ok_or_else(|| SmartHttpError::Backend(format!("a status {value:?}")))?;
        } else {
            headers.push((name.to_owned(), value));
        }
    }
}
