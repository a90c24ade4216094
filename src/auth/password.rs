//! bcrypt on a pool of its own, behind a bounded, fair queue.
//!
//! Hashing is the one CPU-heavy thing gatehouse does, and a sign-in storm must neither starve the
//! API nor be starved by it. So the pool has one thread per core, in two kinds:
//!
//! * the **floor** thread runs at normal priority and always takes the next job: sign-ins progress
//!   at one core's rate however busy the API is;
//! * every other thread is a **spare**: it runs at the lowest priority an unprivileged process can
//!   set (`SCHED_IDLE`, else nice 19), and only *starts* a job while the API is idle (no request in
//!   flight and none started for [`API_QUIET`]). OS priority alone is not enough: with autogroups or
//!   cgroups it ranks threads only within gatehouse's own group, so an idle-priority hash would still
//!   take CPU from PostgreSQL, which the API needs.
//!
//! At most `capacity` verifications wait (beyond that the caller is told [`ServerError::Busy`]);
//! one client address or one account may hold at most a `1/SHARE_DIVISOR` share of them, so a
//! flood from a few sources cannot turn every real sign-in away (they are told
//! [`ServerError::TooMany`]); and a job whose check was admitted longer than [`MAX_WAIT`] ago is
//! answered "busy" when it leaves the queue instead of being hashed.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::oneshot;

use crate::errors::ServerError;
use crate::metrics::Metrics;

/// The longest a verification may wait for a hashing thread.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// One address or account may hold at most this fraction of the queue.
const SHARE_DIVISOR: usize = 8;
/// `Retry-After` of a client over its share.
const SHARE_RETRY_AFTER_SECS: u64 = 1;
/// The API counts as idle when no request has started for this long (and none is in flight).
pub const API_QUIET: Duration = Duration::from_millis(20);
/// How often a spare thread with work waiting looks again whether the API has gone idle.
const SPARE_POLL: Duration = Duration::from_millis(5);
/// The cheapest cost bcrypt accepts; padding hashes exist from here up to the configured cost.
const MIN_COST: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("bcrypt failed")]
    Bcrypt(#[from] bcrypt::BcryptError),
    /// The job waited longer than [`MAX_WAIT`] and was not run.
    #[error("the password check waited too long for a hashing thread")]
    Expired,
    #[error("the hashing pool has shut down")]
    ShutDown,
}

impl From<HashError> for ServerError {
    fn from(err: HashError) -> Self {
        match err {
            HashError::Expired => ServerError::Busy { retry_after_secs: MAX_WAIT.as_secs() },
            other => ServerError::internal(other),
        }
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Mismatch,
    Match,
    /// The password matched, and here is a new hash at the configured cost to store instead.
    MatchRehashed(String),
}

/// How busy the API is: counted by a middleware, read by the spare hashing threads.
#[derive(Debug)]
pub struct ApiLoad {
    in_flight: AtomicUsize,
    /// Milliseconds since `epoch` when the latest request started.
    last_start_ms: AtomicU64,
    epoch: Instant,
}

impl Default for ApiLoad {
    fn default() -> Self {
        Self { in_flight: AtomicUsize::new(0), last_start_ms: AtomicU64::new(0), epoch: Instant::now() }
    }
}

impl ApiLoad {
    /// A request started; it counts until the guard is dropped.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.last_start_ms.store(self.millis_now(), Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
            && self.millis_now().saturating_sub(self.last_start_ms.load(Ordering::Relaxed))
                >= API_QUIET.as_millis() as u64
    }

    fn millis_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// One API request in flight.
pub struct InFlight(Arc<ApiLoad>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How the queue is sized.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Verifications that may wait; `None`: enough for [`MAX_WAIT`] of work on every core.
    pub capacity: Option<usize>,
    /// Hashing threads; `None`: one per core.
    pub threads: Option<usize>,
    /// The longest a job may wait for a thread; `None`: [`MAX_WAIT`].
    pub max_wait: Option<Duration>,
}

/// What a hashing thread's priority was set to (read back by tests and the startup log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparePriority {
    /// `SCHED_IDLE`: runs only when nothing else in the process wants the core.
    Idle,
    /// Nice 19, where `SCHED_IDLE` was refused.
    Nice19,
    /// Neither could be set; the admission rule alone keeps spares away from a busy API.
    Unchanged,
}

