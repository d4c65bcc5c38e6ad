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

/// SQLite: runs `$body` with `$chunk` bound to successive fixed-size arrays of the slice `$rows`
/// (64 rows, then 32, 16, 8, 4, 2, 1 for the rest), for diesel's multi-row inserts. diesel keeps
/// the prepared statement of an insert of a `&[T; N]` (its query id is static), where one of a
/// slice is prepared anew each time: a backfill batch spent a fifth of its SQLite time parsing
/// its inserts (BENCHMARKS.md, "Backfill"). At most seven statements per insert are kept.
macro_rules! for_each_chunk {
    ($rows:expr, $chunk:ident => $body:block) => {{
        let rows = $rows;
        let mut exact = rows.chunks_exact(64);
        for slice in &mut exact {
            let $chunk: &[_; 64] = slice.try_into().expect("64 rows");
            $body
        }
        let mut rest = exact.remainder();
        $crate::storage::sqlite::for_each_chunk!(@tail rest, $chunk, $body, 32 16 8 4 2 1);
    }};
    (@tail $rest:ident, $chunk:ident, $body:block, $($n:literal)*) => {
        $(
            if $rest.len() >= $n {
                let (head, tail) = $rest.split_at($n);
                let $chunk: &[_; $n] = head.try_into().expect("rows");
                $body
                $rest = tail;
            }
        )*
        let _ = $rest;
    };
}
pub(crate) use for_each_chunk;
