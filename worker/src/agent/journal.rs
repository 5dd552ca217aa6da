//! The leases of running jobs, kept on disk: a worker killed mid-job finds them when it starts again, after its
//! sweep removed the containers, and reports those jobs lost instead of leaving them `running`.

use gantry_model::wire::Lease;
use std::path::PathBuf;
use uuid::Uuid;

/// One file per running job under the worker's data dir.
#[derive(Clone)]
pub struct LeaseJournal {
    dir: PathBuf,
}

impl LeaseJournal {
    /// A journal in `dir` (created if missing).
    pub fn open(dir: PathBuf) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, job: Uuid) -> PathBuf {
        self.dir.join(format!("{}.json", job.simple()))
    }

    /// Notes a job as running.
    pub fn record(&self, lease: &Lease) {
        let written = serde_json::to_vec(lease)
            .map_err(std::io::Error::other)
            .and_then(|bytes| {
                // Written whole under another name, then renamed: a crash never leaves half a file.
                let temp = self.dir.join(format!(".{}.tmp", lease.job_id.simple()));
                std::fs::write(&temp, bytes)?;
                std::fs::rename(&temp, self.path(lease.job_id))
            });
        if let Err(e) = written {
            tracing::warn!(job = %lease.job_id, error = %e, "cannot journal the lease; a crash now would leave the job to lease expiry");
        }
    }

    /// Notes a job as ended.
    pub fn forget(&self, job: Uuid) {
        let _ = std::fs::remove_file(self.path(job));
    }

    /// The leases a previous run of this worker did not end, removed from the journal as they are read.
    pub fn take_leftovers(&self) -> Vec<Lease> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut leases = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if let Ok(lease) = std::fs::read(&path)
                .map_err(|_| ())
                .and_then(|b| serde_json::from_slice::<Lease>(&b).map_err(|_| ()))
            {
                leases.push(lease);
            }
            let _ = std::fs::remove_file(&path);
        }
        leases
    }
}