/// Who a queued job is for: it counts against both shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Source {
    Address(String),
    Account(String),
}

struct Job {
    deadline: Instant,
    run: Box<dyn FnOnce(Result<(), HashError>) + Send>,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Job>,
    /// Admitted and not finished (waiting, or about to be queued, or running).
    admitted: usize,
    per_source: HashMap<Source, usize>,
    pauses: usize,
    shut_down: bool,
}

struct Shared {
    cost: u32,
    capacity: usize,
    max_wait: Duration,
    share: usize,
    /// A hash of a random password at each cost from `MIN_COST` to `cost`, made on first use: the
    /// top one stands in for unknown users, the others pad a cheaper stored hash to the full cost.
    dummies: Vec<OnceLock<Result<String, String>>>,
    queue: Mutex<Queue>,
    job_ready: Condvar,
    api: Arc<ApiLoad>,
    spare_priority: Mutex<Option<SparePriority>>,
    /// bcrypt work done so far, in units of one round of its key schedule (2^cost per call).
    work: AtomicU64,
    /// How long each check took on its thread.
    seconds: prometheus_client::metrics::histogram::Histogram,
}

/// The password hasher. Cheap to clone; the pool stops when the last clone is dropped.
#[derive(Clone)]
pub struct PasswordHasher {
    shared: Arc<Shared>,
    _owner: Arc<PoolOwner>,
}

struct PoolOwner(Arc<Shared>);

impl Drop for PoolOwner {
    fn drop(&mut self) {
        self.0.lock().shut_down = true;
        self.0.job_ready.notify_all();
    }
}

impl PasswordHasher {
    pub fn new(cost: u32, config: QueueConfig, api: Arc<ApiLoad>, metrics: &Metrics) -> Result<Self, HashError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = config.threads.unwrap_or(cores).max(1);
        // Timing the dummy hash (needed anyway) tells how much work the queue may hold.
        let started = Instant::now();
        let top = bcrypt::hash(crate::random::token(24), cost)?;
        let per_hash = started.elapsed().as_secs_f64().max(1e-4);
        let capacity = config.capacity.unwrap_or_else(|| default_capacity(per_hash, threads)).max(1);
        let dummies: Vec<OnceLock<Result<String, String>>> = (MIN_COST..=cost).map(|_| OnceLock::new()).collect();
        if let Some(last) = dummies.last() {
            let _ = last.set(Ok(top));
        }
        let shared = Arc::new(Shared {
            cost,
            capacity,
            max_wait: config.max_wait.unwrap_or(MAX_WAIT),
            share: capacity.div_ceil(SHARE_DIVISOR).max(1),
            dummies,
            queue: Mutex::new(Queue::default()),
            job_ready: Condvar::new(),
            api,
            spare_priority: Mutex::new(None),
            work: AtomicU64::new(0),
            seconds: metrics.password_hash_seconds.clone(),
        });
        for index in 0..threads {
            let worker = Arc::clone(&shared);
            let role = if index == 0 { Role::Floor } else { Role::Spare };
            let name = match role {
                Role::Floor => "hash-floor".to_owned(),
                Role::Spare => format!("hash-spare-{index}"),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.serve(role))
                .map_err(|_| HashError::ShutDown)?;
        }
        Ok(Self { _owner: Arc::new(PoolOwner(Arc::clone(&shared))), shared })
    }

    pub fn cost(&self) -> u32 {
        self.shared.cost
    }

    /// How many verifications may wait.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// How many one address or account may hold.
    pub fn share(&self) -> usize {
        self.shared.share
    }

    /// Jobs waiting for a thread now.
    pub fn waiting(&self) -> usize {
        self.shared.lock().waiting.len()
    }

    /// Places held now: jobs waiting or running, and checks admitted that have not handed in
    /// their job yet (such as one waiting for a claim on a busy account).
    pub fn admitted(&self) -> usize {
        self.shared.lock().admitted
    }

    /// bcrypt work done so far, in rounds of its key schedule: a call at cost `c` adds `2^c`. Every
    /// answer to a password check should add the same, whoever asked.
    #[cfg(any(test, feature = "test-support"))]
    pub fn work_done(&self) -> u64 {
        self.shared.work.load(Ordering::Relaxed)
    }

    /// What the spare threads' priority was set to, once they have started.
    pub fn spare_priority(&self) -> Option<SparePriority> {
        *self.shared.spare_priority.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Holds every job that has not started yet until the guard is dropped: for tests that need a
    /// sign-in held in flight between its claim and its verdict.
    #[cfg(any(test, feature = "test-support"))]
    pub fn pause(&self) -> Paused {
        self.shared.lock().pauses += 1;
        Paused(Arc::clone(&self.shared))
    }

    /// A place in the queue for one job on behalf of `address` and `account`: `Busy` (503) when
    /// the queue is full, `TooMany` (429) when either has used its share. The ticket carries the
    /// deadline of the whole check: whatever it waits for (a claim on the account, a hashing
    /// thread), it is answered within [`MAX_WAIT`] of this moment plus one hash.
    pub fn admit(&self, address: Option<&str>, account: &str) -> Result<Ticket, ServerError> {
        let sources: Vec<Source> = address
            .map(|address| Source::Address(address.to_owned()))
            .into_iter()
            .chain(std::iter::once(Source::Account(account.to_lowercase())))
            .collect();
        let mut queue = self.shared.lock();
        let over_share =
            sources.iter().any(|source| queue.per_source.get(source).copied().unwrap_or(0) >= self.shared.share);
        if queue.shut_down || queue.admitted >= self.shared.capacity {
            return Err(ServerError::Busy { retry_after_secs: MAX_WAIT.as_secs() });
        }
        if over_share {
            // A share frees as soon as one of that client's checks finishes.
            return Err(ServerError::TooMany { retry_after_secs: SHARE_RETRY_AFTER_SECS });
        }
        queue.admitted += 1;
        for source in &sources {
            *queue.per_source.entry(source.clone()).or_insert(0) += 1;
        }
        Ok(Ticket { shared: Arc::clone(&self.shared), sources, deadline: Instant::now() + self.shared.max_wait })
    }

    /// Hashes a new password (admitted on behalf of `account`, e.g. the person setting it).
    pub async fn hash(&self, password: SecretString, account: &str) -> Result<String, ServerError> {
        let ticket = self.admit(None, account)?;
        Ok(ticket.run(move |shared| shared.hash(password.expose_secret())).await?)
    }
}

