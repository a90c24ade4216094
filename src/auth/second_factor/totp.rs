//! Authenticator apps (TOTP, RFC 6238: HMAC-SHA-1, 6 digits, 30-second steps, one step of drift
//! either way). Pure: the caller passes the time and the last step the user spent, and stores the
//! step a code matched with one conditional update (`db::second_factors`), which is what makes "each
//! step at most once" hold for racing requests on several instances.

use qrcode::QrCode;
use qrcode::render::svg;
use totp_rs::{Builder, Totp};
use zeroize::Zeroizing;

/// RFC 4226 §4: a shared secret of 160 bits.
pub const SECRET_BYTES: usize = 20;
/// Seconds per step.
pub const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;

/// A new secret from the operating system's generator.
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    Zeroizing::new(crate::random::bytes(SECRET_BYTES))
}

/// The generator for `secret`, named for the app's list as `issuer:account`. A ':' would end the
/// label early, so it is replaced in both.
fn generator(secret: &[u8], issuer: &str, account: &str) -> Option<Totp> {
    Builder::new()
        .with_secret(secret.to_vec())
        .with_issuer(Some(issuer.replace(':', " ")))
        .with_account_name(account.replace(':', " "))
        .build()
        .ok()
}

/// The time step of `unix_secs`.
pub fn step_at(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// The digits of a typed code: spaces and dashes ignored (apps show `123 456`); `None` when what is
/// left is not six digits.
pub fn typed_code(raw: &str) -> Option<String> {
    let digits: String = raw.chars().filter(|c| !c.is_whitespace() && *c != '-').collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

/// The step (of now, one before, one after) whose code `code` is, if any.
pub fn matching_step(secret: &[u8], code: &str, unix_secs: u64) -> Option<u64> {
    let code = typed_code(code)?;
    let totp = generator(secret, "gatehouse", "check")?;
    totp.check(&code, unix_secs)
}

/// Whether a code of `step` may be accepted after `last_used`: each step once, and never one older
/// than a step already spent (RFC 6238 §5.2). The store repeats this test in its `WHERE`.
pub fn may_accept(step: u64, last_used: Option<i64>) -> bool {
    last_used.is_none_or(|last| i64::try_from(step).is_ok_and(|step| step > last))
}

/// The secret as an app's manual entry shows it: base32 in groups of four.
pub fn grouped_secret(secret: &[u8]) -> String {
    let encoded = base32::encode(base32::Alphabet::Rfc4648 { padding: false }, secret);
    encoded.as_bytes().chunks(4).map(|chunk| String::from_utf8_lossy(chunk).into_owned()).collect::<Vec<_>>().join(" ")
}

/// The `otpauth://totp/…` link an app reads (from the QR code, or tapped on a phone).
pub fn otpauth_url(secret: &[u8], issuer: &str, account: &str) -> Option<String> {
    generator(secret, issuer, account)?.to_url().ok()
}

/// The link as a QR code: an inline SVG (drawn here, no script, no image request).
pub fn qr_svg(url: &str) -> Option<String> {
    let code = QrCode::new(url.as_bytes()).ok()?;
    Some(
        code.render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .dark_color(svg::Color("#000000"))
            .light_color(svg::Color("#ffffff"))
            .quiet_zone(true)
            .build(),
    )
}

/// The code of `secret` at `unix_secs` (tests, and the command line's examples).
pub fn code_at(secret: &[u8], unix_secs: u64) -> Option<String> {
    Some(generator(secret, "gatehouse", "check")?.generate(unix_secs).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 Appendix B: the SHA-1 seed, and the 8-digit codes' last six digits (a 6-digit code
    /// is the same truncation modulo 10⁶).
    const RFC_SEED: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc_6238_appendix_b_vectors() {
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, eight_digits) in vectors {
            assert_eq!(code_at(RFC_SEED, time).as_deref(), Some(&eight_digits[2..]), "T = {time}");
            assert_eq!(matching_step(RFC_SEED, &eight_digits[2..], time), Some(step_at(time)), "T = {time}");
        }
    }

    #[test]
    fn a_code_matches_its_own_step_and_the_ones_beside_it_only() {
        let secret = new_secret();
        let now = 1_800_000_000;
        let code = code_at(&secret, now).unwrap();
        assert_eq!(matching_step(&secret, &code, now), Some(step_at(now)));
        assert_eq!(matching_step(&secret, &code, now + STEP_SECS), Some(step_at(now)), "one step late");
        assert_eq!(matching_step(&secret, &code, now - STEP_SECS), Some(step_at(now)), "one step early");
        assert_eq!(matching_step(&secret, &code, now + 2 * STEP_SECS), None);
        assert_eq!(matching_step(&secret, &code, now - 2 * STEP_SECS), None);
        assert_eq!(matching_step(&new_secret(), &code, now), None, "another secret");
    }

    #[test]
    fn typed_codes_ignore_spaces_and_dashes_and_nothing_else() {
        assert_eq!(typed_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(typed_code("123-456").as_deref(), Some("123456"));
        for bad in ["12345", "1234567", "12345a", "", "１２３４５６"] {
            assert_eq!(typed_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_step_is_accepted_once_and_never_an_older_one() {
        let cases = [(10, None, true), (10, Some(9), true), (10, Some(10), false), (10, Some(11), false)];
        for (step, last, expected) in cases {
            assert_eq!(may_accept(step, last), expected, "{step} after {last:?}");
        }
    }

    #[test]
    fn the_app_gets_a_link_a_qr_code_and_a_grouped_secret() {
        let secret = new_secret();
        assert_eq!(secret.len(), 20);
        let url = otpauth_url(&secret, "gatehouse", "alice:x").unwrap();
        assert!(url.starts_with("otpauth://totp/gatehouse:alice%20x?secret="), "{url}");
        let grouped = grouped_secret(&secret);
        assert_eq!(grouped.len(), 32 + 7, "{grouped}");
        assert!(url.contains(&grouped.replace(' ', "")));
        let svg = qr_svg(&url).unwrap();
        assert!(svg.contains("<svg") && !svg.contains("<script"));
    }
}
