//! Least privilege for a job's processes, applied by PID 1 once the container is built and before the first step
//! (the order runc and youki use): the capability bounding set first, then the process's own sets, nothing
//! ambient, `no_new_privs`, and last a seccomp filter. Children inherit all of it.
//!
//! The seccomp program is compiled once per worker ([`SeccompProgram::compile`]) and handed to each container's
//! init as plain BPF instructions: compiling at every start is what costs other runtimes 10–18 ms.

use caps::{CapSet, Capability};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// What a build needs and nothing that reaches past the container. Left out on purpose: SYS_ADMIN (mounts,
/// namespaces), NET_RAW (raw sockets), SYS_PTRACE, SYS_MODULE, MKNOD (a block device node would open the
/// host's disks: there is no device cgroup rule to stop it), NET_ADMIN, SYS_TIME, SYS_BOOT, SYS_RAWIO, and the
/// rest of the 41.
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_SETFCAP,
    Capability::CAP_KILL,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_AUDIT_WRITE,
];

/// A compiled seccomp filter pair, as BPF instructions that survive JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProgram {
    /// Allowlist: every syscall a build uses; anything else (including syscalls newer than this list) ENOSYS,
    /// which makes libc fall back to older calls instead of failing.
    allow: Vec<(u16, u8, u8, u32)>,
    /// Denylist, installed last so its EPERM wins: the calls that reach past the container.
    deny: Vec<(u16, u8, u8, u32)>,
}

/// Why privileges could not be dropped.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {detail}")]
pub struct SecurityError {
    what: &'static str,
    detail: String,
}

fn fail(what: &'static str) -> impl FnOnce(String) -> SecurityError {
    move |detail| SecurityError { what, detail }
}

impl SeccompProgram {
    /// Compiles both filters for this machine's architecture.
    pub fn compile() -> Result<Self, SecurityError> {
        Self::compile_with(true)
    }

    /// [`SeccompProgram::compile`], with or without the rules on arguments (`ioctl`'s terminal requests,
    /// `socket`'s families): without is for measuring what they cost only.
    pub(crate) fn compile_with(argument_rules: bool) -> Result<Self, SecurityError> {
        let arch = TargetArch::try_from(std::env::consts::ARCH)
            .map_err(|e| fail("seccomp architecture")(e.to_string()))?;
        let deny: BTreeMap<i64, Vec<SeccompRule>> = denied_syscalls(argument_rules)?;
        let allowed: Vec<i64> = allowed_syscalls()
            .into_iter()
            .filter(|nr| !deny.get(nr).is_some_and(|rules| rules.is_empty()))
            .collect();
        let audit_arch = super::bpf::audit_arch()
            .ok_or_else(|| fail("seccomp architecture")(std::env::consts::ARCH.into()))?;
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let allow = super::bpf::allowlist(audit_arch, &allowed, libc::SECCOMP_RET_ALLOW, enosys);
        let deny = SeccompFilter::new(
            deny,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(|e| fail("seccomp denylist")(e.to_string()))?;
        let to_bpf = |filter: SeccompFilter| -> Result<Vec<(u16, u8, u8, u32)>, SecurityError> {
            let program: BpfProgram = filter
                .try_into()
                .map_err(|e: seccompiler::BackendError| fail("compile seccomp")(e.to_string()))?;
            Ok(program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect())
        };
        Ok(Self {
            allow,
            deny: to_bpf(deny)?,
        })
    }
}

/// Drops to the default capabilities, sets `no_new_privs` and installs the seccomp filters. Runs in PID 1 after
/// the container is built; there is no way back.
pub(crate) fn drop_privileges(program: &SeccompProgram) -> Result<(), SecurityError> {
    let keep: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    // The bounding set first, while we still hold CAP_SETPCAP: it caps what any exec can ever regain.
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(|e| {
                fail("drop a capability from the bounding set")(format!("{cap}: {e}"))
            })?;
        }
    }
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| fail("clear the ambient capabilities")(e.to_string()))?;
    for set in [CapSet::Inheritable, CapSet::Effective, CapSet::Permitted] {
        // Effective must shrink before permitted, which only shrinks.
        caps::set(None, set, &keep)
            .map_err(|e| fail("set the capabilities")(format!("{set:?}: {e}")))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail("set no_new_privs")(e.to_string()))?;
    for (name, bpf) in [("allowlist", &program.allow), ("denylist", &program.deny)] {
        let program: BpfProgram = bpf
            .iter()
            .map(|&(code, jt, jf, k)| seccompiler::sock_filter { code, jt, jf, k })
            .collect();
        seccompiler::apply_filter(&program)
            .map_err(|e| fail("install the seccomp filter")(format!("{name}: {e}")))?;
    }
    Ok(())
}

