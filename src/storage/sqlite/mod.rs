//! What only SQLite has: the change watch of the sign-in cache, the audit writer's own
//! connection and lookup file, the import's bulk writer, the backfill's checkpoint thread, and
//! the way writers wait for another process's write lock. Everything else is diesel over both
//! backends, in the parent module.

pub mod audit;
pub mod audit_lookup;
pub mod audit_merge;
pub mod bulk;
pub mod change_watch;
pub mod checkpoints;
pub mod webhooks;
pub(crate) mod write_lock;
