//! A real OCI registry for the tests: Debian's `docker-registry` on a free 127.0.0.1 port with a scratch
//! storage dir, stopped when dropped (and by a watchdog if the test process dies first). Its access log says
//! which blobs were downloaded.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`, as image references spell it.
    pub addr: String,
    log: PathBuf,
}

impl Registry {
    /// Starts one and waits until it answers `GET /v2/`.
    pub fn start() -> Registry {
        assert!(
            std::path::Path::new(BINARY).exists(),
            "{BINARY} is missing: apt-get install docker-registry"
        );
        let dir = super::scratch_dir("registry");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{ level: info, accesslog: {{ disabled: false }} }}\n\
                 storage: {{ filesystem: {{ rootdirectory: {} }}, delete: {{ enabled: true }} }}\n\
                 http: {{ addr: {addr} }}\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let log = dir.join("registry.log");
        // One open file for both streams: the access log goes to stdout, the rest to stderr.
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {BINARY} ({e}): apt-get install docker-registry")
            });
        // `setsid -f` detaches the watchdog, so it stops the registry even if this process is killed.
        let watchdog = format!(
            "while kill -0 {me} 2>/dev/null; do sleep 0.5; done; kill {registry} 2>/dev/null",
            me = std::process::id(),
            registry = child.id()
        );
        Command::new("setsid")
            .args(["-f", "sh", "-c", &watchdog])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("cannot start the registry watchdog (setsid is in util-linux)");
        let registry = Registry { child, addr, log };
        super::eventually_blocking("the registry to answer", Duration::from_secs(20), || {
            let mut stream = std::net::TcpStream::connect(&registry.addr).ok()?;
            use std::io::{Read, Write};
            stream
                .write_all(b"GET /v2/ HTTP/1.0\r\nHost: registry\r\n\r\n")
                .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.0 200").then_some(())
        });
        registry
    }

    /// Starts one holding `test/busybox:latest`, built offline by umoci from Debian's busybox-static, with an
    /// `Env` (`PATH=/bin`, `IMAGE_VAR=from-image`, `JOB_WINS=image`) and `WorkingDir` `/srv/app`.
    pub fn with_busybox() -> Registry {
        let registry = Registry::start();
        let dir = super::scratch_dir("busybox");
        let env = ["PATH=/bin", "IMAGE_VAR=from-image", "JOB_WINS=image"];
        let layout = super::oci::umoci_busybox(&dir, &env, "/srv/app");
        super::oci::skopeo_push(
            &layout,
            "busybox",
            &format!("{}/test/busybox:latest", registry.addr),
        );
        registry
    }

    /// The access log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The blob digests `GET` successfully in `log` (a slice of [`Registry::log`]), one per download.
    pub fn blob_downloads(log: &str) -> Vec<String> {
        log.lines()
            .filter(|line| line.contains("\"GET /v2/") && line.contains("/blobs/sha256:"))
            .filter(|line| line.contains("\" 200 "))
            .filter_map(|line| {
                let at = line.find("/blobs/")? + "/blobs/".len();
                let digest: String = line[at..]
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect();
                Some(digest)
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