/// A held place in the queue; given back when the job finishes or the ticket is dropped unused.
pub struct Ticket {
    shared: Arc<Shared>,
    sources: Vec<Source>,
    /// Past this, the job is answered busy instead of run.
    deadline: Instant,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.admitted = queue.admitted.saturating_sub(1);
        for source in &self.sources {
            if let Some(count) = queue.per_source.get_mut(source) {
                *count -= 1;
                if *count == 0 {
                    queue.per_source.remove(source);
                }
            }
        }
    }
}

impl Ticket {
    /// When the check this ticket admitted must have started hashing.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Checks `password` against `stored` (against a dummy hash when there is no user to check, so
    /// unknown users and locked accounts cost the same as a wrong password), and re-hashes on
    /// success when the stored cost is below the configured one. A wrong password against a cheaper
    /// stored hash is padded to the configured cost, so it answers in the same time too.
    pub async fn verify(self, password: SecretString, stored: Option<String>) -> Result<Verification, HashError> {
        self.run(move |shared| shared.verify(password.expose_secret(), stored.as_deref())).await
    }

    async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce(&Shared) -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let (answer, answered) = oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let job = Job {
            deadline: self.deadline,
            run: Box::new(move |admitted: Result<(), HashError>| {
                // The ticket (and with it the place in the queue) lives until the job is done, and
                // is given back, and the time recorded, before the answer goes out: whoever gets
                // the answer sees both.
                let ticket = self;
                let result = admitted.and_then(|()| {
                    let started = Instant::now();
                    let result = work(&ticket.shared);
                    ticket.shared.seconds.observe(started.elapsed().as_secs_f64());
                    result
                });
                drop(ticket);
                let _ = answer.send(result);
            }),
        };
        {
            let mut queue = shared.lock();
            if queue.shut_down {
                return Err(HashError::ShutDown);
            }
            queue.waiting.push_back(job);
        }
        // Both kinds of thread may be asleep; only one may take the job, the others sleep again.
        shared.job_ready.notify_all();
        answered.await.map_err(|_| HashError::ShutDown)?
    }
}

/// Jobs are held while this lives (see [`PasswordHasher::pause`]).
#[cfg(any(test, feature = "test-support"))]
pub struct Paused(Arc<Shared>);

