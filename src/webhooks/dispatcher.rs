//! The dispatcher: a thread of its own, beside the request path, that claims due deliveries from
//! the outbox and POSTs them to the store, at most `max_in_flight` at once.
//!
//! It wakes when this instance commits events (the first attempt is made at once), every
//! `poll_ms` (retries, and events other instances wrote), and when an attempt ends. A store
//! endpoint that is slow, redirects, answers a huge body or never answers costs one attempt slot
//! for at most its `timeout_ms`: redirects are not followed, and the answer's body is never read.
//! Database calls run on blocking threads of the dispatcher's own runtime; an outbox that cannot
//! be read is tried again at the next poll.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDateTime;
use rand::Rng;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;

use super::{body, sign, Outbox, Secret};
use crate::background::{lower_priority, Priority};
use crate::config::webhooks::{WebhookDeliverySettings, WebhookSettings};
use crate::metrics::Metrics;
use crate::storage::webhooks::{self as store, Claimed, StoredEvent, DELIVERED, FAILED, PENDING};
use crate::storage::{self, Db, StorageError};

/// How long past an attempt's time limit its claim holds, before another instance may try.
const CLAIM_MARGIN: Duration = Duration::from_secs(5);
/// How often delivered rows are pruned, at most (more often when they are kept less long).
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// The answer to an attempt, as far as it is read.
const USER_AGENT: &str = concat!("autolink/", env!("CARGO_PKG_VERSION"), " (webhooks)");

/// An endpoint as the dispatcher sees it.
struct Endpoint {
    secret: Secret,
    timeout: Duration,
    retry_schedule_s: Vec<u64>,
    include_email: bool,
}

/// The end of an attempt, recorded by the dispatcher's loop with the others that ended meanwhile
/// (one transaction for all of them).
struct Outcome {
    id: i64,
    url: String,
    status: &'static str,
    error: Option<String>,
    next: NaiveDateTime,
}

struct Context {
    db: Db,
    /// Where attempts report how they ended.
    outcomes: mpsc::UnboundedSender<Outcome>,
    endpoints: HashMap<String, Endpoint>,
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    /// The longest claim: the longest time limit plus [`CLAIM_MARGIN`].
    claim: Duration,
}

