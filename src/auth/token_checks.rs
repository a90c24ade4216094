//! The database half of every bearer check, batched per worker thread.
//!
//! Each API request must load its token's user, their roles, the token's revocation state and
//! whether the client it was issued to is still registered (for a personal access token: its row,
//! with its owner and what their roles allow). Diesel
//! is synchronous, so a lookup on its own costs a hop to a blocking thread and back plus a round trip
//! to PostgreSQL; on a busy server those hops, not the queries, are most of what a request costs. So
//! the requests one worker thread serves queue their lookups here, and at most [`MAX_BATCHES`] drain
//! tasks each take everything queued, answer it with one batch query, and hand every request its own
//! answer. Under light load a batch holds one lookup; under load batches grow by themselves, because
//! lookups queue up while the drain tasks wait for their queries.
//!
//! Every answer comes from a query that started after its lookup was queued, so a deactivation, a
//! revocation or a role change counts from the next request on, as it would without batching.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::db::users::{AccessCheck, TokenHolder};
use crate::db::{self, CHECKOUT_TIMEOUT, PgPool, personal_tokens::PresentedToken};
use crate::errors::{Message, ServerError};
use crate::metrics::Metrics;

/// Batch queries one worker thread runs at a time. One per worker keeps as many queries in flight as
/// the machine has cores (one worker per core) and leaves the other pooled connections to logins and
/// pages; `scripts/bench` measured 2 and 4 as no faster, with a longer tail.
pub const MAX_BATCHES: usize = 1;
/// How long a batch may take: it waits at most `CHECKOUT_TIMEOUT` for a connection, then runs two
/// short statements; past this, the database counts as unavailable.
const BATCH_TIMEOUT: Duration = Duration::from_secs(2 * CHECKOUT_TIMEOUT.as_secs() + 1);
/// A bound on one batch, so a burst cannot build a statement with an unbounded array.
const MAX_BATCH_LEN: usize = 256;

/// One worker thread's queue of lookups. Not `Send`: each worker builds its own (in the app factory).
pub struct TokenChecks {
    pool: PgPool,
    batch_size: prometheus_client::metrics::histogram::Histogram,
    queue: RefCell<Vec<Lookup>>,
    drain_tasks: Cell<usize>,
}

struct Lookup {
    key: Key,
    answer: oneshot::Sender<Result<Found, ServerError>>,
}

/// What a request asks for: an access token's user, revocation and client, or a personal access
/// token by its hash. One batch answers both kinds, in one trip to the database.
enum Key {
    Access(AccessCheck),
    Personal { hash: Vec<u8> },
}

enum Found {
    Access(Option<TokenHolder>),
    Personal(Option<PresentedToken>),
}

impl TokenChecks {
    pub fn new(pool: PgPool, metrics: &Metrics) -> Rc<Self> {
        Rc::new(TokenChecks {
            pool,
            batch_size: metrics.bearer_batch_size.clone(),
            queue: RefCell::new(Vec::new()),
            drain_tasks: Cell::new(0),
        })
    }

    /// The holder of the token `check.jti` if user `check.user_id` exists (active or not), read after
    /// this call began.
    pub async fn token_holder(self: &Rc<Self>, check: AccessCheck) -> Result<Option<TokenHolder>, ServerError> {
        match self.look_up(Key::Access(check)).await? {
            Found::Access(holder) => Ok(holder),
            Found::Personal(_) => Err(ServerError::internal(Message("a token lookup got another kind's answer"))),
        }
    }

    /// The personal access token whose hash is `hash`, with its owner, read after this call began.
    pub async fn personal_token(self: &Rc<Self>, hash: Vec<u8>) -> Result<Option<PresentedToken>, ServerError> {
        match self.look_up(Key::Personal { hash }).await? {
            Found::Personal(token) => Ok(token),
            Found::Access(_) => Err(ServerError::internal(Message("a token lookup got another kind's answer"))),
        }
    }

    async fn look_up(self: &Rc<Self>, key: Key) -> Result<Found, ServerError> {
        let (answer, answered) = oneshot::channel();
        self.queue.borrow_mut().push(Lookup { key, answer });
        if self.drain_tasks.get() < MAX_BATCHES {
            // A task of its own, not this request's future: a client hanging up must not cancel a
            // batch that other requests are waiting for.
            let running = DrainTask::count_in(self);
            actix_web::rt::spawn(Rc::clone(self).drain(running));
        }
        answered.await.map_err(|_| ServerError::internal(Message("the token lookup was dropped")))?
    }

    /// Answers batches until the queue is empty.
    async fn drain(self: Rc<Self>, _running: DrainTask) {
        loop {
            let batch: Vec<Lookup> = {
                let mut queue = self.queue.borrow_mut();
                let len = queue.len().min(MAX_BATCH_LEN);
                queue.drain(..len).collect()
            };
            if batch.is_empty() {
                return;
            }
            self.batch_size.observe(batch.len() as f64);
            let mut checks: Vec<AccessCheck> = Vec::new();
            let mut hashes: Vec<Vec<u8>> = Vec::new();
            for lookup in &batch {
                match &lookup.key {
                    Key::Access(check) => checks.push(check.clone()),
                    Key::Personal { hash } => hashes.push(hash.clone()),
                }
            }
            // Only the statements a batch needs: a batch of access tokens alone runs exactly as before.
            let lookup = db::run(&self.pool, move |conn| {
                let holders = if checks.is_empty() { Vec::new() } else { db::users::token_holders(conn, &checks)? };
                let tokens =
                    if hashes.is_empty() { Vec::new() } else { db::personal_tokens::presented_many(conn, &hashes)? };
                Ok((holders, tokens))
            });
            // A query that never returns (a connection stalled mid-statement) must not hold requests forever.
            let answers = tokio::time::timeout(BATCH_TIMEOUT, lookup)
                .await
                .unwrap_or_else(|_| Err(ServerError::unavailable(Message("the token lookup timed out"))));
            // A request that has gone away dropped its receiver: its answer is simply not needed.
            match answers {
                Ok((holders, tokens)) => {
                    // Each kind's answers come in the order its lookups were collected above.
                    let (mut holders, mut tokens) = (holders.into_iter(), tokens.into_iter());
                    for lookup in batch {
                        let found = match lookup.key {
                            Key::Access(_) => Found::Access(holders.next().flatten()),
                            Key::Personal { .. } => Found::Personal(tokens.next().flatten()),
                        };
                        let _ = lookup.answer.send(Ok(found));
                    }
                }
                Err(err) => {
                    // The database is down: what queued meanwhile would fail the same way, only
                    // later. Answer it now, so an outage gives quick 503s rather than a growing queue.
                    let queued = match err {
                        ServerError::Unavailable(_) => std::mem::take(&mut *self.queue.borrow_mut()),
                        _ => Vec::new(),
                    };
                    for lookup in batch.into_iter().chain(queued) {
                        let _ = lookup.answer.send(Err(err.clone()));
                    }
                }
            }
        }
    }
}

/// One running drain task, counted from before it is spawned until it ends or is dropped (even
/// unpolled, at shutdown), so that new ones can start.
struct DrainTask(Rc<TokenChecks>);

impl DrainTask {
    fn count_in(checks: &Rc<TokenChecks>) -> Self {
        checks.drain_tasks.set(checks.drain_tasks.get() + 1);
        DrainTask(Rc::clone(checks))
    }
}

impl Drop for DrainTask {
    fn drop(&mut self) {
        self.0.drain_tasks.set(self.0.drain_tasks.get().saturating_sub(1));
    }
}
