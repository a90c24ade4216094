//! The raw bcrypt rate of this machine, the reference `scripts/bench` holds sign-ins against: as
//! many verifications as `THREADS` threads can do in `SECONDS`, at `COST`, with nothing else running.
//!
//! `cargo run --release --example bcrypt_rate -- THREADS SECONDS COST` prints
//! `RATE threads=… verifications=… rate=…` (verifications per second).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|arg| arg.parse().ok()).collect();
    let [threads, seconds, cost] = args[..] else {
        eprintln!("usage: bcrypt_rate THREADS SECONDS COST");
        std::process::exit(2);
    };
    let Ok(hash) = bcrypt::hash("a password to check", cost as u32) else {
        eprintln!("bcrypt_rate: cost {cost} is not one bcrypt accepts");
        std::process::exit(2);
    };
    let done = AtomicU64::new(0);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while Instant::now() < deadline {
                    let _ = bcrypt::verify("a wrong password", &hash);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let verifications = done.load(Ordering::Relaxed);
    let rate = verifications as f64 / started.elapsed().as_secs_f64();
    println!("RATE threads={threads} verifications={verifications} rate={rate:.2}");
}