/// The running dispatcher; dropping it (or [`Dispatcher::stop`]) stops it after the attempts
/// under way, which are then pending again once their claims lapse.
pub struct Dispatcher {
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dispatcher {
    /// Starts the dispatcher of `webhooks`, or nothing when none is configured.
    pub fn start(
        db: Db,
        webhooks: &[WebhookSettings],
        settings: &WebhookDeliverySettings,
        outbox: &Outbox,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Dispatcher>> {
        if webhooks.is_empty() {
            return Ok(None);
        }
        let mut endpoints = HashMap::new();
        for (index, webhook) in webhooks.iter().enumerate() {
            let secret = Secret::parse(&webhook.secret)
                .map_err(|why| anyhow::anyhow!("webhooks[{index}].secret: {why}"))?;
            endpoints.insert(
                webhook.url.clone(),
                Endpoint {
                    secret,
                    timeout: Duration::from_millis(webhook.timeout_ms),
                    retry_schedule_s: webhook.retry_schedule_s.clone(),
                    include_email: webhook.include_email,
                },
            );
        }
        let longest = endpoints
            .values()
            .map(|e| e.timeout)
            .max()
            .unwrap_or_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(longest)
            .pool_max_idle_per_host(4)
            .build()?;
        let (outcomes, ended) = mpsc::unbounded_channel();
        let context = Arc::new(Context {
            db,
            outcomes,
            endpoints,
            client,
            metrics,
            claim: longest + CLAIM_MARGIN,
        });
        let wake = outbox.wake_signal();
        let poll = Duration::from_millis(settings.poll_ms);
        let keep = Duration::from_secs(settings.keep_delivered_s);
        let max_in_flight = settings.max_in_flight;
        let (stop, stopped) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("autolink-webhooks".into())
            .spawn(move || {
                // The attempts (HTTP, signing) give way to the request path. The database calls
                // run on the runtime's blocking threads at the normal priority: a transaction
                // of the dispatcher holds SQLite's write lock, which the link writer waits for.
                if !lower_priority(Priority::Lowest) {
                    log::debug!("webhooks: the dispatcher runs at the normal priority");
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        log::error!("webhooks: cannot start the dispatcher's runtime: {error}");
                        return;
                    }
                };
                runtime.block_on(run(
                    context,
                    ended,
                    wake,
                    stopped,
                    poll,
                    keep,
                    max_in_flight,
                ));
            })?;
        Ok(Some(Dispatcher {
            stop,
            thread: Some(thread),
        }))
    }

    /// Stops after the attempts under way (each bounded by its time limit).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Endpoints whose last attempt failed, and until when none of their deliveries is claimed: a
/// dead endpoint gets a batch of attempts per pause, not one per delivery, so an outage costs
/// the database and the request path next to nothing. The pause doubles while the endpoint
/// keeps failing, from [`FIRST_PAUSE`] to [`LONGEST_PAUSE`], and ends with its first success.
#[derive(Default)]
struct Pauses(HashMap<String, (tokio::time::Instant, Duration)>);

/// The first pause of a failing endpoint.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause of a failing endpoint (an endpoint that comes back is found within it).
const LONGEST_PAUSE: Duration = Duration::from_secs(60);

impl Pauses {
    fn note(&mut self, url: &str, delivered: bool) {
        let now = tokio::time::Instant::now();
        if delivered {
            self.0.remove(url);
            return;
        }
        let entry = self
            .0
            .entry(url.to_string())
            .or_insert((now, Duration::ZERO));
        // Attempts of one batch end together: one pause for them.
        if entry.0 > now {
            return;
        }
        let pause = (entry.1 * 2).clamp(FIRST_PAUSE, LONGEST_PAUSE);
        *entry = (now + pause, pause);
    }

    /// The endpoints paused now.
    fn now(&self) -> Vec<String> {
        let now = tokio::time::Instant::now();
        self.0
            .iter()
            .filter(|(_, (until, _))| *until > now)
            .map(|(url, _)| url.clone())
            .collect()
    }

    /// When the next pause ends, if one is under way.
    fn next_end(&self) -> Option<tokio::time::Instant> {
        let now = tokio::time::Instant::now();
        self.0
            .values()
            .map(|(until, _)| *until)
            .filter(|u| *u > now)
            .min()
    }
}

async fn run(
    context: Arc<Context>,
    mut ended: mpsc::UnboundedReceiver<Outcome>,
    wake: Arc<Notify>,
    mut stopped: watch::Receiver<bool>,
    poll: Duration,
    keep: Duration,
    max_in_flight: usize,
) {
    let mut in_flight: JoinSet<()> = JoinSet::new();
    let mut last_prune: Option<tokio::time::Instant> = None;
    let mut last_gauge: Option<tokio::time::Instant> = None;
    let mut pauses = Pauses::default();
    let prune_every = keep.clamp(Duration::from_secs(1), PRUNE_EVERY);
    loop {
        let outcomes = take_ended(&mut ended, &mut pauses);
        if *stopped.borrow() {
            record_at_stop(&context, outcomes).await;
            break;
        }
        // What ended is recorded and the next deliveries claimed in one transaction; nothing
        // is read while every endpoint is paused and nothing ended.
        let paused = pauses.now();
        let urls: Vec<String> = context
            .endpoints
            .keys()
            .filter(|url| !paused.contains(url))
            .cloned()
            .collect();
        let free = if urls.is_empty() {
            0
        } else {
            max_in_flight.saturating_sub(in_flight.len())
        };
        let claimed = if free == 0 && outcomes.is_empty() {
            Ok(Vec::new())
        } else {
            blocking(&context, move |c, ctx| claim(c, ctx, outcomes, free, urls)).await
        };
        match claimed {
            Ok(claimed) => {
                for (delivery, event) in claimed {
                    in_flight.spawn(attempt(context.clone(), delivery, event));
                }
            }
            // The outcomes are not recorded: their claims lapse, and they are attempted again.
            Err(error) => log::warn!("webhooks: cannot read or write the outbox: {error}"),
        }
        if last_prune.is_none_or(|at| at.elapsed() >= prune_every) {
            last_prune = Some(tokio::time::Instant::now());
            let before = storage::now() - chrono::Duration::from_std(keep).unwrap_or_default();
            match blocking(&context, move |c, _| store::prune_delivered(c, before)).await {
                Ok(0) => {}
                Ok(n) => log::info!("webhooks: pruned {n} delivered rows"),
                Err(error) => log::warn!("webhooks: cannot prune delivered rows: {error}"),
            }
            let configured: Vec<String> = context.endpoints.keys().cloned().collect();
            match blocking(&context, move |c, _| {
                store::fail_unconfigured(c, &configured)
            })
            .await
            {
                Ok(0) => {}
                Ok(n) => log::warn!(
                    "webhooks: {n} pending deliveries to endpoints no longer configured failed"
                ),
                Err(error) => log::warn!("webhooks: cannot read the outbox: {error}"),
            }
        }
        // The gauge, once a poll interval (a wake per committed group would read it far more).
        if last_gauge.is_none_or(|at| at.elapsed() >= poll) {
            last_gauge = Some(tokio::time::Instant::now());
            if let Ok(oldest) = blocking(&context, |c, _| store::oldest_pending(c)).await {
                let age = oldest.map_or(0, |at| (storage::now() - at).num_seconds());
                context.metrics.oldest_pending_delivery(age);
            }
        }
        // Full: wait for an attempt to end; else for news, the poll, a pause's end, or an
        // attempt's end.
        let full = in_flight.len() >= max_in_flight;
        let next = tokio::time::Instant::now() + poll;
        let wait_until = pauses.next_end().map_or(next, |end| end.min(next));
        tokio::select! {
            _ = wake.notified(), if !full => {}
            _ = tokio::time::sleep_until(wait_until), if !full => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = stopped.changed() => {}
        }
    }
    // Attempts under way end within their time limits.
    while in_flight.join_next().await.is_some() {}
    let outcomes = take_ended(&mut ended, &mut pauses);
    record_at_stop(&context, outcomes).await;
}

/// The attempts that ended since the last call; their endpoints' pauses noted.
fn take_ended(ended: &mut mpsc::UnboundedReceiver<Outcome>, pauses: &mut Pauses) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    while let Ok(outcome) = ended.try_recv() {
        pauses.note(&outcome.url, outcome.status == DELIVERED);
        outcomes.push(outcome);
    }
    outcomes
}

/// Records outcomes in a transaction of their own (at the stop).
async fn record_at_stop(context: &Arc<Context>, outcomes: Vec<Outcome>) {
    if outcomes.is_empty() {
        return;
    }
    let written = blocking(context, move |c, _| {
        storage::write_transaction(c, |c| finish_all(c, &outcomes))
    })
    .await;
    if let Err(error) = written {
        log::warn!("webhooks: cannot record the outcome of attempts: {error}");
    }
}

fn finish_all(conn: &mut storage::DbConn, outcomes: &[Outcome]) -> Result<(), StorageError> {
    for o in outcomes {
        store::finish(conn, o.id, o.status, o.error.as_deref(), o.next)?;
    }
    Ok(())
}

/// Runs a database call on a blocking thread with a pooled connection.
async fn blocking<T, F>(context: &Arc<Context>, work: F) -> Result<T, StorageError>
where
    T: Send + 'static,
    F: FnOnce(&mut storage::DbConn, &Context) -> Result<T, StorageError> + Send + 'static,
{
    let context = context.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = context.db.get()?;
        work(&mut conn, &context)
    })
    .await
    .map_err(|_| StorageError::Unavailable("the dispatcher's database call failed".into()))?
}

