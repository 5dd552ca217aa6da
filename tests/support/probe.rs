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
    if std::env::args().nth(1).as_deref() == Some("inject") {
        return inject(&std::env::args().nth(2).unwrap_or_default());
    }
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
    terminal_checks();
    // SAFETY: plain system calls; the params struct of io_uring_setup is zeroed memory of more than its size.
    unsafe {
        let mut params = [0u8; 256];
        say(
            "io_uring",
            verdict(libc::syscall(
                libc::SYS_io_uring_setup,
                4u32,
                params.as_mut_ptr(),
            )),
        );
        say(
            "vsock_socket",
            verdict(libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) as libc::c_long),
        );
        say(
            "alg_socket",
            verdict(libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET, 0) as libc::c_long),
        );
        let pidfd = libc::syscall(libc::SYS_pidfd_open, 1, 0);
        say(
            "pidfd_getfd",
            if pidfd < 0 {
                verdict(pidfd)
            } else {
                verdict(libc::syscall(libc::SYS_pidfd_getfd, pidfd, 0, 0))
            },
        );
    }
    // Listing /proc/1/fd is a permission check (root may); following an fd needs ptrace access to PID 1.
    say(
        "pid1_fds",
        match std::fs::read_link("/proc/1/fd/1") {
            Ok(_) => "ALLOWED".into(),
            Err(e) => format!(
                "refused ({:?})",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
            ),
        },
    );
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
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    say(
        "uid_map",
        uid_map.split_whitespace().collect::<Vec<_>>().join(" "),
    );
    say("cap_eff", status_field("CapEff"));
    say("cap_bnd", status_field("CapBnd"));
    say("cap_amb", status_field("CapAmb"));
    say("no_new_privs", status_field("NoNewPrivs"));
    say("seccomp", status_field("Seccomp"));
}

/// The terminal: `/dev/tty` must open nothing (the job has no controlling terminal), and TIOCSTI/TIOCLINUX must
/// be refused by seccomp even on a terminal the job made itself and made its own controlling one (where the
/// kernel alone would let TIOCSTI through).
fn terminal_checks() {
    say(
        "tty_open",
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
        {
            Ok(_) => "ALLOWED".into(),
            Err(e) => format!(
                "refused ({:?})",
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))
            ),
        },
    );
    // libc's `Ioctl` is a c_ulong on glibc and a c_int on musl.
    #[allow(clippy::unnecessary_cast)]
    for (name, request) in [
        ("tiocsti", libc::TIOCSTI as u64),
        // The kernel reads the command as 32 bits: high bits set must not get it past the filter.
        ("tiocsti_high_bits", (1u64 << 32) | libc::TIOCSTI as u64),
        ("tioclinux", libc::TIOCLINUX as u64),
    ] {
        say(name, ioctl_on_own_terminal(request));
    }
}

/// In a child of its own session, opens a new pty's slave as the controlling terminal and calls `request`
/// on it with a one-byte argument; the child's verdict comes back over a pipe.
fn ioctl_on_own_terminal(request: u64) -> String {
    use std::io::Read;
    let Ok(master) =
        nix::pty::posix_openpt(nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY)
    else {
        return format!("no pty ({})", nix::errno::Errno::last());
    };
    let _ = nix::pty::grantpt(&master);
    let _ = nix::pty::unlockpt(&master);
    let Ok(slave) = nix::pty::ptsname_r(&master) else {
        return "no pty slave name".into();
    };
    let (mut reader, writer) = std::io::pipe().unwrap();
    // SAFETY: the probe has one thread, so the child may do anything (it only calls setsid, open, ioctl,
    // write and _exit, and formats a line).
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => unsafe {
            let slave = std::ffi::CString::new(slave).unwrap();
            libc::setsid();
            let fd = libc::open(slave.as_ptr(), libc::O_RDWR);
            let byte = b'x';
            let result = if fd < 0 {
                -2
            } else {
                libc::syscall(libc::SYS_ioctl, fd, request, &byte as *const u8)
            };
            let errno = *libc::__errno_location();
            let line = if result == -2 {
                format!("no controlling terminal ({errno})")
            } else {
                verdict(result)
            };
            use std::os::fd::AsRawFd;
            libc::write(writer.as_raw_fd(), line.as_ptr().cast(), line.len());
            libc::_exit(0)
        },
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(writer);
            let mut line = String::new();
            let _ = reader.read_to_string(&mut line);
            let _ = nix::sys::wait::waitpid(child, None);
            line
        }
        Err(e) => format!("fork failed ({e})"),
    }
}

/// `gantry-probe inject PATH`: the terminal attack. Pushes Ctrl-C, `touch PATH` and a newline into the
/// input of every terminal it can reach — `/dev/tty` and its own stdin, stdout and stderr — with TIOCSTI, as
/// if typed at the keyboard of whoever started Gantry.
fn inject(path: &str) {
    use std::os::fd::AsRawFd;
    let text = format!("\x03touch {path}\n");
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty");
    let mut fds = vec![("stdin", 0), ("stdout", 1), ("stderr", 2)];
    match &tty {
        Ok(file) => fds.push(("dev_tty", file.as_raw_fd())),
        Err(e) => say("inject_dev_tty_open", format!("refused ({e})")),
    }
    for (name, fd) in fds {
        let mut outcome = "ALLOWED".to_owned();
        for byte in text.bytes() {
            // SAFETY: TIOCSTI reads one byte through the pointer, which points at a live local.
            let result = unsafe { libc::ioctl(fd, libc::TIOCSTI, &byte as *const u8) };
            if result < 0 {
                outcome = verdict(result.into());
                break;
            }
        }
        say(&format!("inject_{name}"), outcome);
    }
}
