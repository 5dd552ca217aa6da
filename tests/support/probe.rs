//! `gantry-probe`: runs inside a job's container and tries, by itself, what a job must not be able to do.
//! Prints one `name=verdict` line per check: `refused (ERRNO)` when the kernel said no, `ALLOWED` or a
//! description when it did not. The container security test reads these lines. Usage: `gantry-probe HOST_PORT`.
#![allow(unsafe_code)] // the point is to make the raw system calls ourselves

use std::io::Write;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn verdict(result: libc::c_long) -> String {
    if result < 0 {
        format!("refused ({:?})", nix::errno::Errno::from_raw(errno()))
    } else {
        "ALLOWED".into()
    }
}

fn say(name: &str, what: String) {
    let _ = writeln!(std::io::stdout(), "{name}={what}");
}

fn status_field(name: &str) -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or("?")
        .trim()
        .to_owned()
}

fn write_refused(path: &str) -> String {
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(_) => "ALLOWED".into(),
        Err(e) => format!(
            "refused ({:?})",
            nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
        ),
    }
}

fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080);
    let _ = std::fs::create_dir_all("/tmp/probe-mnt");
    // SAFETY (all calls below): plain system calls with valid or deliberately invalid arguments; none of them
    // touches this process's memory except through the pointers given, which are valid C strings or null.
    unsafe {
        let tmpfs = c"tmpfs";
        let target = c"/tmp/probe-mnt";
        say(
            "mount",
            verdict(libc::mount(
                tmpfs.as_ptr(),
                target.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            ) as libc::c_long),
        );
        say(
            "unshare_mount",
            verdict(libc::unshare(libc::CLONE_NEWNS) as libc::c_long),
        );
        say(
            "unshare_user",
            verdict(libc::unshare(libc::CLONE_NEWUSER) as libc::c_long),
        );
        // An invalid command: harmless even if the call were let through (EINVAL instead of EPERM).
        say(
            "reboot",
            verdict(libc::syscall(
                libc::SYS_reboot,
                0xfee1deadu32,
                672274793,
                0x0bad_c0de,
                0usize,
            )),
        );
        say(
            "init_module",
            verdict(libc::syscall(
                libc::SYS_init_module,
                std::ptr::null::<u8>(),
                0usize,
                c"".as_ptr(),
            )),
        );
        say(
            "ptrace",
            verdict(libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0)),
        );
        let raw = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        say("raw_socket", verdict(raw as libc::c_long));
        say(
            "clone3",
            verdict(libc::syscall(
                libc::SYS_clone3,
                std::ptr::null::<u8>(),
                0usize,
            )),
        );
        say(
            "mknod_block",
            verdict(libc::mknod(
                c"/tmp/probe-disk".as_ptr(),
                libc::S_IFBLK | 0o600,
                libc::makedev(254, 0),
            ) as libc::c_long),
        );
    }
    say("proc_sys_write", write_refused("/proc/sys/kernel/hostname"));
    say("sys_write", write_refused("/sys/class/net/lo/mtu"));
    let processes = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .chars()
                        .all(|c| c.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0);
    say("processes", processes.to_string());
    let mut interfaces: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    interfaces.sort();
    say("interfaces", interfaces.join(","));
    let connect = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        std::time::Duration::from_secs(2),
    );
    say(
        "connect_host_port",
        match connect {
            Ok(_) => "ALLOWED".into(),
            Err(e) => format!("refused ({})", e.kind()),
        },
    );
    say("cap_eff", status_field("CapEff"));
    say("cap_bnd", status_field("CapBnd"));
    say("cap_amb", status_field("CapAmb"));
    say("no_new_privs", status_field("NoNewPrivs"));
    say("seccomp", status_field("Seccomp"));
}
