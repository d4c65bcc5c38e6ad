//! `autolink backfill`: links the users a tenant already has, from a Microsoft Graph export, through
//! the linking service that decides B2C's sign-ups ([`crate::linking`]): the same rules, refusal
//! codes and idempotency, with the identity (issuer, the user's `id`).
//!
//! Every file is read twice: a first pass checks them all (nothing is written when one is
//! malformed), the second decides and writes the users in batches, each batch one transaction
//! (on PostgreSQL one per lane, see [`POSTGRES_LANES`]), so a run stopped at any point leaves
//! whole users only and can be run again. A dry run decides the same batches without writing
//! anything ([`crate::linking::DryRun`]).
//!
//! - [`graph`] reads the files (Graph pages or JSON lines), streamed;
//! - [`proof`] says which email a user proved and how;
//! - [`progress`] shows how far the run is;
//! - [`report`] counts the outcomes and writes the JSON lines report.

pub mod graph;
mod lanes;
pub mod progress;
pub mod proof;
pub mod report;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use crate::config::Settings;
use crate::domain::{Identity, Refusal};
use crate::linking::{Answer, DryRun, LinkRequest, LinkingService};
use crate::storage::sqlite::checkpoints::Checkpoints;
use crate::storage::{BackendKind, Db, DbConn, StorageError};
use graph::{FileError, GraphUser};
use lanes::Lanes;
use progress::Progress;
use report::Report;

/// Users decided and written together (one transaction each) on SQLite: each commit writes
/// the pages it changed to the WAL and syncs it, so fewer, larger batches write less.
pub const SQLITE_BATCH: usize = 5000;
/// The same on PostgreSQL, where larger batches measured slower.
pub const POSTGRES_BATCH: usize = 1000;
/// PostgreSQL: the batches are written by this many lanes ([`lanes`]), each a connection that
/// takes the users of its share of the email addresses. One connection left a core idle: the
/// service and the database took turns, one round trip after the other. SQLite has one writer,
/// so one lane.
pub const POSTGRES_LANES: usize = 2;
/// SQLite: the pause after each batch's commit, so that the write lock is free for at least this
/// long between two batches: a server's sign-ups waiting for it try every half millisecond
/// (`storage/sqlite/write_lock.rs`) and take it then. 200 pauses for 1,000,000 users.
const SQLITE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    /// The channel (its configured id) the users sign in to.
    pub channel: String,
    /// The issuer of the identities; default `tenant_issuer`.
    pub issuer: Option<String>,
    /// Decide without writing anything.
    pub dry_run: bool,
    /// Where to write the JSON lines report.
    pub report: Option<PathBuf>,
    /// Users per batch; by default [`SQLITE_BATCH`] or [`POSTGRES_BATCH`].
    pub batch: Option<usize>,
    /// The export's files, in order.
    pub files: Vec<PathBuf>,
}

/// Why a backfill did not complete.
#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    /// Bad input (exit status 2): an unknown channel or issuer, a missing or malformed file.
    /// Nothing was written.
    #[error("{0}")]
    BadInput(String),
    /// The database failed; the batches committed before stay (run again to finish).
    #[error("{0}")]
    Storage(String),
    /// Anything else (the report file, the configuration).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What a completed run did.
#[derive(Debug)]
pub struct Summary {
    /// The counts, per outcome and per refusal code.
    pub report: Report,
    /// Files read.
    pub files: usize,
    /// How long the run took, both passes.
    pub seconds: f64,
    /// Whether it was a dry run.
    pub dry_run: bool,
}

/// The channel and issuer of a run, checked against the configuration before any file is read.
struct Target {
    client_id: Option<String>,
    issuer: String,
}

