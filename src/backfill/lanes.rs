//! PostgreSQL: the writing lanes of a backfill. Each lane is a thread with a connection of its
//! own that writes, in order, its share of every batch (the users of its share of the email
//! addresses, [`lane_of`]), each share in a transaction of its own. The lanes do not wait for
//! each other: while one waits for its commit to be flushed, or for its next statement, the
//! others write, and the next batch is handed over before the last one is finished. With the
//! lanes taking turns batch by batch, a third of the run's time both cores were idle (`perf`,
//! BENCHMARKS.md "Backfill").

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

use crate::linking::{Answer, LinkRequest, LinkingService};
use crate::storage::{DbConn, StorageError};

/// Batches handed over and not yet finished, at most: one being written, one waiting.
const IN_FLIGHT: usize = 2;

/// One lane's share of a batch: the batch's number, and its requests with their places in it.
struct Share {
    batch: u64,
    places: Vec<usize>,
    requests: Vec<LinkRequest>,
}

/// What a lane answered for a share.
struct Written {
    batch: u64,
    places: Vec<usize>,
    answers: Vec<Result<Answer, StorageError>>,
}

/// A batch handed over: its answers as they come, and how many shares are still being written.
struct InFlight {
    batch: u64,
    answers: Vec<Option<Result<Answer, StorageError>>>,
    waiting: usize,
}

/// The lanes of one run; see the module documentation. Once dropped, or once a share failed, the
/// lanes write none of the shares still waiting (at most one each). What a lane had written, or
/// was writing then, of a batch that is not reported stays written: a rerun reports those users
/// `AlreadyLinked`.
pub(super) struct Lanes {
    shares: Vec<mpsc::SyncSender<Share>>,
    stop: Arc<AtomicBool>,
    written: mpsc::Receiver<Written>,
    in_flight: VecDeque<InFlight>,
    next: u64,
}

impl Lanes {
    /// Starts `lanes` lanes in `scope`, each writing through `linking` on a connection of its
    /// own.
    pub(super) fn start<'scope, 'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        lanes: usize,
        linking: &'env LinkingService,
    ) -> Lanes {
        let (written_to, written) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let shares = (0..lanes)
            .map(|_| {
                let (share_to, shares) = mpsc::sync_channel::<Share>(1);
                let written_to = written_to.clone();
                let stop = stop.clone();
                scope.spawn(move || write_shares(linking, &stop, shares, written_to));
                share_to
            })
            .collect();
        Lanes {
            shares,
            stop,
            written,
            in_flight: VecDeque::new(),
            next: 0,
        }
    }

    /// Hands a batch over to the lanes; returns the batches finished meanwhile, oldest first,
    /// each with its answers in request order (at most [`IN_FLIGHT`] stay unfinished).
    pub(super) fn write(
        &mut self,
        requests: Vec<LinkRequest>,
    ) -> Result<Vec<Vec<Answer>>, StorageError> {
        let batch = self.next;
        self.next += 1;
        let mut shares: Vec<Share> = (0..self.shares.len())
            .map(|_| Share {
                batch,
                places: Vec::new(),
                requests: Vec::new(),
            })
            .collect();
        let total = requests.len();
        for (place, request) in requests.into_iter().enumerate() {
            let share = &mut shares[lane_of(&request, self.shares.len())];
            share.places.push(place);
            share.requests.push(request);
        }
        let mut waiting = 0;
        for (lane, share) in shares.into_iter().enumerate() {
            if share.requests.is_empty() {
                continue;
            }
            waiting += 1;
            self.shares[lane].send(share).map_err(|_| stopped())?;
        }
        self.in_flight.push_back(InFlight {
            batch,
            answers: (0..total).map(|_| None).collect(),
            waiting,
        });
        self.finished(IN_FLIGHT)
    }

    /// Waits for every batch handed over; returns them oldest first.
    pub(super) fn finish(&mut self) -> Result<Vec<Vec<Answer>>, StorageError> {
        self.finished(0)
    }

    /// The finished batches at the front, waiting for answers while more than `left` batches
    /// are unfinished.
    fn finished(&mut self, left: usize) -> Result<Vec<Vec<Answer>>, StorageError> {
        let mut done = Vec::new();
        loop {
            match self.in_flight.front() {
                Some(front) if front.waiting == 0 => {
                    let Some(front) = self.in_flight.pop_front() else {
                        break;
                    };
                    let answers: Result<Vec<Answer>, StorageError> = front
                        .answers
                        .into_iter()
                        .map(|a| a.unwrap_or_else(|| Err(stopped())))
                        .collect();
                    match answers {
                        Ok(answers) => done.push(answers),
                        Err(error) => {
                            self.stop.store(true, Ordering::SeqCst);
                            return Err(error);
                        }
                    }
                }
                Some(_) if self.in_flight.len() > left => {
                    let written = self.written.recv().map_err(|_| stopped())?;
                    let Some(batch) = self.in_flight.iter_mut().find(|b| b.batch == written.batch)
                    else {
                        return Err(stopped());
                    };
                    for (place, answer) in written.places.into_iter().zip(written.answers) {
                        batch.answers[place] = Some(answer);
                    }
                    batch.waiting -= 1;
                }
                _ => break,
            }
        }
        Ok(done)
    }
}

impl Drop for Lanes {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn stopped() -> StorageError {
    StorageError::Unavailable("a writing lane stopped".into())
}

/// A lane: writes the shares it is handed, in order, on a connection of its own.
fn write_shares(
    linking: &LinkingService,
    stop: &AtomicBool,
    shares: mpsc::Receiver<Share>,
    written: mpsc::Sender<Written>,
) {
    // Opened by the executor when first needed, and again after a failure.
    let mut conn: Option<DbConn> = None;
    for share in shares {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let done = Written {
            batch: share.batch,
            places: share.places,
            answers: linking.link_batch(&mut conn, share.requests),
        };
        if written.send(done).is_err() {
            return;
        }
    }
}

/// The lane of a request: by its email's comparison key, so that every user of one address is
/// decided by one lane in the order of the export, after the users of that address before it
/// (which customer is created, which is linked to it), as one writer would decide them, and as
/// the dry run does. Users without a usable email are refused or already linked, and write
/// nothing new: by their identity. (An export that lists one user id twice with two addresses
/// may have both in different lanes at once: the database's unique index still lets one link
/// through, and the other is decided again and reported `AlreadyLinked`, but which of the two
/// reports `Linked` may then differ from the dry run.)
pub(super) fn lane_of(request: &LinkRequest, lanes: usize) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match request
        .email
        .as_deref()
        .and_then(|email| crate::domain::EmailAddress::parse(email).ok())
    {
        Some(email) => email.key().hash(&mut hasher),
        None => request
            .identity
            .as_ref()
            .map(|identity| identity.subject.as_str())
            .hash(&mut hasher),
    }
    (hasher.finish() % lanes as u64) as usize
}
