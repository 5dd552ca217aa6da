//! Gantry's worker: leases jobs from the server, checks out the commit, and runs the steps in a container it
//! makes itself (no daemon), streaming the log back live.

pub mod agent;
pub mod checkout;
pub mod exec;
pub mod image;
pub mod local;
pub mod private;
pub mod runtime;

pub use private::private_dir;
pub use runtime::zygote_main;