fn target(settings: &Settings, options: &Options) -> Result<Target, BackfillError> {
    let channels = settings.channel_directory().map_err(anyhow::Error::from)?;
    let Some(channel) = channels.by_id(&options.channel) else {
        let known: Vec<&str> = channels.all().iter().map(|c| c.id.as_str()).collect();
        return Err(BackfillError::BadInput(format!(
            "unknown channel {:?} (configured: {})",
            options.channel,
            known.join(", ")
        )));
    };
    // The linking service finds a request's channel by its client id.
    let client_id = channel.client_ids.first().cloned();
    let resolves = channels
        .resolve(client_id.as_deref())
        .is_ok_and(|c| c.id == channel.id);
    if !resolves {
        return Err(BackfillError::BadInput(format!(
            "channel {:?} has no client id",
            options.channel
        )));
    }
    let mut known = Vec::new();
    if settings.tenant_issuer_configured() {
        known.push(settings.tenant_issuer.trim().to_string());
    }
    if let Some(entra) = &settings.entra {
        known.push(entra.identity_issuer());
    }
    let issuer = match &options.issuer {
        Some(issuer) => issuer.trim().to_string(),
        None if settings.tenant_issuer_configured() => settings.tenant_issuer.trim().to_string(),
        None => {
            return Err(BackfillError::BadInput(
                "tenant_issuer is not configured: set it, or name the issuer with --issuer".into(),
            ))
        }
    };
    if !known.contains(&issuer) {
        return Err(BackfillError::BadInput(format!(
            "unknown issuer {issuer:?}: the configured issuers are {} (tenant_issuer, [entra] identity_issuer)",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }
    Ok(Target { client_id, issuer })
}

/// Checks the channel, the issuer and every file, then opens the database and runs the backfill.
pub fn run(settings: &Settings, options: &Options) -> Result<Summary, BackfillError> {
    let started = Instant::now();
    let target = target(settings, options)?;
    let totals = check_files(&options.files)?;
    let db = crate::startup::open_database(settings)?;
    let (linking, audit) = crate::startup::build_linking(settings, db.clone())?;
    let result = write(settings, options, &target, &totals, &db, &linking);
    // The events of the decisions that wrote nothing are flushed before the summary.
    drop(linking);
    audit.join();
    let report = result?;
    Ok(Summary {
        report,
        files: options.files.len(),
        seconds: started.elapsed().as_secs_f64(),
        dry_run: options.dry_run,
    })
}

/// The users of each file, counted by the first pass.
struct Totals {
    users: Vec<u64>,
}

/// The first pass: every file is read to its end, by [`CHECKERS`] threads at once (parsing is
/// all of its work, and nothing else runs yet); the first malformed file in the order given
/// stops the run.
fn check_files(files: &[PathBuf]) -> Result<Totals, BackfillError> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    // The index of the first malformed file found so far: no file after it is read.
    let first_bad = AtomicUsize::new(usize::MAX);
    let mut counted: Vec<(usize, Result<u64, FileError>)> = std::thread::scope(|scope| {
        let checkers: Vec<_> = (0..CHECKERS)
            .map(|_| {
                scope.spawn(|| {
                    let mut counted = Vec::new();
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        if index >= files.len() || index > first_bad.load(Ordering::Relaxed) {
                            break;
                        }
                        let result = graph::read_users(&files[index], |_| true);
                        if result.is_err() {
                            first_bad.fetch_min(index, Ordering::Relaxed);
                        }
                        counted.push((index, result));
                    }
                    counted
                })
            })
            .collect();
        checkers
            .into_iter()
            .flat_map(|checker| checker.join().unwrap_or_default())
            .collect()
    });
    counted.sort_unstable_by_key(|(index, _)| *index);
    let mut users = Vec::with_capacity(files.len());
    for (index, result) in counted {
        match result {
            Ok(count) => users.push(count),
            Err(error) => {
                return Err(BackfillError::BadInput(format!(
                    "{}: {error}; nothing was written",
                    files[index].display()
                )))
            }
        }
    }
    if users.len() != files.len() {
        return Err(BackfillError::Other(anyhow::anyhow!(
            "the first pass did not read every file"
        )));
    }
    Ok(Totals { users })
}

/// Threads of the first pass.
const CHECKERS: usize = 2;

/// A batch of users as read: (file index, position in the file from 1, the user).
type Batch = Vec<(usize, u64, GraphUser)>;

/// The second pass: a reader thread parses the files into batches while this thread decides
/// and writes them (on PostgreSQL, hands them to the writing lanes, [`lanes`]).
fn write(
    settings: &Settings,
    options: &Options,
    target: &Target,
    totals: &Totals,
    db: &Db,
    linking: &LinkingService,
) -> Result<Report, BackfillError> {
    let mut report = Report::create(options.report.as_deref(), options.dry_run)?;
    let total: u64 = totals.users.iter().sum();
    let progress = Progress::start(options.files.len(), total, options.dry_run);
    // One batch waits while one is written (and one is read): reading is several times
    // faster than writing, and every batch held is memory.
    let (sender, batches) = mpsc::sync_channel::<(Batch, usize)>(1);
    let files = options.files.clone();
    let size = options
        .batch
        .unwrap_or(match db.backend() {
            BackendKind::Sqlite => SQLITE_BATCH,
            BackendKind::Postgres => POSTGRES_BATCH,
        })
        .max(1);
    let reader = std::thread::Builder::new()
        .name("autolink-backfill-read".into())
        .spawn(move || read_batches(&files, size, &sender))
        .map_err(anyhow::Error::from)?;

    let idps = &settings.linking.email_verifying_idps;
    let run_id = crate::api::new_request_id();
    let mut sequence: u64 = 0;
    let outcome = std::thread::scope(|scope| {
        let mut writer = match db.backend() {
            BackendKind::Postgres if !options.dry_run && POSTGRES_LANES > 1 => {
                Writer::Lanes(Lanes::start(scope, POSTGRES_LANES, linking))
            }
            _ => Writer::Direct {
                conn: None,
                dry_run: DryRun::default(),
                checkpoints: match db.sqlite_path() {
                    Some(path) if !options.dry_run => Some(
                        Checkpoints::start(path)
                            .map_err(|e| BackfillError::Storage(e.to_string()))?,
                    ),
                    _ => None,
                },
            },
        };
        // Batches handed over and not yet reported, oldest first.
        let mut pending: VecDeque<Pending> = VecDeque::new();
        let mut analyzed: Option<DbConn> = None;
        let mut next_analyze = FIRST_ANALYZE;
        let mut finish = |report: &mut Report,
                          pending: &mut VecDeque<Pending>,
                          finished: Vec<Vec<Answer>>|
         -> Result<(), BackfillError> {
            for answers in finished {
                let Some(batch) = pending.pop_front() else {
                    break;
                };
                for email in &batch.skipped {
                    report.skipped(email.as_deref())?;
                }
                for ((id, email), answer) in batch.rows.iter().zip(&answers) {
                    report.decided(id, email.as_deref(), answer)?;
                }
                if !options.dry_run
                    && db.backend() == BackendKind::Postgres
                    && report.users() >= next_analyze
                {
                    analyze(db, &mut analyzed);
                    next_analyze = report.users().saturating_mul(2);
                }
                progress.advance(report.users(), batch.files_done);
            }
            Ok(())
        };
        let failed = |report: &Report, error: StorageError| {
            BackfillError::Storage(format!(
                "the database failed after {} users: {error}; the batches before are written, run the backfill again to finish",
                report.users()
            ))
        };
        for (batch, files_done) in batches.iter() {
            let mut requests = Vec::with_capacity(batch.len());
            let mut next = Pending {
                skipped: Vec::new(),
                rows: Vec::with_capacity(batch.len()),
                files_done,
            };
            for (file, position, user) in batch {
                let proof = proof::proof(&user, idps);
                let id = user.id.filter(|id| !id.trim().is_empty());
                let Some(id) = id else {
                    log::warn!(
                        "{}: user {position} has no id: skipped",
                        options.files[file].display()
                    );
                    next.skipped.push(proof.email);
                    continue;
                };
                sequence += 1;
                next.rows.push((id.clone(), proof.email.clone()));
                requests.push(LinkRequest {
                    request_id: format!("{run_id}-{sequence}"),
                    source: "backfill",
                    step: None,
                    client_id: target.client_id.clone(),
                    email: proof.email,
                    evidence: proof.evidence,
                    email_verified: None,
                    identity: Some(Identity {
                        issuer: target.issuer.clone(),
                        subject: id,
                    }),
                    given_name: user.given_name,
                    surname: user.surname,
                    time_limit: None,
                });
            }
            pending.push_back(next);
            match writer.write(db, linking, options.dry_run, requests) {
                Ok(finished) => finish(&mut report, &mut pending, finished)?,
                Err(error) => return Err(failed(&report, error)),
            }
        }
        match writer.finish() {
            Ok(finished) => finish(&mut report, &mut pending, finished),
            Err(error) => Err(failed(&report, error)),
        }
    });
    // Stops the reader when the loop ended early.
    drop(batches);
    let read = reader
        .join()
        .unwrap_or_else(|_| Err("the reader thread failed".into()));
    progress.finish();
    outcome?;
    read.map_err(BackfillError::Storage)?;
    report.finish()?;
    Ok(report)
}

/// A batch handed to the writer and not yet reported: its users without an id (reported
/// first), the id and email of each of its requests, and how many files were finished with it.
struct Pending {
    skipped: Vec<Option<String>>,
    rows: Vec<(String, Option<String>)>,
    files_done: usize,
}

/// What writes the batches: this thread, one batch at a time (SQLite, which has one writer, and
/// any dry run), or PostgreSQL's lanes.
enum Writer {
    Direct {
        conn: Option<DbConn>,
        dry_run: DryRun,
        /// SQLite, unless a dry run: the checkpoints of the run's WAL, on a thread of their own.
        checkpoints: Option<Checkpoints>,
    },
    Lanes(Lanes),
}

impl Writer {
    /// Writes (or, in a dry run, decides) a batch; returns the batches finished, oldest first,
    /// each with its answers in request order.
    fn write(
        &mut self,
        db: &Db,
        linking: &LinkingService,
        dry_run: bool,
        requests: Vec<LinkRequest>,
    ) -> Result<Vec<Vec<Answer>>, StorageError> {
        match self {
            Writer::Lanes(lanes) => lanes.write(requests),
            Writer::Direct { .. } if requests.is_empty() => Ok(vec![Vec::new()]),
            Writer::Direct {
                conn,
                dry_run: seen,
                checkpoints,
            } => {
                if conn.is_none() {
                    let mut opened = connect(db)?;
                    if let (DbConn::Sqlite(c), Some(_)) = (&mut opened, &checkpoints) {
                        use diesel::connection::SimpleConnection;
                        c.batch_execute("PRAGMA wal_autocheckpoint = 0")?;
                    }
                    *conn = Some(opened);
                }
                let answers = match conn.as_mut() {
                    Some(c) if dry_run => linking.dry_run_batch(c, seen, &requests)?,
                    _ => linking
                        .link_batch(conn, requests)
                        .into_iter()
                        .collect::<Result<_, _>>()?,
                };
                // SQLite, written: the checkpoints, and the pause that lets other processes'
                // writers in.
                if let Some(checkpoints) = checkpoints {
                    checkpoints.committed();
                    std::thread::sleep(SQLITE_PAUSE);
                }
                Ok(vec![answers])
            }
        }
    }

    /// Waits for the batches still being written.
    fn finish(&mut self) -> Result<Vec<Vec<Answer>>, StorageError> {
        match self {
            Writer::Lanes(lanes) => lanes.finish(),
            Writer::Direct { .. } => Ok(Vec::new()),
        }
    }
}

/// The run's own connection. SQLite: a page cache of [`SQLITE_CACHE_KIB`] for the indexes that
/// a run of millions writes into at random places (the pool's connections keep 128 KiB: with it,
/// much of a batch's time went to reading pages back from the OS and spilling dirty ones to the
/// WAL before the commit).
fn connect(db: &Db) -> Result<DbConn, StorageError> {
    use diesel::connection::SimpleConnection;
    let mut conn = db.connect_for_groups()?;
    if let DbConn::Sqlite(c) = &mut conn {
        c.batch_execute(&format!("PRAGMA cache_size = -{SQLITE_CACHE_KIB}"))?;
    }
    Ok(conn)
}

/// The SQLite page cache of the run's connection, KiB.
const SQLITE_CACHE_KIB: u32 = 16 * 1024;

/// PostgreSQL: the tables whose reads decide each batch are analyzed when the run has written
/// this many users, and again each time that number doubled. A run grows them from nothing to
/// millions of rows faster than autovacuum analyzes them (or with autovacuum off): without
/// statistics the planner read every active link of the issuer for each batch's lookup of its
/// identities (100 ms a batch at 165,000 links, growing with the table).
const FIRST_ANALYZE: u64 = 4096;

fn analyze(db: &Db, conn: &mut Option<DbConn>) {
    use diesel::connection::SimpleConnection;
    if conn.is_none() {
        match connect(db) {
            Ok(opened) => *conn = Some(opened),
            Err(error) => {
                log::warn!("ANALYZE of identity_links and customers: no connection: {error}");
                return;
            }
        }
    }
    if let Some(DbConn::Postgres(c)) = conn {
        if let Err(error) = c.batch_execute("ANALYZE identity_links, customers") {
            log::warn!("ANALYZE of identity_links and customers failed: {error}");
        }
    }
}

/// The reader thread: parses the files in order and hands over batches of `size` users, each
/// with how many files were finished. Stops when the receiver is gone.
fn read_batches(
    files: &[PathBuf],
    size: usize,
    sender: &mpsc::SyncSender<(Batch, usize)>,
) -> Result<(), String> {
    let mut batch: Batch = Vec::with_capacity(size);
    for (index, file) in files.iter().enumerate() {
        let mut position = 0;
        let read = graph::read_users(file, |user| {
            position += 1;
            batch.push((index, position, user));
            if batch.len() < size {
                return true;
            }
            let full = std::mem::replace(&mut batch, Vec::with_capacity(size));
            sender.send((full, index)).is_ok()
        });
        match read {
            Ok(_) => {}
            Err(FileError::Stopped) => return Ok(()),
            // The first pass read the same file: it changed since.
            Err(error) => {
                return Err(format!(
                    "{}: {error}: the file changed during the backfill; the batches before are written, run the backfill again",
                    file.display()
                ))
            }
        }
    }
    let _ = sender.send((batch, files.len()));
    Ok(())
}

/// The refusal code of an answer, when refused.
pub fn refusal_code(answer: &Answer) -> Option<&'static str> {
    answer
        .as_ref()
        .err()
        .map(|refusal: &Refusal| refusal.code())
}
