//! The argon2 checks of the whole process, on a fixed pool of threads.
//!
//! An argon2 check needs `m` KiB of working memory (19 MiB with the default parameters). Run on
//! whatever blocking thread was free, every check allocated that block anew, and the C
//! allocator kept each freed block in the arena of the thread that used it: a flood of wrong
//! passwords grew the process by 19 MiB per blocking thread, to hundreds of megabytes. Here the
//! checks run on one thread per core, so argon2 never runs more than `threads` checks at once
//! and never holds more than `threads × m` KiB.
//!
//! Each check's memory is reserved with a capacity of at least 32 MiB, of which it touches only
//! the `m` KiB it needs. glibc serves every allocation of 32 MiB or more with its own `mmap` and
//! unmaps it when freed (mallopt(3): the dynamic mmap threshold never rises above
//! `DEFAULT_MMAP_THRESHOLD_MAX`, 32 MiB on 64-bit systems), so the memory goes back to the
//! system after every check and an idle server holds none of it. (A smaller block is freed into
//! the thread's arena and kept; the bound above holds either way, since every check runs on one
//! of the pool's threads.)
//!
//! The queue in front of the threads is bounded: when it is full, a check is refused at once
//! ([`Busy`]) instead of waiting, so a flood cannot pile up requests behind it.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use argon2::{Argon2, Block};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::secret::Argon2Hash;

/// Checks waiting per thread before new ones are refused.
const QUEUE_PER_THREAD: usize = 8;

/// The pool is saturated: the check was not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

struct Job {
    hash: Arc<Argon2Hash>,
    presented: Vec<u8>,
    answer: oneshot::Sender<bool>,
}

/// A fixed set of threads that run argon2 checks.
pub struct Argon2Pool {
    jobs: SyncSender<Job>,
    threads: usize,
}

/// Blocks reserved for one check at least (1 KiB each): 32 MiB and one block, beyond glibc's
/// largest mmap threshold.
const RESERVED_BLOCKS: usize = 32 * 1024 + 1;

impl Argon2Pool {
    /// The process's pool: one thread per core (started at the first check).
    pub fn global() -> &'static Argon2Pool {
        static POOL: OnceLock<Argon2Pool> = OnceLock::new();
        POOL.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Argon2Pool::start(threads, threads * QUEUE_PER_THREAD)
        })
    }

    /// A pool of `threads` threads and a queue of `queue` waiting checks.
    pub fn start(threads: usize, queue: usize) -> Argon2Pool {
        let threads = threads.max(1);
        let (jobs, receiver) = sync_channel::<Job>(queue);
        let receiver = Arc::new(std::sync::Mutex::new(receiver));
        let mut started = 0;
        for index in 0..threads {
            let receiver = receiver.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{index}"))
                .spawn(move || work(&receiver));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => log::error!("could not start an argon2 thread: {error}"),
            }
        }
        Argon2Pool {
            jobs,
            threads: started,
        }
    }

    /// How many checks run at once at most.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Checks `presented` against `hash` on the pool. `Err(Busy)` when the queue is full (or the
    /// pool has no thread); the check then did not run.
    pub async fn check(&self, hash: Arc<Argon2Hash>, presented: &[u8]) -> Result<bool, Busy> {
        let (answer, receiver) = oneshot::channel();
        let job = Job {
            hash,
            presented: presented.to_vec(),
            answer,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => return Err(Busy),
        }
        // A dropped answer means the thread died: fail closed.
        receiver.await.map_err(|_| Busy)
    }
}

/// One pool thread: takes checks one at a time.
fn work(receiver: &std::sync::Mutex<std::sync::mpsc::Receiver<Job>>) {
    loop {
        let job = lock(receiver).recv();
        let Ok(job) = job else {
            return;
        };
        // The caller may have gone (its request was dropped): skip the work.
        if job.answer.is_closed() {
            continue;
        }
        let ok = check(&job.hash, &job.presented);
        let _ = job.answer.send(ok);
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// One argon2 check, in memory returned when it ends.
fn check(hash: &Argon2Hash, presented: &[u8]) -> bool {
    let needed = hash.params.block_count();
    let mut blocks: Vec<Block> = Vec::with_capacity(needed.max(RESERVED_BLOCKS));
    blocks.resize(needed, Block::default());
    let memory = blocks.as_mut_slice();
    let argon2 = Argon2::new(hash.algorithm, hash.version, hash.params.clone());
    let mut output = vec![0u8; hash.expected.len()];
    if argon2
        .hash_password_into_with_memory(presented, &hash.salt, &mut output, memory)
        .is_err()
    {
        return false;
    }
    bool::from(output.ct_eq(&hash.expected))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secret::{hash_secret, SecretHash};

    fn argon2_hash(secret: &str) -> Arc<Argon2Hash> {
        match SecretHash::parse(&hash_secret(secret).unwrap()).unwrap() {
            SecretHash::Argon2(hash) => Arc::new(hash),
            SecretHash::KeyedSha256 { .. } => panic!("not argon2"),
        }
    }

    #[tokio::test]
    async fn checks_argon2id_hashes_made_by_the_standard_hasher() {
        let pool = Argon2Pool::start(2, 4);
        let hash = argon2_hash("s3cret");
        assert_eq!(pool.check(hash.clone(), b"s3cret").await, Ok(true));
        assert_eq!(pool.check(hash.clone(), b"s3cret!").await, Ok(false));
        assert_eq!(pool.check(hash, b"").await, Ok(false));
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_instead_of_waiting() {
        // One thread, one place in the queue: of many checks sent at once, some are refused.
        let pool = Arc::new(Argon2Pool::start(1, 1));
        let hash = argon2_hash("s3cret");
        let checks = (0..8).map(|_| {
            let pool = pool.clone();
            let hash = hash.clone();
            tokio::spawn(async move { pool.check(hash, b"wrong").await })
        });
        let results = futures_util::future::join_all(checks).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Ok(Err(Busy))))
            .count();
        let done = results
            .iter()
            .filter(|r| matches!(r, Ok(Ok(false))))
            .count();
        assert!(busy >= 1, "no check was refused: {results:?}");
        assert!(done >= 1, "no check ran: {results:?}");
        assert_eq!(busy + done, 8);
    }
}