/// Records `outcomes` and claims at most `limit` due deliveries to the endpoints `urls` (those
/// not paused), in one transaction; then reads the claimed deliveries' events.
fn claim(
    conn: &mut storage::DbConn,
    context: &Context,
    outcomes: Vec<Outcome>,
    limit: usize,
    urls: Vec<String>,
) -> Result<Vec<(Claimed, StoredEvent)>, StorageError> {
    if outcomes.is_empty() && limit == 0 {
        return Ok(Vec::new());
    }
    let now = storage::now();
    let lapse = now + chrono::Duration::from_std(context.claim).unwrap_or_default();
    let claimed = storage::write_transaction(conn, |conn| {
        finish_all(conn, &outcomes)?;
        if limit == 0 {
            return Ok(Vec::new());
        }
        store::claim_due(conn, now, lapse, limit as i64, &urls)
    })?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let positions: Vec<i64> = claimed.iter().map(|c| c.event_position).collect();
    let mut events: HashMap<i64, StoredEvent> = store::events_at(conn, &positions)?
        .into_iter()
        .map(|e| (e.position, e))
        .collect();
    Ok(claimed
        .into_iter()
        .filter_map(|c| {
            let event = events.remove(&c.event_position)?;
            Some((c, event))
        })
        .collect())
}

