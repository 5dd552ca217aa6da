//! Names and leftovers. Everything a container makes is named by its id, and an id is the worker's name, a
//! separator, and more: so a restarted worker can find what it left behind, and worker `w1` never takes
//! `w10-…` for its own.

use super::RuntimeError;
use super::cgroup::CgroupLayout;
use std::collections::BTreeSet;
use std::path::Path;

/// Characters that may follow the worker's name in a container id.
const SEPARATORS: &[char] = &['-', '_', '.'];

/// Checks that a worker name can prefix cgroup and directory names.
pub(crate) fn check_worker_name(name: &str) -> Result<(), RuntimeError> {
    let usable = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SEPARATORS.contains(&c))
        && !name.starts_with('.');
    if usable {
        Ok(())
    } else {
        Err(RuntimeError::Options {
            option: "worker_name",
            reason: format!("{name:?} must be 1 to 100 of [A-Za-z0-9._-], not starting with a dot"),
        })
    }
}

/// Checks that `id` can name a cgroup and a directory, and belongs to `worker`.
pub(crate) fn check_id(worker: &str, id: &str) -> Result<(), RuntimeError> {
    let invalid = |reason| {
        Err(RuntimeError::InvalidId {
            id: id.to_string(),
            reason,
        })
    };
    if id.len() > 200
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SEPARATORS.contains(&c))
    {
        return invalid("it must be at most 200 of [A-Za-z0-9._-]");
    }
    if !owned_by(worker, id) {
        return invalid("it must start with the worker's name and one of - _ . followed by more");
    }
    Ok(())
}

/// Whether a cgroup or directory called `name` belongs to `worker`.
pub(crate) fn owned_by(worker: &str, name: &str) -> bool {
    let mut rest = name.strip_prefix(worker).unwrap_or("").chars();
    rest.next().is_some_and(|c| SEPARATORS.contains(&c)) && rest.next().is_some()
}

/// Whether `name` is one of the names `worker` itself gives containers — `WORKER-JOBID-ATTEMPT` on a farm,
/// `WORKER-RUNID` for `gantry run`, `WORKER.spare-…` for spare inits — so that the sweep of worker `first` never
/// takes the containers of a running worker `first-2` (whose names [`owned_by`] `first` too).
pub(crate) fn made_by(worker: &str, name: &str) -> bool {
    let Some(rest) = name.strip_prefix(worker) else {
        return false;
    };
    if let Some(spare) = rest.strip_prefix(".spare-") {
        return !spare.is_empty();
    }
    let Some(rest) = rest.strip_prefix('-') else {
        return false;
    };
    let (id, attempt) = match rest.split_once('-') {
        Some((id, attempt)) => (id, Some(attempt)),
        None => (rest, None),
    };
    id.len() == 32
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && attempt.is_none_or(|a| !a.is_empty() && a.bytes().all(|b| b.is_ascii_digit()))
}

/// Kills and removes the cgroups of `worker`'s containers (and the per-container scratch dirs earlier versions
/// made), except those `live` says are in use; returns how many containers of jobs (a spare init left beside
/// them is removed too, but never ran anything: counting it would report two containers for one job).
pub(crate) fn sweep(
    layout: &CgroupLayout,
    state_dir: &Path,
    worker: &str,
    live: impl Fn(&str) -> bool,
) -> Result<usize, RuntimeError> {
    let mut ids = BTreeSet::new();
    for dir in layout.parents().iter().chain([&state_dir.to_path_buf()]) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(RuntimeError::io("list", dir, e)),
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if made_by(worker, &name) && !live(&name) && entry.file_type().is_ok_and(|t| t.is_dir())
            {
                ids.insert(name);
            }
        }
    }
    for id in &ids {
        let cgroup = layout.cgroup(id);
        cgroup.kill_all()?;
        cgroup.remove()?;
        remove_scratch(&state_dir.join(id))?;
        tracing::info!(container = %id, "removed a container left behind by an earlier run of this worker");
    }
    let spare = format!("{worker}.spare-");
    Ok(ids.iter().filter(|id| !id.starts_with(&spare)).count())
}

/// Removes a container's scratch dir. Its mounts live in the container's mount namespace, so on the host it
/// is empty; if something is mounted in it after all, it is left alone rather than emptied through the mount.
pub(crate) fn remove_scratch(dir: &Path) -> Result<(), RuntimeError> {
    let mountinfo = "/proc/self/mountinfo";
    let text =
        std::fs::read_to_string(mountinfo).map_err(|e| RuntimeError::io("read", mountinfo, e))?;
    let mounted = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|point| Path::new(&super::cgroup::unescape(point)).starts_with(dir));
    if mounted {
        return Err(RuntimeError::io(
            "refusing to remove",
            dir,
            std::io::Error::other("something is mounted in it on the host"),
        ));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(RuntimeError::io("remove the scratch dir", dir, e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_owns_only_ids_of_its_name_and_a_separator() {
        assert!(owned_by("w1", "w1-job-3"));
        assert!(owned_by("w1", "w1.x"));
        assert!(!owned_by("w1", "w10-job-3"));
        assert!(!owned_by("w1", "w1-"));
        assert!(!owned_by("w1", "w1"));
        assert!(!owned_by("w1", "xw1-a"));
    }

    #[test]
    fn the_sweep_takes_only_the_names_the_worker_makes() {
        let job = "0198a6b4c1d27e3f8a9b0c1d2e3f4a5b";
        assert!(made_by("first", &format!("first-{job}-2")));
        assert!(made_by("first", &format!("first-{job}")));
        assert!(made_by("first", "first.spare-1a2b3c4d-7"));
        assert!(
            !made_by("first", &format!("first-2-{job}-1")),
            "worker first-2's container"
        );
        assert!(!made_by("first", "first.spare-"));
        assert!(!made_by("first", &format!("first-{job}-")));
        assert!(!made_by("first", &format!("first-{job}-x")));
        assert!(!made_by("first", "first-job-3"));
    }

    #[test]
    fn ids_that_could_escape_a_directory_are_refused() {
        assert!(check_id("w1", "w1-ok_1.2").is_ok());
        assert!(check_id("w1", "w1-../../etc").is_err());
        assert!(check_id("w1", "w1-a/b").is_err());
        assert!(check_id("w1", "w2-a").is_err());
        assert!(check_worker_name("w1").is_ok());
        assert!(check_worker_name("").is_err());
        assert!(check_worker_name("..").is_err());
        assert!(check_worker_name("a b").is_err());
    }
}
