//! Where a container's init comes from: the zygote forks one per container, which joins the container's
//! cgroup.

use super::RuntimeError;
use super::cgroup::{Cgroup, CgroupLayout};
use super::zygote::{Init, Zygote};
use gantry_model::Resources;
use std::path::Path;

/// The zygote.
#[derive(Debug)]
pub(crate) struct Inits {
    zygote: Zygote,
}

impl Inits {
    /// Starts the zygote.
    pub fn new(exe: &Path, _worker: &str) -> Inits {
        Inits {
            zygote: Zygote::spawn(exe),
        }
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
        cgroup.create(resources)?;
        match self.zygote.prepare(cgroup.procs_files(), true) {
            Ok(init) => Ok((init, cgroup)),
            Err(error) => Err(removing(&cgroup, error)),
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