/// Syscalls refused with EPERM: they reach past the container whatever the capabilities say.
fn denied_syscalls(argument_rules: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SecurityError> {
    let always = [
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_reboot,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_userfaultfd,
        libc::SYS_quotactl,
        libc::SYS_lookup_dcookie,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
    ];
    #[cfg(target_arch = "x86_64")]
    let always = [
        &always[..],
        &[libc::SYS_iopl, libc::SYS_ioperm, libc::SYS_uselib],
    ]
    .concat();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        always.iter().map(|&nr| (nr, Vec::new())).collect();
    // clone is how threads and processes are made; only its namespace flags are refused (one rule per flag:
    // rules are OR'ed, and a masked compare can only test equality).
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
    ];
    let mut clone_rules = Vec::new();
    for flag in namespaces {
        let flag = flag as u64;
        let condition = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(|e| fail("seccomp clone rule")(e.to_string()))?;
        clone_rules.push(
            SeccompRule::new(vec![condition])
                .map_err(|e| fail("seccomp clone rule")(e.to_string()))?,
        );
    }
    rules.insert(libc::SYS_clone, clone_rules);
    if !argument_rules {
        return Ok(rules);
    }
    // TIOCSTI pushes bytes into a terminal's input as if typed, TIOCLINUX (selection paste) likewise on a
    // virtual console: with a terminal of the host's, either types commands into the shell that started Gantry.
    // The kernel reads the command as an unsigned int, so only the low 32 bits are compared: set high bits
    // cannot slip past.
    // libc's `Ioctl` is a c_ulong on glibc and a c_int on musl.
    #[allow(clippy::unnecessary_cast)]
    let terminal_injection = [libc::TIOCSTI as u64, libc::TIOCLINUX as u64];
    rules.insert(libc::SYS_ioctl, arg_equals(1, &terminal_injection)?);
    // vsock reaches the hypervisor's host and other VMs past every network namespace; AF_ALG is kernel crypto
    // code with a history of privilege escalations, and no build needs either.
    rules.insert(
        libc::SYS_socket,
        arg_equals(0, &[libc::AF_VSOCK as u64, libc::AF_ALG as u64])?,
    );
    Ok(rules)
}

