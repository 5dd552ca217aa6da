//! Where a container's init comes from. Joining a cgroup v1 hierarchy waits for an RCU grace period (the
//! kernel's `cgroup_threadgroup_rwsem`): 7–15 ms here, and more than everything else a container start does.
//! So the runtime keeps one init ready ahead of time, already in a cgroup of a spare name and in fresh
//! namespaces; a container start renames that cgroup to the container's id, applies the limits, and hands the
//! init its config. cgroup2 cannot rename, so where a part of the cgroup lives there, every start forks a
//! fresh init that joins the container's own cgroup.

use super::RuntimeError;
use super::cgroup::{Cgroup, CgroupLayout};
use super::userns::IdMap;
use super::zygote::{Init, Zygote};
use gantry_model::Resources;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a start waits for the spare init to finish joining before it makes its own (which would have to
/// join too; normally the spare joined long before).
const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// The zygote and the spare init.
#[derive(Debug)]
pub(crate) struct Inits {
    zygote: Zygote,
    /// New inits get a network namespace of their own (true but when measuring).
    pub network: bool,
    /// New inits start a session of their own (true but when measuring).
    pub new_session: bool,
    /// New inits make a user namespace with this map.
    id_map: Option<IdMap>,
    /// Spare cgroups are named `<prefix><n>`; the prefix is this runtime's own, so the sweep can tell its
    /// spares from what an earlier run left.
    prefix: String,
    next: AtomicU64,
    spare: Mutex<Option<Spare>>,
}

#[derive(Debug)]
struct Spare {
    init: Init,
    name: String,
}

impl Inits {
    /// Starts the zygote; the first spare is made by the first container start.
    pub fn new(exe: &Path, worker: &str, id_map: Option<IdMap>) -> Inits {
        let token = uuid::Uuid::now_v7().simple().to_string();
        Inits {
            zygote: Zygote::spawn(exe),
            network: true,
            new_session: true,
            id_map,
            prefix: format!("{worker}.spare-{}-", &token[24..]),
            next: AtomicU64::new(0),
            spare: Mutex::new(None),
        }
    }

    /// Whether a cgroup of this name is this runtime's spare (live or about to be).
    pub fn is_spare(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    /// An init in the cgroup of container `id`, which this creates with `resources` applied. On Err, the
    /// cgroup is gone again.
    pub fn take(
        &self,
        layout: &CgroupLayout,
        id: &str,
        resources: &Resources,
    ) -> Result<(Init, Cgroup), RuntimeError> {
        let cgroup = layout.cgroup(id);
        if let Some(init) = self.claim_spare(layout, id) {
            if let Err(error) = cgroup.limit(resources) {
                // Dead and reaped first, or the cgroup would still hold it.
                init.kill();
                init.wait(Instant::now() + JOIN_DEADLINE);
                return Err(removing(&cgroup, error));
            }
            return Ok((init, cgroup));
        }
        cgroup.create(resources)?;
        match self.zygote.prepare(
            cgroup.procs_files(),
            (self.network, self.new_session),
            self.id_map,
        ) {
            Ok(init) => Ok((init, cgroup)),
            Err(error) => Err(removing(&cgroup, error)),
        }
    }

    /// Makes the next spare, unless there is one; call it once the init of a start has been handed its pipes.
    pub fn replenish(&self, layout: &CgroupLayout) {
        if !layout.renames() {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.is_some() {
            return;
        }
        let name = format!(
            "{}{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        match self.zygote.prepare(
            layout.cgroup(&name).procs_files(),
            (self.network, self.new_session),
            self.id_map,
        ) {
            Ok(init) => *spare = Some(Spare { init, name }),
            Err(error) => tracing::warn!(%error, "cannot make a spare container init"),
        }
    }

    /// The spare init, moved with its cgroup to `id`; None if there is none or it is unusable (then it is
    /// killed, and the zygote removes its cgroup).
    fn claim_spare(&self, layout: &CgroupLayout, id: &str) -> Option<Init> {
        let spare = self
            .spare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()?;
        let claimed = spare
            .init
            .wait_joined(Instant::now() + JOIN_DEADLINE)
            .map_err(|message| RuntimeError::Setup(format!("the spare init: {message}")))
            .and_then(|()| layout.rename(&spare.name, id));
        match claimed {
            Ok(()) => Some(spare.init),
            Err(error) => {
                tracing::warn!(%error, "not using the spare container init");
                spare.init.kill();
                None
            }
        }
    }
}

/// `error`, after removing `cgroup` (and saying so if that failed too).
fn removing(cgroup: &Cgroup, error: RuntimeError) -> RuntimeError {
    match cgroup.remove() {
        Ok(()) => error,
        Err(cleanup) => RuntimeError::WithCleanup {
            error: Box::new(error),
            cleanup: Box::new(cleanup),
        },
    }
}

impl Drop for Inits {
    fn drop(&mut self) {
        if let Some(spare) = self.spare.get_mut().ok().and_then(Option::take) {
            spare.init.kill();
        }
    }
}
