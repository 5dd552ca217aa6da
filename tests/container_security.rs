//! A job's container from the inside: `gantry-probe` (tests/support/probe.rs) makes the forbidden calls itself
//! and the test checks that the kernel refused each; ordinary build tools still work under the same filter.

mod support;

use std::collections::HashMap;
use std::time::Duration;
use support::farm::Farm;
use support::run;

const PROBE: &str = env!("CARGO_BIN_EXE_gantry-probe");

async fn job_log(pipeline: &str, name: &str, userns: bool) -> (serde_json::Value, String) {
    let farm = Farm::up_userns(userns);
    let repo = farm.hooked_repo(name);
    // The probe travels in the commit: the build dir may be under /tmp, which a job sees as its own empty tmpfs.
    std::fs::copy(PROBE, repo.work.join("gantry-probe")).unwrap();
    let port = farm.url.rsplit(':').next().unwrap().to_owned();
    repo.push_pipeline(&pipeline.replace("PORT", &port));
    let p = farm.finished_pipeline(name, 1).await;
    let job = p["jobs"][0]["id"].as_str().unwrap().to_owned();
    let log = String::from_utf8(farm.get_bytes(&format!("/jobs/{job}/log")).await).unwrap();
    (p, log)
}

fn refused_with(value: &str, allowed: &[&str]) -> bool {
    allowed.iter().any(|e| value == format!("refused ({e})"))
}

#[test]
fn a_job_cannot_mount_unshare_reboot_load_modules_trace_or_reach_the_host() {
    probe_is_refused_everything(true);
}

#[test]
fn without_a_user_namespace_too() {
    probe_is_refused_everything(false);
}

fn probe_is_refused_everything(userns: bool) {
    run(Duration::from_secs(300), async {
        let (p, log) = job_log(
            "jobs:\n  probe:\n    steps: [\"./gantry-probe PORT\"]\n",
            "probe",
            userns,
        )
        .await;
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        let seen: HashMap<&str, &str> = log.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            *seen
                .get(k)
                .unwrap_or_else(|| panic!("the probe printed no {k}:\n{log}"))
        };
        for call in [
            "mount",
            "unshare_mount",
            "unshare_user",
            "reboot",
            "init_module",
            "ptrace",
            "raw_socket",
            "mknod_block",
        ] {
            assert!(
                refused_with(get(call), &["EPERM", "ENOSYS"]),
                "{call}: {}\n{log}",
                get(call)
            );
        }
        // The job really ran the way this test says: in a user namespace of its own, or in the host's.
        assert_eq!(
            get("uid_map") == "0 0 4294967295",
            !userns,
            "uid_map {}",
            get("uid_map")
        );
        // Terminal injection (TIOCSTI, TIOCLINUX), io_uring, vsock and AF_ALG sockets, another process's fds.
        for call in [
            "tiocsti",
            "tiocsti_high_bits",
            "tioclinux",
            "vsock_socket",
            "alg_socket",
        ] {
            assert_eq!(get(call), "refused (EPERM)", "{call}\n{log}");
        }
        for call in ["io_uring", "pidfd_getfd"] {
            assert!(
                refused_with(get(call), &["EPERM", "ENOSYS"]),
                "{call}: {}\n{log}",
                get(call)
            );
        }
        assert!(
            refused_with(get("tty_open"), &["ENXIO", "ENOENT"]),
            "/dev/tty opened a terminal: {}",
            get("tty_open")
        );
        assert!(
            refused_with(get("pid1_fds"), &["EACCES", "EPERM"]),
            "PID 1's fds are open to the job: {}",
            get("pid1_fds")
        );
        assert_eq!(
            get("clone3"),
            "refused (ENOSYS)",
            "clone3 must fall back to clone"
        );
        for path in ["proc_sys_write", "sys_write"] {
            assert!(
                refused_with(get(path), &["EROFS", "EACCES", "EPERM"]),
                "{path}: {}",
                get(path)
            );
        }
        let processes: u32 = get("processes").parse().unwrap();
        assert!(
            processes <= 4,
            "the job must see only its own processes, saw {processes}"
        );
        assert_eq!(
            get("interfaces"),
            "lo",
            "the job's network has only loopback"
        );
        assert!(
            get("connect_host_port").starts_with("refused"),
            "the server's port on the host's loopback was reachable"
        );
        let bits = |k: &str| u64::from_str_radix(get(k), 16).unwrap();
        for (name, bit) in [
            ("SYS_ADMIN", 21),
            ("NET_RAW", 13),
            ("SYS_PTRACE", 19),
            ("SYS_MODULE", 16),
            ("MKNOD", 27),
        ] {
            assert_eq!(
                bits("cap_bnd") & (1 << bit),
                0,
                "CAP_{name} is in the bounding set"
            );
            assert_eq!(bits("cap_eff") & (1 << bit), 0, "CAP_{name} is effective");
        }
        assert_eq!(bits("cap_amb"), 0, "no ambient capabilities");
        assert_eq!(get("no_new_privs"), "1");
        assert_eq!(get("seccomp"), "2", "a seccomp filter is installed");
    });
}

#[test]
fn ordinary_build_tools_work_under_the_same_restrictions() {
    run(Duration::from_secs(300), async {
        let steps = [
            "git -c user.name=a -c user.email=a@b init -q /tmp/r && cd /tmp/r && git -c user.name=a -c user.email=a@b commit -q --allow-empty -m x && echo git=ok",
            "printf 'int main(void){return 0;}' > /tmp/m.c && cc -o /tmp/m /tmp/m.c && /tmp/m && echo cc=ok",
            "python3 -c 'import subprocess, threading; t = threading.Thread(target=print); t.start(); t.join(); subprocess.run([\"true\"], check=True)' && echo python=ok",
            "(sleep 0.2 & wait) && echo background=ok",
            "chown 1000:1000 /tmp/m && su -s /bin/sh nobody -c 'id -u' && echo setuid=ok",
        ];
        let yaml: String = steps
            .iter()
            .map(|s| format!("      - {}\n", serde_json::to_string(s).unwrap()))
            .collect();
        let (p, log) = job_log(
            &format!("jobs:\n  tools:\n    steps:\n{yaml}"),
            "tools",
            true,
        )
        .await;
        assert_eq!(p["status"], "success", "{p:#}\n{log}");
        for tool in ["git", "cc", "python", "background", "setuid"] {
            assert!(log.contains(&format!("{tool}=ok")), "{tool} failed:\n{log}");
        }
    });
}