/// One rule per value (rules are OR'ed): the 32-bit argument `index` equals one of `values`.
fn arg_equals(index: u8, values: &[u64]) -> Result<Vec<SeccompRule>, SecurityError> {
    values
        .iter()
        .map(|&value| {
            let condition =
                SeccompCondition::new(index, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                    .map_err(|e| fail("seccomp argument rule")(e.to_string()))?;
            SeccompRule::new(vec![condition])
                .map_err(|e| fail("seccomp argument rule")(e.to_string()))
        })
        .collect()
}

/// Everything else a build, a test suite or a database server uses. Left out on purpose: `clone3` (its flags
/// sit behind a pointer seccomp cannot read, and libc falls back to `clone` on ENOSYS), `io_uring_*` (its
/// operations bypass this filter altogether, and the runtimes that use it fall back to plain calls on ENOSYS)
/// and `pidfd_getfd` (a copy of another process's fds).
fn allowed_syscalls() -> Vec<i64> {
    let mut list = vec![
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_access,
        libc::SYS_alarm,
        libc::SYS_bind,
        libc::SYS_brk,
        libc::SYS_capget,
        libc::SYS_capset,
        libc::SYS_chdir,
        libc::SYS_chmod,
        libc::SYS_chown,
        libc::SYS_chroot,
        libc::SYS_clock_getres,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_clone,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_connect,
        libc::SYS_copy_file_range,
        libc::SYS_creat,
        libc::SYS_dup,
        libc::SYS_dup2,
        libc::SYS_dup3,
        libc::SYS_epoll_create,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_epoll_wait,
        libc::SYS_eventfd,
        libc::SYS_eventfd2,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_fadvise64,
        libc::SYS_fallocate,
        libc::SYS_fanotify_mark,
        libc::SYS_fchdir,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_fcntl,
        libc::SYS_fdatasync,
        libc::SYS_fgetxattr,
        libc::SYS_flistxattr,
        libc::SYS_flock,
        libc::SYS_fork,
        libc::SYS_fremovexattr,
        libc::SYS_fsetxattr,
        libc::SYS_fstat,
        libc::SYS_fstatfs,
        libc::SYS_fsync,
        libc::SYS_ftruncate,
        libc::SYS_futex,
        libc::SYS_futimesat,
        libc::SYS_get_mempolicy,
        libc::SYS_get_robust_list,
        libc::SYS_getcpu,
        libc::SYS_getcwd,
        libc::SYS_getdents,
        libc::SYS_getdents64,
        libc::SYS_getegid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getgroups,
        libc::SYS_getitimer,
        libc::SYS_getpeername,
        libc::SYS_getpgid,
        libc::SYS_getpgrp,
        libc::SYS_getpid,
        libc::SYS_getppid,
        libc::SYS_getpriority,
        libc::SYS_getrandom,
        libc::SYS_getresgid,
        libc::SYS_getresuid,
        libc::SYS_getrlimit,
        libc::SYS_getrusage,
        libc::SYS_getsid,
        libc::SYS_getsockname,
        libc::SYS_getsockopt,
        libc::SYS_gettid,
        libc::SYS_gettimeofday,
        libc::SYS_getuid,
        libc::SYS_getxattr,
        libc::SYS_inotify_add_watch,
        libc::SYS_inotify_init,
        libc::SYS_inotify_init1,
        libc::SYS_inotify_rm_watch,
        libc::SYS_io_cancel,
        libc::SYS_io_destroy,
        libc::SYS_io_getevents,
        libc::SYS_io_setup,
        libc::SYS_io_submit,
        libc::SYS_ioctl,
        libc::SYS_ioprio_get,
        libc::SYS_ioprio_set,
        libc::SYS_kill,
        libc::SYS_lchown,
        libc::SYS_lgetxattr,
        libc::SYS_link,
        libc::SYS_linkat,
        libc::SYS_listen,
        libc::SYS_listxattr,
        libc::SYS_llistxattr,
        libc::SYS_lremovexattr,
        libc::SYS_lseek,
        libc::SYS_lsetxattr,
        libc::SYS_lstat,
        libc::SYS_madvise,
        libc::SYS_membarrier,
        libc::SYS_memfd_create,
        libc::SYS_mincore,
        libc::SYS_mkdir,
        libc::SYS_mkdirat,
        libc::SYS_mknod,
        libc::SYS_mknodat,
        libc::SYS_mlock,
        libc::SYS_mlock2,
        libc::SYS_mlockall,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_mq_getsetattr,
        libc::SYS_mq_notify,
        libc::SYS_mq_open,
        libc::SYS_mq_timedreceive,
        libc::SYS_mq_timedsend,
        libc::SYS_mq_unlink,
        libc::SYS_mremap,
        libc::SYS_msgctl,
        libc::SYS_msgget,
        libc::SYS_msgrcv,
        libc::SYS_msgsnd,
        libc::SYS_msync,
        libc::SYS_munlock,
        libc::SYS_munlockall,
        libc::SYS_munmap,
        libc::SYS_nanosleep,
        libc::SYS_newfstatat,
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_pause,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_pipe,
        libc::SYS_pipe2,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_prctl,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_preadv2,
        libc::SYS_prlimit64,
        libc::SYS_pselect6,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
        libc::SYS_pwritev2,
        libc::SYS_read,
        libc::SYS_readahead,
        libc::SYS_readlink,
        libc::SYS_readlinkat,
        libc::SYS_readv,
        libc::SYS_recvfrom,
        libc::SYS_recvmmsg,
        libc::SYS_recvmsg,
        libc::SYS_remap_file_pages,
        libc::SYS_removexattr,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_restart_syscall,
        libc::SYS_rmdir,
        libc::SYS_rseq,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigpending,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigsuspend,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_rt_tgsigqueueinfo,
        libc::SYS_sched_get_priority_max,
        libc::SYS_sched_get_priority_min,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_getattr,
        libc::SYS_sched_getparam,
        libc::SYS_sched_getscheduler,
        libc::SYS_sched_rr_get_interval,
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_setattr,
        libc::SYS_sched_setparam,
        libc::SYS_sched_setscheduler,
        libc::SYS_sched_yield,
        libc::SYS_seccomp,
        libc::SYS_select,
        libc::SYS_semctl,
        libc::SYS_semget,
        libc::SYS_semop,
        libc::SYS_semtimedop,
        libc::SYS_sendfile,
        libc::SYS_sendmmsg,
        libc::SYS_sendmsg,
        libc::SYS_sendto,
        libc::SYS_set_mempolicy,
        libc::SYS_set_robust_list,
        libc::SYS_set_tid_address,
        libc::SYS_setfsgid,
        libc::SYS_setfsuid,
        libc::SYS_setgid,
        libc::SYS_setgroups,
        libc::SYS_setitimer,
        libc::SYS_setpgid,
        libc::SYS_setpriority,
        libc::SYS_setregid,
        libc::SYS_setresgid,
        libc::SYS_setresuid,
        libc::SYS_setreuid,
        libc::SYS_setrlimit,
        libc::SYS_setsid,
        libc::SYS_setsockopt,
        libc::SYS_setuid,
        libc::SYS_setxattr,
        libc::SYS_shmat,
        libc::SYS_shmctl,
        libc::SYS_shmdt,
        libc::SYS_shmget,
        libc::SYS_shutdown,
        libc::SYS_sigaltstack,
        libc::SYS_signalfd,
        libc::SYS_signalfd4,
        libc::SYS_socket,
        libc::SYS_socketpair,
        libc::SYS_splice,
        libc::SYS_stat,
        libc::SYS_statfs,
        libc::SYS_statx,
        libc::SYS_symlink,
        libc::SYS_symlinkat,
        libc::SYS_sync,
        libc::SYS_sync_file_range,
        libc::SYS_syncfs,
        libc::SYS_sysinfo,
        libc::SYS_tee,
        libc::SYS_tgkill,
        libc::SYS_time,
        libc::SYS_timer_create,
        libc::SYS_timer_delete,
        libc::SYS_timer_getoverrun,
        libc::SYS_timer_gettime,
        libc::SYS_timer_settime,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_gettime,
        libc::SYS_timerfd_settime,
        libc::SYS_times,
        libc::SYS_tkill,
        libc::SYS_truncate,
        libc::SYS_umask,
        libc::SYS_uname,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        libc::SYS_utime,
        libc::SYS_utimensat,
        libc::SYS_utimes,
        libc::SYS_vfork,
        libc::SYS_vmsplice,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_personality,
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_restrict_self,
        libc::SYS_futex_waitv,
        libc::SYS_process_madvise,
        libc::SYS_process_mrelease,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_arch_prctl,
        libc::SYS_modify_ldt,
        libc::SYS_epoll_ctl_old,
        libc::SYS_epoll_wait_old,
    ]);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_survive_json() {
        let program = SeccompProgram::compile().unwrap();
        // Short enough to attach quickly (see `bpf`), long enough to hold the list.
        assert!(
            program.allow.len() > 100 && program.allow.len() < 400,
            "{}",
            program.allow.len()
        );
        assert!(!program.deny.is_empty());
        let copy: SeccompProgram =
            serde_json::from_str(&serde_json::to_string(&program).unwrap()).unwrap();
        assert_eq!(copy, program);
    }

    #[test]
    fn the_default_capabilities_leave_out_what_escapes_a_container() {
        for cap in [
            Capability::CAP_SYS_ADMIN,
            Capability::CAP_NET_RAW,
            Capability::CAP_SYS_PTRACE,
            Capability::CAP_SYS_MODULE,
            Capability::CAP_MKNOD,
        ] {
            assert!(
                !DEFAULT_CAPABILITIES.contains(&cap),
                "{cap} must not be granted"
            );
        }
    }
}