#[cfg(any(test, feature = "test-support"))]
impl Drop for Paused {
    fn drop(&mut self) {
        self.0.lock().pauses -= 1;
        self.0.job_ready.notify_all();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Floor,
    Spare,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock cannot leave the counters half-updated in a way that
        // matters more than stopping sign-ins would.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn serve(&self, role: Role) {
        if role == Role::Spare {
            let priority = lower_current_thread_priority();
            *self.spare_priority.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(priority);
        }
        while let Some(job) = self.next_job(role) {
            let admitted = if Instant::now() > job.deadline { Err(HashError::Expired) } else { Ok(()) };
            (job.run)(admitted);
        }
    }

    /// The next job this thread may run, waiting as long as needed; `None` once the pool shuts down.
    fn next_job(&self, role: Role) -> Option<Job> {
        let mut queue = self.lock();
        loop {
            if queue.shut_down {
                return None;
            }
            let has_work = queue.pauses == 0 && !queue.waiting.is_empty();
            if has_work && (role == Role::Floor || self.api.is_idle()) {
                return queue.waiting.pop_front();
            }
            queue = if has_work {
                // A spare with work waiting looks again soon: the API may go idle without anyone
                // notifying this condition variable.
                self.job_ready.wait_timeout(queue, SPARE_POLL).unwrap_or_else(|poisoned| poisoned.into_inner()).0
            } else {
                self.job_ready.wait(queue).unwrap_or_else(|poisoned| poisoned.into_inner())
            };
        }
    }

    fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verification, HashError> {
        // bcrypt only reads 72 bytes; a longer password could never have been set here, and must not
        // match a prefix. Still spend the time, so length does not show in timing.
        let too_long = password.len() > crate::domain::NewPassword::MAX_BYTES;
        let candidate = if too_long { "" } else { password };
        // An account without a password (see [`NO_PASSWORD`]) is checked like an unknown user: the
        // same dummy hash, the same time.
        let Some(hash) = stored.filter(|hash| stored_cost(hash).is_some()) else {
            self.check(candidate, &self.dummy(self.cost)?);
            return Ok(Verification::Mismatch);
        };
        let matched = self.check(candidate, hash) && !too_long;
        let stored_cost = stored_cost(hash).filter(|cost| (MIN_COST..self.cost).contains(cost));
        if !matched {
            // Costs c, c+1, … cost-1 add up to the cost of one hash at `cost` less one at c.
            if let Some(stored_cost) = stored_cost {
                for cost in stored_cost..self.cost {
                    self.check(candidate, &self.dummy(cost)?);
                }
            }
            return Ok(Verification::Mismatch);
        }
        if stored_cost.is_some() {
            return Ok(Verification::MatchRehashed(self.hash(password)?));
        }
        Ok(Verification::Match)
    }

    /// One bcrypt verification, counted.
    fn check(&self, password: &str, hash: &str) -> bool {
        if let Some(cost) = stored_cost(hash) {
            self.work.fetch_add(1 << cost.min(31), Ordering::Relaxed);
        }
        bcrypt::verify(password, hash).unwrap_or(false)
    }

    /// One bcrypt hash at the configured cost, counted.
    fn hash(&self, password: &str) -> Result<String, HashError> {
        self.work.fetch_add(1 << self.cost.min(31), Ordering::Relaxed);
        Ok(bcrypt::hash(password, self.cost)?)
    }

    fn dummy(&self, cost: u32) -> Result<String, HashError> {
        let slot = self.dummies.get((cost.saturating_sub(MIN_COST)) as usize).ok_or(HashError::ShutDown)?;
        let made = slot.get_or_init(|| bcrypt::hash(crate::random::token(24), cost).map_err(|err| err.to_string()));
        made.clone().map_err(|_| HashError::Bcrypt(bcrypt::BcryptError::CostNotAllowed(cost)))
    }
}

/// Enough verifications for [`MAX_WAIT`] of work on every hashing thread.
fn default_capacity(seconds_per_hash: f64, threads: usize) -> usize {
    let jobs = MAX_WAIT.as_secs_f64() * threads as f64 / seconds_per_hash;
    (jobs.floor() as usize).clamp(threads * 2, 10_000)
}

/// The cost field of a `$2b$12$…` hash.
/// The stored "hash" of an account that has no password yet (invited, its link not used): no bcrypt
/// hash looks like it, so no password matches it, and checking one costs what a wrong password costs.
pub const NO_PASSWORD: &str = "!";

