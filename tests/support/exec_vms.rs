//! Instances for the `exec` provider's tests: a shell script the pool's `create`, `destroy` and `list` call,
//! which fails, makes instances that never register, or starts a real `gantry worker` (in one of the test's
//! network namespaces when it was given some), as its `mode` file says. It logs every call, and what it was
//! given, for the tests to check; its workers are stopped when it is dropped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SCRIPT: &str = r#"#!/bin/sh
# $1: create | destroy ID | list. Instances: files inst-ID holding a worker's pid (or nothing).
dir=$(dirname "$0")
alive() { [ -s "$dir/inst-$1" ] && kill -0 "$(cat "$dir/inst-$1")" 2>/dev/null; }
case "$1" in
create)
    date +%s.%N >> "$dir/creates"
    env | grep '^GANTRY_' | sort > "$dir/env-$GANTRY_WORKER_NAME"
    case "$(cat "$dir/mode")" in
    fail)
        echo "quota exceeded in zone test-1a" >&2
        exit 3 ;;
    silent)
        id="silent-$GANTRY_WORKER_NAME-$(date +%s%N)"
        : > "$dir/inst-$id"
        echo "$id" ;;
    worker)
        server="$GANTRY_SERVER"
        enter=""
        id="$GANTRY_WORKER_NAME"
        if [ -f "$dir/hosts" ]; then
            # One worker per host: the first host without a live one, reaching the server at its own address.
            chosen=""
            while read -r ns url; do
                busy=""
                for f in "$dir"/inst-*; do
                    [ -e "$f" ] || continue
                    i=${f#"$dir"/inst-}
                    if alive "$i" && [ "$(cat "$dir/host-$i" 2>/dev/null)" = "$ns" ]; then busy=1; fi
                done
                if [ -z "$busy" ]; then chosen=$ns; server=$url; break; fi
            done < "$dir/hosts"
            [ -n "$chosen" ] || { echo "every host has a worker" >&2; exit 4; }
            echo "$chosen" > "$dir/host-$id"
            enter="nsenter --net=/run/netns/$chosen"
        fi
        GANTRY_SERVER="$server" GANTRY_WORKER_DATA_DIR="$dir/data-$id" \
            setsid $enter @GANTRY@ worker >> "$dir/$id.log" 2>&1 < /dev/null &
        echo $! > "$dir/inst-$id"
        echo "$id" ;;
    esac ;;
destroy)
    echo "$2" >> "$dir/destroyed"
    if alive "$2"; then
        pid=$(cat "$dir/inst-$2")
        kill -TERM "$pid"
        n=0
        while kill -0 "$pid" 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
        kill -0 "$pid" 2>/dev/null && kill -TERM "$pid"
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
    rm -f "$dir/inst-$2" ;;
list)
    for f in "$dir"/inst-*; do
        [ -e "$f" ] || continue
        i=${f#"$dir"/inst-}
        if [ ! -s "$f" ] || alive "$i"; then echo "$i"; fi
    done ;;
esac
"#;

/// The script's directory and what it logged.
pub struct Vms {
    /// Where the script, its logs and its instances are.
    pub dir: PathBuf,
}

impl Vms {
    /// A fresh script in `mode` (`fail`, `silent` or `worker`).
    pub fn new(tag: &str, mode: &str) -> Vms {
        let dir = super::scratch_dir(tag);
        std::fs::write(
            dir.join("vm.sh"),
            SCRIPT.replace("@GANTRY@", super::farm::GANTRY),
        )
        .unwrap();
        let vms = Vms { dir };
        vms.set_mode(mode);
        vms
    }

    /// What `create` does from now on.
    pub fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("mode"), mode).unwrap();
    }

    /// Starts workers in these network namespaces, each reaching the server at its URL.
    pub fn set_hosts(&self, hosts: &[(&str, String)]) {
        let lines: String = hosts
            .iter()
            .map(|(ns, url)| format!("{ns} {url}\n"))
            .collect();
        std::fs::write(self.dir.join("hosts"), lines).unwrap();
    }

    /// A `[[pool]]` of the exec provider calling the script.
    pub fn pool(&self, name: &str, keys: &str) -> String {
        let script = self.dir.join("vm.sh");
        let script = script.display();
        format!(
            "[[pool]]\nname = \"{name}\"\nprovider = \"exec\"\nlabels = [\"linux\", \"{name}\"]\n{keys}\n\
             [pool.exec]\ncreate = \"sh {script} create\"\ndestroy = \"sh {script} destroy\"\n\
             list = \"sh {script} list\"\ntimeout = \"30s\"\n"
        )
    }

    /// When `create` was called (Unix seconds).
    pub fn creates(&self) -> Vec<f64> {
        self.read("creates")
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The ids `destroy` was given.
    pub fn destroyed(&self) -> Vec<String> {
        self.read("destroyed").lines().map(str::to_owned).collect()
    }

    /// The `GANTRY_*` environment `create` was given for worker `name`.
    pub fn env(&self, name: &str) -> String {
        self.read(&format!("env-{name}"))
    }

    /// The log of the worker of instance `id`.
    pub fn worker_log(&self, id: &str) -> String {
        self.read(&format!("{id}.log"))
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default()
    }

    fn pids(&self) -> Vec<i32> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("inst-"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            .collect()
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

impl Drop for Vms {
    /// Stops every worker the script started the way `destroy` does: a first SIGTERM drains it, a second stops
    /// its jobs (their containers go with them); SIGKILL only for one that hangs.
    fn drop(&mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        let pids: Vec<i32> = self.pids().into_iter().filter(|p| alive(*p)).collect();
        for signal_round in 0..2 {
            for pid in &pids {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
            }
            let until =
                Instant::now() + Duration::from_secs(if signal_round == 0 { 2 } else { 20 });
            while Instant::now() < until && pids.iter().any(|p| alive(*p)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for pid in pids.iter().filter(|p| alive(**p)) {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
    }
}