/// One attempt of one delivery, and its outcome recorded.
async fn attempt(context: Arc<Context>, delivery: Claimed, event: StoredEvent) {
    let Some(endpoint) = context.endpoints.get(&delivery.url) else {
        // Written while the endpoint was configured; it no longer is (nothing to sign with).
        record(
            &context,
            &delivery,
            FAILED,
            Some("the webhook is no longer configured".into()),
            storage::now(),
        );
        return;
    };
    let payload = body(
        &event.kind,
        event.at,
        &event.data(),
        event.email.as_deref(),
        endpoint.include_email,
    )
    .to_string();
    let timestamp = chrono::Utc::now().timestamp();
    let signature = sign(
        &endpoint.secret,
        &event.event_id,
        timestamp,
        payload.as_bytes(),
    );
    let sent = context
        .client
        .post(&delivery.url)
        .timeout(endpoint.timeout)
        .header("content-type", "application/json")
        .header("webhook-id", &event.event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(payload)
        .send()
        .await;
    // The answer's body is never read: its status is all a delivery needs.
    let error = match sent {
        Ok(answer) if answer.status().is_success() => None,
        Ok(answer) if answer.status().is_redirection() => Some(format!(
            "HTTP {}: redirects are not followed",
            answer.status().as_u16()
        )),
        Ok(answer) => Some(format!("HTTP {}", answer.status().as_u16())),
        Err(error) if error.is_timeout() => Some(format!(
            "no answer within {} ms",
            endpoint.timeout.as_millis()
        )),
        Err(error) if error.is_connect() => Some("could not connect".into()),
        Err(_) => Some("the request failed".into()),
    };
    let Some(error) = error else {
        record(&context, &delivery, DELIVERED, None, storage::now());
        return;
    };
    log::info!(
        "webhooks: delivery {} of {} (attempt {}) failed: {error}",
        delivery.id,
        event.event_id,
        delivery.attempts
    );
    // Attempt n (from 1) is followed by the wait of entry n of the schedule, if there is one.
    let wait = usize::try_from(delivery.attempts)
        .ok()
        .and_then(|n| n.checked_sub(1))
        .and_then(|n| endpoint.retry_schedule_s.get(n));
    match wait {
        Some(&seconds) => {
            let next = storage::now() + with_jitter(Duration::from_secs(seconds));
            record(&context, &delivery, PENDING, Some(error), next);
        }
        None => record(&context, &delivery, FAILED, Some(error), storage::now()),
    }
}

/// The wait, lengthened by up to a tenth (at most a minute), so that deliveries that failed
/// together do not all come back at once.
fn with_jitter(wait: Duration) -> chrono::Duration {
    let most = (wait / 10).min(Duration::from_secs(60)).as_millis() as u64;
    let extra = if most == 0 {
        0
    } else {
        rand::thread_rng().gen_range(0..=most)
    };
    chrono::Duration::from_std(wait + Duration::from_millis(extra)).unwrap_or_default()
}

/// Counts how an attempt ended and hands it to the loop to record.
fn record(
    context: &Arc<Context>,
    delivery: &Claimed,
    status: &'static str,
    error: Option<String>,
    next: NaiveDateTime,
) {
    let outcome = match status {
        PENDING => "retry",
        other => other,
    };
    context.metrics.delivery(outcome);
    let _ = context.outcomes.send(Outcome {
        id: delivery.id,
        url: delivery.url.clone(),
        status,
        error,
        next,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_only_lengthens_and_by_a_tenth_at_most() {
        for _ in 0..100 {
            let waited = with_jitter(Duration::from_secs(300)).num_milliseconds();
            assert!((300_000..=330_000).contains(&waited), "{waited}");
        }
        assert_eq!(with_jitter(Duration::ZERO).num_milliseconds(), 0);
        let long = with_jitter(Duration::from_secs(36_000)).num_milliseconds();
        assert!((36_000_000..=36_060_000).contains(&long), "{long}");
    }
}
