//! Gantry typed into an interactive shell on a real pseudo-terminal, as a user does it: util-linux's `script`
//! makes the terminal, bash runs in it with job control, and everything the terminal shows (its echo included)
//! is kept, so a test can tell whether anything reached it.

use super::farm::{Farm, GANTRY};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A terminal with an interactive bash in it.
pub struct Terminal {
    keyboard: ChildStdin,
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Opens the terminal; the child is `script`, which holds it (closing it ends the shell).
    pub fn open() -> (Terminal, Child) {
        let script = which("script").expect("script is missing (apt-get install util-linux)");
        let mut child = Command::new(script)
            .args(["--quiet", "--flush", "--command"])
            .arg("bash --norc --noprofile -i")
            .arg("/dev/null")
            .env("PS1", "$ ")
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start script");
        let keyboard = child.stdin.take().unwrap();
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        {
            let screen = screen.clone();
            // Read to the end, always: a terminal whose output nobody reads stops its programs.
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = stdout.read(&mut buf) {
                    screen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        (Terminal { keyboard, screen }, child)
    }

    /// Types `keys` (a line ends with `\n`; `\x03` is Ctrl-C).
    pub fn type_keys(&mut self, keys: &str) {
        self.keyboard.write_all(keys.as_bytes()).unwrap();
    }

    /// Everything the terminal showed so far.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().unwrap()).into_owned()
    }

    /// Waits until the screen shows `text` at the start of a line (not in the echo of a typed command).
    pub fn wait_for_line(&self, text: &str, limit: Duration) {
        super::eventually_blocking(&format!("{text:?} on the terminal"), limit, || {
            let screen = self.screen();
            screen
                .lines()
                .any(|line| line.trim_start_matches("$ ").starts_with(text))
                .then_some(())
        });
    }
}

/// A farm started from an interactive shell on a terminal of its own.
pub struct TerminalFarm {
    /// The farm (its process is `script`, which holds the terminal).
    pub farm: Farm,
    terminal: Terminal,
}

impl TerminalFarm {
    /// Opens a terminal and types `gantry up --data-dir … EXTRA` at its prompt.
    pub fn up(extra: &[&str]) -> TerminalFarm {
        let data_dir = super::scratch_dir("terminal-farm");
        let (mut terminal, child) = Terminal::open();
        let log = data_dir.with_extension("log");
        terminal.type_keys(&format!(
            "GANTRY_LOG=info {GANTRY} up --listen 127.0.0.1:0 --data-dir {} {} 2>>{}\n",
            data_dir.display(),
            extra.join(" "),
            log.display()
        ));
        let (url, admin) = super::eventually_blocking(
            "gantry up to print its URL on the terminal",
            Duration::from_secs(60),
            || {
                let text = terminal.screen();
                let value = |prefix: &str| {
                    text.lines()
                        .find_map(|l| l.trim().strip_prefix(prefix))
                        .and_then(|rest| rest.split_whitespace().next())
                        .map(|v| v.trim_end_matches('/').to_owned())
                };
                Some((
                    value("Gantry is up: dashboard at ")?,
                    value("admin token:")?,
                ))
            },
        );
        TerminalFarm {
            farm: Farm::attach(child, url, admin, data_dir),
            terminal,
        }
    }

    /// Everything the terminal showed so far.
    pub fn screen(&self) -> String {
        self.terminal.screen()
    }

    /// Whether `gantry up` still runs (a Ctrl-C typed into the terminal by anyone would have stopped it).
    pub fn gantry_is_running(&self) -> bool {
        let pattern = format!(
            "up --listen 127.0.0.1:0 --data-dir {}",
            self.farm.data_dir.display()
        );
        let out = Command::new("pgrep")
            .args(["-f", &pattern])
            .output()
            .expect("pgrep (apt-get install procps)");
        out.status.success()
    }

    /// Ctrl-C from the keyboard, waits for `gantry up` to stop, then lets the shell read whatever the
    /// terminal's input still holds before `exit` (so anything typed into it by someone else runs, as it
    /// would for a user) and waits for the shell to end; returns the screen.
    pub fn stop(mut self) -> String {
        self.terminal.type_keys("\x03");
        super::eventually_blocking("gantry up to stop", Duration::from_secs(60), || {
            (!self.gantry_is_running()).then_some(())
        });
        self.terminal.type_keys("exit\n");
        self.farm
            .wait_exit(Duration::from_secs(20))
            .expect("the shell did not exit");
        self.terminal.screen()
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| Path::new(path).is_file())
    })
}
