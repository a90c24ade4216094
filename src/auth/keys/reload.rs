//! Keeping a ring fresh: a thread that reloads it (and rotates the keys when due).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use diesel::PgConnection;
use secrecy::{ExposeSecret, SecretString};

use super::*;

/// Keeps a ring fresh: a thread that reloads it every [`RELOAD_EVERY`] (rotating the keys when due,
/// on whichever instance gets the lock first) until this guard is dropped.
pub struct Reloader(#[allow(dead_code)] std::sync::mpsc::Sender<()>);

impl KeyRing {
    /// Reloads every `every` (at most [`RELOAD_EVERY`], which the publication delay assumes).
    pub fn keep_fresh(self: &Arc<Self>, database_url: SecretString, every: Duration) -> Reloader {
        let every = every.min(RELOAD_EVERY);
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let ring = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("signing-keys".to_owned()).spawn(move || {
            // Ends when the guard (and with it the sender) is dropped.
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let Some(ring) = ring.upgrade() else { return };
                let reloaded = diesel::Connection::establish(database_url.expose_secret())
                    .map_err(KeyError::Connect)
                    .and_then(|mut conn: PgConnection| ring.reload(&mut conn, Utc::now()));
                if let Err(err) = reloaded {
                    log::error!(
                        "reloading the signing keys failed (still using the ones loaded before): {}",
                        crate::errors::report(&err)
                    );
                }
            }
        });
        if let Err(err) = spawned {
            log::error!("cannot start the signing-key reloader: {err}");
        }
        Reloader(stop)
    }
}
