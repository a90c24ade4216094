//! Accounts with an authenticator app, for `scripts/bench` (section o): each can sign in once per
//! 30-second step with its current code, so a sign-in storm with codes needs many of them.
//!
//! `DATABASE_URL=… GATEHOUSE_JWT_SECRET=… cargo run --release --example otp_accounts -- create N PASSWORD COST`
//! adds users `bench-otp-1` … `bench-otp-N` (role `user`, one bcrypt hash at COST shared by all, a
//! fresh app secret each) and prints nothing; `… -- codes N` prints, for each, `USERNAME CODE` with
//! the code of the current step (good for the next 30 to 60 seconds, once per account).

use chrono::Utc;
use diesel::prelude::*;
use gatehouse::auth::second_factor::{TotpSealer, totp};
use gatehouse::db::{self, users::NewUser};
use secrecy::SecretString;
use uuid::Uuid;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let env = |name: &str| std::env::var(name).unwrap_or_else(|_| fail(&format!("{name} is not set")));
    let mut conn =
        PgConnection::establish(&env("DATABASE_URL")).unwrap_or_else(|err| fail(&format!("database: {err}")));
    let secret = SecretString::from(env("GATEHOUSE_JWT_SECRET"));
    let sealer = TotpSealer::new(&secret);
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["create", count, password, cost] => {
            let count: usize = count.parse().unwrap_or_else(|_| fail("N is a number"));
            let cost: u32 = cost.parse().unwrap_or_else(|_| fail("COST is a number"));
            let hash = bcrypt::hash(password, cost).unwrap_or_else(|err| fail(&err.to_string()));
            let step = totp::step_at(u64::try_from(Utc::now().timestamp()).unwrap_or(0)) - 10;
            for k in 1..=count {
                let username = format!("bench-otp-{k}");
                let new_user = NewUser {
                    id: Uuid::now_v7(),
                    username: &username,
                    email: None,
                    full_name: None,
                    password_hash: &hash,
                };
                let written = db::users::create(&mut conn, &new_user, &["user".to_owned()]);
                let Ok(db::users::UserWrite::Done(user)) = written else { fail(&format!("creating {username}")) };
                let app_secret = totp::new_secret();
                let sealed = sealer.seal(user.id, &app_secret).unwrap_or_else(|| fail("sealing"));
                let enrolled = db::second_factors::begin_enrolment(&mut conn, user.id, &sealed)
                    .and_then(|_| db::second_factors::confirm_enrolment(&mut conn, user.id, &sealed, step, &[], &[]));
                if !matches!(enrolled, Ok(true)) {
                    fail(&format!("enrolling {username}"));
                }
            }
        }
        ["codes", count] => {
            let count: usize = count.parse().unwrap_or_else(|_| fail("N is a number"));
            let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
            for k in 1..=count {
                let username = format!("bench-otp-{k}");
                let user = db::users::find_by_username(&mut conn, &username)
                    .ok()
                    .flatten()
                    .unwrap_or_else(|| fail(&format!("no user {username}")));
                let row = db::second_factors::of_user(&mut conn, user.id)
                    .ok()
                    .and_then(|factors| factors.app)
                    .unwrap_or_else(|| fail(&format!("{username} has no app")));
                let app_secret = sealer.open(user.id, &row.secret_sealed).unwrap_or_else(|| fail("opening"));
                let code = totp::code_at(&app_secret, now).unwrap_or_else(|| fail("a code"));
                println!("{username} {code}");
            }
        }
        _ => fail("usage: otp_accounts create N PASSWORD COST | otp_accounts codes N"),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("otp_accounts: {message}");
    std::process::exit(2)
}