fn stored_cost(hash: &str) -> Option<u32> {
    hash.split('$').nth(2)?.parse().ok()
}

/// `SCHED_IDLE` for the calling thread, or nice 19 if that is refused. Both only lower a thread's
/// priority, which Linux allows any process.
fn lower_current_thread_priority() -> SparePriority {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: plain syscalls on the calling thread (pid 0) with a valid, initialised argument.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
            return SparePriority::Idle;
        }
        // SAFETY: as above; on Linux, PRIO_PROCESS with who = 0 is the calling thread.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } == 0 {
            return SparePriority::Nice19;
        }
    }
    SparePriority::Unchanged
}

/// Hashes on the calling thread: for the command line, which has no executor to protect.
pub fn hash_blocking(password: &SecretString, cost: u32) -> Result<String, HashError> {
    Ok(bcrypt::hash(password.expose_secret(), cost)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(cost: u32, capacity: usize) -> PasswordHasher {
        let config = QueueConfig { capacity: Some(capacity), threads: Some(2), max_wait: None };
        PasswordHasher::new(cost, config, Arc::default(), &Metrics::new()).unwrap()
    }

    async fn verify(hasher: &PasswordHasher, password: &str, stored: Option<String>) -> Verification {
        hasher.admit(None, "someone").unwrap().verify(password.to_owned().into(), stored).await.unwrap()
    }

    #[actix_web::test]
    async fn a_correct_password_matches_and_a_wrong_one_does_not() {
        let hasher = hasher(4, 8);
        let hash = hasher.hash("correct horse".into(), "someone").await.unwrap();
        assert_eq!(verify(&hasher, "correct horse", Some(hash.clone())).await, Verification::Match);
        assert_eq!(verify(&hasher, "wrong", Some(hash)).await, Verification::Mismatch);
        assert_eq!(verify(&hasher, "anything", None).await, Verification::Mismatch);
    }

    #[actix_web::test]
    async fn a_cheaper_stored_hash_is_upgraded_on_success() {
        let old = bcrypt::hash("correct horse", 4).unwrap();
        match verify(&hasher(5, 8), "correct horse", Some(old)).await {
            Verification::MatchRehashed(new) => assert_eq!(stored_cost(&new), Some(5)),
            other => panic!("expected a re-hash, got {other:?}"),
        }
    }

    #[actix_web::test]
    async fn a_password_longer_than_72_bytes_never_matches_its_prefix() {
        let hash = bcrypt::hash("x".repeat(72), 4).unwrap();
        assert_eq!(verify(&hasher(4, 8), &"x".repeat(80), Some(hash)).await, Verification::Mismatch);
    }

    #[actix_web::test]
    async fn a_client_over_its_share_is_told_429_and_a_full_queue_503() {
        let hasher = hasher(4, 16);
        assert_eq!(hasher.share(), 2);
        let _held: Vec<Ticket> = (0..2).map(|i| hasher.admit(Some("192.0.2.1"), &format!("u{i}")).unwrap()).collect();
        assert!(matches!(hasher.admit(Some("192.0.2.1"), "u9"), Err(ServerError::TooMany { retry_after_secs: 1 })));
        let _victim: Vec<Ticket> =
            (0..2).map(|i| hasher.admit(Some(&format!("198.51.100.{i}")), "v").unwrap()).collect();
        assert!(matches!(hasher.admit(Some("198.51.100.9"), "V"), Err(ServerError::TooMany { .. })));
    }

    #[actix_web::test]
    async fn the_queue_turns_away_what_it_cannot_hold_and_takes_it_again_once_drained() {
        let hasher = hasher(4, 2);
        let first = hasher.admit(Some("192.0.2.1"), "a").unwrap();
        let second = hasher.admit(Some("192.0.2.2"), "b").unwrap();
        assert!(matches!(hasher.admit(Some("192.0.2.3"), "c"), Err(ServerError::Busy { retry_after_secs: 5 })));
        drop(first);
        drop(second);
        assert!(hasher.admit(Some("192.0.2.3"), "c").is_ok());
    }

    #[actix_web::test]
    async fn one_address_or_one_account_cannot_take_more_than_its_share() {
        let hasher = hasher(4, 16); // a share of 2
        assert_eq!(hasher.share(), 2);
        let _held: Vec<Ticket> = (0..2).map(|i| hasher.admit(Some("192.0.2.1"), &format!("u{i}")).unwrap()).collect();
        assert!(hasher.admit(Some("192.0.2.1"), "u9").is_err(), "a third job from one address");
        let _also: Vec<Ticket> =
            (0..2).map(|i| hasher.admit(Some(&format!("198.51.100.{i}")), "Victim").unwrap()).collect();
        assert!(hasher.admit(Some("198.51.100.9"), "victim").is_err(), "a third job for one account");
        assert!(hasher.admit(Some("203.0.113.1"), "someone-else").is_ok(), "others still get in");
    }

    #[actix_web::test]
    async fn every_wrong_answer_costs_one_hash_at_the_configured_cost() {
        let hasher = hasher(6, 8);
        let at_cost = 1 << 6;
        let cheaper = bcrypt::hash("right", 4).unwrap();
        let same = bcrypt::hash("right", 6).unwrap();
        // An invited account without a password yet costs what an unknown one does, whatever is typed.
        for stored in [None, Some(cheaper), Some(same), Some(NO_PASSWORD.to_owned())] {
            let before = hasher.work_done();
            assert_eq!(verify(&hasher, "wrong", stored.clone()).await, Verification::Mismatch);
            assert_eq!(hasher.work_done() - before, at_cost, "stored: {stored:?}");
            let before = hasher.work_done();
            assert_eq!(verify(&hasher, NO_PASSWORD, stored.clone()).await, Verification::Mismatch);
            assert_eq!(hasher.work_done() - before, at_cost, "stored: {stored:?}");
        }
    }

    #[actix_web::test]
    async fn a_paused_pool_holds_jobs_until_the_pause_ends() {
        let hasher = hasher(4, 8);
        let paused = hasher.pause();
        let ticket = hasher.admit(None, "a").unwrap();
        let job = actix_web::rt::spawn(ticket.verify("x".into(), None));
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(hasher.waiting(), 1);
        drop(paused);
        assert_eq!(job.await.unwrap().unwrap(), Verification::Mismatch);
        assert_eq!(hasher.waiting(), 0);
    }

    #[actix_web::test]
    async fn a_job_that_waited_past_the_deadline_is_answered_busy_without_hashing() {
        let config = QueueConfig { capacity: Some(8), threads: Some(1), max_wait: Some(Duration::from_millis(50)) };
        let hasher = PasswordHasher::new(4, config, Arc::default(), &Metrics::new()).unwrap();
        let paused = hasher.pause();
        let job = actix_web::rt::spawn(hasher.admit(None, "a").unwrap().verify("x".into(), None));
        actix_web::rt::time::sleep(Duration::from_millis(120)).await;
        let work_before = hasher.work_done();
        drop(paused);
        assert!(matches!(job.await.unwrap(), Err(HashError::Expired)));
        assert_eq!(hasher.work_done(), work_before, "nothing was hashed for it");
        assert!(matches!(ServerError::from(HashError::Expired), ServerError::Busy { retry_after_secs: 5 }));
    }

    #[actix_web::test]
    async fn the_deadline_counts_from_admission_so_waits_before_the_queue_do_not_add_up() {
        // The check waited out its whole deadline elsewhere (for a claim on a busy account) before
        // it reached the queue: the queue does not grant it a deadline of its own.
        let config = QueueConfig { capacity: Some(8), threads: Some(1), max_wait: Some(Duration::from_millis(100)) };
        let hasher = PasswordHasher::new(4, config, Arc::default(), &Metrics::new()).unwrap();
        let ticket = hasher.admit(None, "a").unwrap();
        assert!(ticket.deadline() <= Instant::now() + Duration::from_millis(100));
        actix_web::rt::time::sleep(Duration::from_millis(150)).await;
        let work_before = hasher.work_done();
        assert!(matches!(ticket.verify("x".into(), None).await, Err(HashError::Expired)));
        assert_eq!(hasher.work_done(), work_before, "nothing was hashed for it");
    }

    #[test]
    fn the_default_queue_holds_five_seconds_of_work() {
        // Cost 12 on this project's 2-core machine: about a quarter of a second per hash.
        assert_eq!(default_capacity(0.25, 2), 40);
        assert_eq!(default_capacity(0.001, 2), 10_000);
        assert_eq!(default_capacity(10.0, 2), 4);
    }
}
