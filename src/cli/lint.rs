//! `gantry lint [FILE]`: reads a pipeline file as the server will, before it is pushed, and says what it makes
//! or where it is wrong, with the line, a caret and a hint.

use anyhow::{Context, Result, bail};
use clap::Args;
use gantry_model::Pipeline;
use gantry_model::pipeline::PIPELINE_FILE;
use std::path::PathBuf;

/// `gantry lint`'s options.
#[derive(Args, Clone, Debug)]
pub struct LintArgs {
    /// The pipeline file, or a directory holding one [default: ./.gantry.yml].
    pub file: Option<PathBuf>,
}

/// Parses and expands the file; prints its jobs, or the error, and fails on an error.
pub fn run(args: LintArgs) -> Result<()> {
    let mut path = args.file.unwrap_or_else(|| PathBuf::from(PIPELINE_FILE));
    if path.is_dir() {
        path = path.join(PIPELINE_FILE);
    }
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
    match Pipeline::parse(&text) {
        Ok(pipeline) => {
            say!("{}: ok, {}", path.display(), describe(&pipeline));
            for job in &pipeline.jobs {
                say!("  {}", job_line(job));
            }
            Ok(())
        }
        Err(e) => {
            let place = match (e.line, e.column) {
                (Some(line), Some(column)) => format!(":{line}:{column}"),
                (Some(line), None) => format!(":{line}"),
                _ => String::new(),
            };
            let key = e
                .key
                .as_ref()
                .map(|k| format!(" (key `{k}`)"))
                .unwrap_or_default();
            eprintln!("{}{place}: error{key}: {}", path.display(), e.message);
            if let Some(excerpt) = e.excerpt(&text) {
                eprint!("{excerpt}");
            }
            if let Some(hint) = &e.hint {
                eprintln!("hint: {hint}");
            }
            bail!("{} is not a valid pipeline file", path.display())
        }
    }
}

/// "3 jobs" and the file's own `when:`, in a few words.
fn describe(pipeline: &Pipeline) -> String {
    let n = pipeline.jobs.len();
    let mut text = format!("{n} job{}", if n == 1 { "" } else { "s" });
    if pipeline.when.is_some() {
        text.push_str(" (the file's `when:` decides which pushes run it)");
    }
    text
}

/// One job as the server will run it: name, image, steps and what it waits for.
fn job_line(job: &gantry_model::JobSpec) -> String {
    let steps = job.steps.len();
    let mut parts = vec![
        format!("image {}", job.image),
        format!("{steps} step{}", if steps == 1 { "" } else { "s" }),
    ];
    let list = |items: Vec<String>| items.join(", ");
    if !job.needs.is_empty() {
        parts.push(format!(
            "needs {}",
            list(job.needs.iter().map(|n| n.to_string()).collect())
        ));
    }
    if !job.services.is_empty() {
        parts.push(format!(
            "services {}",
            list(job.services.iter().map(|s| s.name.to_string()).collect())
        ));
    }
    if !job.runs_on.is_empty() {
        parts.push(format!("runs on {}", job.runs_on.join(", ")));
    }
    if job.when.is_some() {
        parts.push("only when its `when:` matches".into());
    }
    format!("{}: {}", job.name, parts.join("; "))
}
