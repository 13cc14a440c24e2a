//! `pg-bootstrap`: how a PostgreSQL node of the release boots.
//!
//! [`prepare`] runs before postgres starts: it decides whether this node
//! initialises a new cluster, clones a peer, rejoins a peer as its replica, or
//! resumes the role its data directory last had, and makes the data directory
//! ready without ever destroying the only copy. [`provision`] runs after
//! start: roles, databases and extensions on the primary, idempotently.
//!
//! Both follow the same shape: pure decisions (`prepare::decide`,
//! `provision::plan`) with table-driven tests, and small effect functions.

pub mod cancel;
pub mod prepare;
pub mod programs;
pub mod provision;
/// The quoting rules, where every program shares them.
pub use pgcore::quote;
pub mod stop;
