//! The linking service for bulk callers (`autolink backfill`): many requests decided by the same
//! [`super::plan`] and written by the same executor pass as B2C's, on the caller's thread, and
//! the dry run of the same, which writes nothing at all.

use super::plan::{self, Kind, Overlay};
use super::{Answer, LinkRequest, LinkingService, Outcome};
use crate::storage::{DbConn, StorageError};

/// A dry run of many batches: remembers what the earlier batches would have written, so that
/// each request is decided as the real run, batch after batch, will decide it.
#[derive(Debug, Default)]
pub struct DryRun {
    overlay: Overlay,
}

impl LinkingService {
    /// Links `requests` (each with its identity, or refused as B2C's would be) in one transaction
    /// on `conn` (opened when `None`, dropped when it failed): the customers created, the links
    /// and their audit events commit together; the events of the decisions that wrote nothing
    /// go to the audit writer. Answers in request order; a storage failure is the request's
    /// `Err`. Blocks (database I/O).
    pub fn link_batch(
        &self,
        conn: &mut Option<DbConn>,
        requests: Vec<LinkRequest>,
    ) -> Vec<Result<Answer, StorageError>> {
        self.executor.link_batch(conn, requests)
    }

    /// What [`LinkingService::link_batch`] would answer for `requests` after the batches that
    /// `dry_run` saw before, with `WouldLink` for `Linked` and `WouldCreate` for `Created`. Writes
    /// nothing, not even an audit event. An account number that only a real run can draw (a
    /// customer it would create) is absent. Blocks (database I/O).
    pub fn dry_run_batch(
        &self,
        conn: &mut DbConn,
        dry_run: &mut DryRun,
        requests: &[LinkRequest],
    ) -> Result<Vec<Answer>, StorageError> {
        let requests: Vec<(&LinkRequest, Kind)> =
            requests.iter().map(|r| (r, Kind::Link)).collect();
        let planned = plan::plan_over(&self.decider, conn, &requests, Some(&dry_run.overlay))?;
        dry_run.overlay.record(&requests, &planned);
        Ok(planned
            .planned
            .iter()
            .map(|planned| {
                let made_up = Overlay::made_up(planned);
                planned.answer.clone().map(|mut resolution| {
                    resolution.outcome = match resolution.outcome {
                        Outcome::Linked => Outcome::WouldLink,
                        Outcome::Created => Outcome::WouldCreate,
                        other => other,
                    };
                    if made_up {
                        resolution.account_number = None;
                    }
                    resolution
                })
            })
            .collect())
    }
}
