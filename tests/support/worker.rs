//! A `gantry worker` process of its own, registered with a farm started by [`Farm::serve_with`] (`gantry
//! server`), so that a test
//! can stop, kill or restart it.

use super::farm::{Farm, GANTRY};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `gantry worker`; stopped (SIGINT, then SIGKILL) when dropped.
pub struct Worker {
    child: Child,
    /// Its name.
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Farm {
    /// Starts a worker called `name` with its own data dir.
    pub fn worker(&self, name: &str) -> Worker {
        self.worker_with(name, &[])
    }

    /// [`Farm::worker`] with more flags (e.g. `--capacity 2`).
    pub fn worker_with(&self, name: &str, extra: &[&str]) -> Worker {
        let pool_token = self
            .pool_token
            .as_deref()
            .expect("workers need the pool token gantry server prints on first start");
        self.worker_in_pool(name, pool_token, extra)
    }

    /// A worker registering with `pool_token` (another pool's, made with `POST /api/v1/pools`).
    pub fn worker_in_pool(&self, name: &str, pool_token: &str, extra: &[&str]) -> Worker {
        let data_dir = self.data_dir.with_extension(name);
        let log = self.data_dir.with_extension(format!("{name}.log"));
        let child = Command::new(GANTRY)
            .args([
                "worker",
                "--server",
                &self.url,
                "--name",
                name,
                "--data-dir",
            ])
            .arg(&data_dir)
            .args(extra)
            .env("GANTRY_POOL_TOKEN", pool_token)
            .env("GANTRY_LOG", "info,gantry_worker=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
            .spawn()
            .expect("cannot start gantry worker");
        Worker {
            child,
            name: name.to_owned(),
            log,
        }
    }
}

impl Worker {
    /// Sends `signal` to the worker process.
    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// SIGKILLs it and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Its exit status, if it exited within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = std::time::Instant::now() + limit;
        while std::time::Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// What it wrote to stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGCONT);
        let _ = kill(pid, Signal::SIGINT);
        for _ in 0..200 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
}
