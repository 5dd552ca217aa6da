//! The seccomp allowlist as classic BPF that finds a syscall number by binary search over the ranges of allowed
//! numbers. A filter that tests each syscall in turn (seccompiler's, 1450 instructions for our ~350 syscalls)
//! is slow to attach: the kernel runs the whole filter once per syscall number to build its cache of
//! always-allowed syscalls, which cost ~1 ms of every container start. This one is ~250 instructions and
//! decides in about nine comparisons.

use libc::{BPF_ABS, BPF_JA, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};

/// One classic BPF instruction: code, jump-if-true, jump-if-false, constant.
pub(crate) type Insn = (u16, u8, u8, u32);

/// `struct seccomp_data`: the syscall number comes first, the audit architecture next.
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

/// The audit architecture of this build (`EM_*` machine, 64-bit, little-endian), as the kernel reports it.
pub(crate) fn audit_arch() -> Option<u32> {
    const LE_64: u32 = 0x8000_0000 | 0x4000_0000;
    match std::env::consts::ARCH {
        "x86_64" => Some(62 | LE_64),
        "aarch64" => Some(183 | LE_64),
        "riscv64" => Some(243 | LE_64),
        _ => None,
    }
}

/// A filter returning `allow` for the syscall numbers in `allowed` and `otherwise` for every other, killing the
/// process on another architecture (whose numbers mean other syscalls).
pub(crate) fn allowlist(arch: u32, allowed: &[i64], allow: u32, otherwise: u32) -> Vec<Insn> {
    let mut numbers: Vec<u32> = allowed
        .iter()
        .filter_map(|&nr| u32::try_from(nr).ok())
        .collect();
    numbers.sort_unstable();
    numbers.dedup();
    // Where membership flips: at the start of a run of allowed numbers and just past its end. Below the first
    // breakpoint nothing is allowed, and each breakpoint flips the answer.
    let mut breaks = Vec::new();
    for (i, &nr) in numbers.iter().enumerate() {
        if i == 0 || numbers[i - 1] + 1 != nr {
            breaks.push(nr);
        }
        if numbers.get(i + 1) != Some(&(nr + 1)) {
            breaks.push(nr + 1);
        }
    }
    let mut program = vec![
        stmt(BPF_LD | BPF_W | BPF_ABS, ARCH_OFFSET),
        jump(BPF_JEQ, arch, 1, 0),
        stmt(BPF_RET | BPF_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD | BPF_W | BPF_ABS, NR_OFFSET),
    ];
    let verdict = |interval: usize| if interval % 2 == 1 { allow } else { otherwise };
    program.extend(search(&breaks, 0, breaks.len() + 1, &verdict));
    program
}

/// Code that returns the verdict of the interval the number in A falls in, among intervals `lo..hi`; interval
/// `i` runs from `breaks[i - 1]` (inclusive) to `breaks[i]`.
fn search(breaks: &[u32], lo: usize, hi: usize, verdict: &impl Fn(usize) -> u32) -> Vec<Insn> {
    if hi - lo == 1 {
        return vec![stmt(BPF_RET | BPF_K, verdict(lo))];
    }
    let mid = (lo + hi) / 2;
    // A >= breaks[mid - 1] means interval mid or above.
    let below = search(breaks, lo, mid, verdict);
    let above = search(breaks, mid, hi, verdict);
    let bound = breaks[mid - 1];
    let mut code = match u8::try_from(below.len()) {
        Ok(skip) => vec![jump(BPF_JGE, bound, skip, 0)],
        // Conditional jumps reach 255 instructions at most; a long jump reaches anywhere.
        Err(_) => vec![
            jump(BPF_JGE, bound, 0, 1),
            stmt(BPF_JMP | BPF_JA, below.len() as u32),
        ],
    };
    code.extend(below);
    code.extend(above);
    code
}

fn stmt(code: u32, k: u32) -> Insn {
    (code as u16, 0, 0, k)
}

fn jump(op: u32, k: u32, jt: u8, jf: u8) -> Insn {
    ((BPF_JMP | op | BPF_K) as u16, jt, jf, k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the instructions `allowlist` emits, as the kernel would.
    fn run(program: &[Insn], arch: u32, nr: u32) -> u32 {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let (code, jt, jf, k) = program[pc];
            let code = u32::from(code);
            pc += 1;
            if code == BPF_LD | BPF_W | BPF_ABS {
                a = if k == ARCH_OFFSET { arch } else { nr };
            } else if code == BPF_RET | BPF_K {
                return k;
            } else if code == BPF_JMP | BPF_JA {
                pc += k as usize;
            } else {
                let taken = match code & !(BPF_JMP | BPF_K) {
                    BPF_JEQ => a == k,
                    BPF_JGE => a >= k,
                    other => panic!("unexpected jump {other:#x}"),
                };
                pc += usize::from(if taken { jt } else { jf });
            }
        }
    }

    #[test]
    fn every_number_gets_the_verdict_of_its_membership() {
        let (arch, allow, deny) = (0xc000_003e, 1, 2);
        let sets: [Vec<i64>; 4] = [
            vec![],
            vec![0],
            vec![3, 4, 5, 9, 11, 12, 300],
            (0..600).filter(|n| n % 7 != 3 && n % 11 != 0).collect(),
        ];
        for allowed in sets {
            let program = allowlist(arch, &allowed, allow, deny);
            for nr in (0..700).chain([0x4000_0000, u32::MAX]) {
                let want = if allowed.contains(&i64::from(nr)) {
                    allow
                } else {
                    deny
                };
                assert_eq!(run(&program, arch, nr), want, "nr {nr} of {allowed:?}");
            }
            assert_eq!(
                run(&program, 0x4000_0003, 0),
                libc::SECCOMP_RET_KILL_PROCESS
            );
        }
    }

    #[test]
    fn a_large_set_needs_long_jumps_and_stays_short() {
        let allowed: Vec<i64> = (0..2000).filter(|n| n % 2 == 0).collect();
        let program = allowlist(0xc000_003e, &allowed, 1, 2);
        assert!(
            program
                .iter()
                .any(|&(code, ..)| u32::from(code) == BPF_JMP | BPF_JA)
        );
        for nr in 0..2100 {
            let want = if nr < 2000 && nr % 2 == 0 { 1 } else { 2 };
            assert_eq!(run(&program, 0xc000_003e, nr), want);
        }
    }
}
