//! How long a certificate is valid: its X.509 validity window, read straight
//! from the DER, and the time left against a clock the caller supplies.
//!
//! The one place that answers "when does this certificate expire" for the
//! node: `flor agent status` (days left), the agent's expiry warnings,
//! `flor doctor`, and the seconds-until-expiry gauge all read it here.
//! webpki checks the window during a handshake but does not expose it, and
//! a full X.509 parser would cost the router's flash for two fields, so this
//! walks the few DER headers in front of `validity` and nothing else:
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     [0] version OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
//!     issuer SEQUENCE, validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }
//! Time ::= UTCTime "YYMMDDHHMMSSZ" | GeneralizedTime "YYYYMMDDHHMMSSZ"
//! ```
//!
//! Sans-IO: bytes and a Unix time in, values or a typed error out.

use core::fmt;

/// Seconds in a day.
pub const DAY_S: i64 = 86_400;

/// Why a certificate's validity window could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ValidityError {
    /// The bytes are not a DER certificate (a header is cut short or has the wrong tag).
    NotCertificate,
    /// A validity time is not a UTCTime or GeneralizedTime in UTC.
    BadTime,
    /// The text holds no `CERTIFICATE` PEM block.
    NoPem,
}

impl fmt::Display for ValidityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ValidityError::NotCertificate => "not a DER X.509 certificate",
            ValidityError::BadTime => "certificate validity time is not a UTC time",
            ValidityError::NoPem => "no CERTIFICATE PEM block",
        })
    }
}

impl std::error::Error for ValidityError {}

/// A certificate's validity window, in Unix seconds (both ends included).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: i64,
    /// `notAfter`.
    pub not_after: i64,
}

/// Where a clock stands against a validity window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// Before `notBefore`: the clock is behind, or the certificate was issued for later.
    NotYetValid,
    /// Inside the window.
    Valid,
    /// After `notAfter`.
    Expired,
}

impl Validity {
    /// Reads the window of one DER certificate.
    pub fn of_der(der: &[u8]) -> Result<Validity, ValidityError> {
        let (cert, _) = tlv(der, SEQUENCE)?;
        let (tbs, _) = tlv(cert, SEQUENCE)?;
        let mut rest = tbs;
        if rest.first() == Some(&VERSION) {
            rest = tlv(rest, VERSION)?.1;
        }
        rest = tlv(rest, INTEGER)?.1; // serialNumber
        rest = tlv(rest, SEQUENCE)?.1; // signature
        rest = tlv(rest, SEQUENCE)?.1; // issuer
        let (validity, _) = tlv(rest, SEQUENCE)?;
        let (not_before, after) = time(validity)?;
        let (not_after, _) = time(after)?;
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// Reads the window of the first certificate in PEM text (the leaf of a chain).
    #[cfg(feature = "net")]
    pub fn of_pem(pem: &[u8]) -> Result<Validity, ValidityError> {
        use pki_types::pem::PemObject;
        let der = pki_types::CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or(ValidityError::NoPem)?
            .map_err(|_| ValidityError::NoPem)?;
        Validity::of_der(&der)
    }

    /// Where `now` stands against the window.
    pub fn window(&self, now: i64) -> Window {
        if now < self.not_before {
            Window::NotYetValid
        } else if now > self.not_after {
            Window::Expired
        } else {
            Window::Valid
        }
    }

    /// Seconds until `notAfter` (negative once expired).
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now)
    }

    /// Whole days until `notAfter`, rounded down (negative once expired):
    /// 0 means it expires within a day.
    pub fn days_left(&self, now: i64) -> i64 {
        self.seconds_left(now).div_euclid(DAY_S)
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element with tag `tag` at the start of `b`: (its content, what follows).
fn tlv(b: &[u8], tag: u8) -> Result<(&[u8], &[u8]), ValidityError> {
    let (content, rest, found) = any_tlv(b)?;
    if found != tag {
        return Err(ValidityError::NotCertificate);
    }
    Ok((content, rest))
}

fn any_tlv(b: &[u8]) -> Result<(&[u8], &[u8], u8), ValidityError> {
    let bad = ValidityError::NotCertificate;
    let (&tag, b) = b.split_first().ok_or(bad)?;
    let (&first, mut b) = b.split_first().ok_or(bad)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: 1 to 4 length bytes (a certificate is far below 4 GiB).
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || b.len() < n {
            return Err(bad);
        }
        let (digits, rest) = b.split_at(n);
        b = rest;
        digits
            .iter()
            .fold(0usize, |acc, &d| (acc << 8) | usize::from(d))
    };
    if b.len() < len {
        return Err(bad);
    }
    let (content, rest) = b.split_at(len);
    Ok((content, rest, tag))
}

/// One `Time` at the start of `b`: (Unix seconds, what follows).
fn time(b: &[u8]) -> Result<(i64, &[u8]), ValidityError> {
    let (content, rest, tag) = any_tlv(b)?;
    let digits = content.strip_suffix(b"Z").ok_or(ValidityError::BadTime)?;
    let (year, digits) = match (tag, digits.len()) {
        // RFC 5280 4.1.2.5.1: YY >= 50 is 19YY, else 20YY.
        (UTC_TIME, 12) => {
            let yy = num(&digits[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (num(&digits[..4])?, &digits[4..]),
        _ => return Err(ValidityError::BadTime),
    };
    let (mo, d, h, mi, s) = (
        num(&digits[0..2])?,
        num(&digits[2..4])?,
        num(&digits[4..6])?,
        num(&digits[6..8])?,
        num(&digits[8..10])?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return Err(ValidityError::BadTime);
    }
    let secs = days_from_civil(year, mo, d) * DAY_S + h * 3600 + mi * 60 + s;
    Ok((secs, rest))
}

fn num(b: &[u8]) -> Result<i64, ValidityError> {
    b.iter().try_fold(0i64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + i64::from(c - b'0'))
        } else {
            Err(ValidityError::BadTime)
        }
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ`, for messages a person reads.
#[derive(Clone, Copy, Debug)]
pub struct Utc(pub i64);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.0.div_euclid(DAY_S);
        let secs = self.0.rem_euclid(DAY_S);
        // Inverse of days_from_civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: &str, not_after: &str) -> Vec<u8> {
        fn wrap(tag: u8, content: &[u8]) -> Vec<u8> {
            let mut v = vec![tag];
            if content.len() < 0x80 {
                v.push(content.len() as u8);
            } else {
                v.extend_from_slice(&[0x82, (content.len() >> 8) as u8, content.len() as u8]);
            }
            v.extend_from_slice(content);
            v
        }
        let time = |s: &str| {
            let tag = if s.len() == 13 {
                UTC_TIME
            } else {
                GENERALIZED_TIME
            };
            wrap(tag, s.as_bytes())
        };
        let mut validity = time(not_before);
        validity.extend(time(not_after));
        let mut tbs = wrap(VERSION, &wrap(INTEGER, &[2]));
        tbs.extend(wrap(INTEGER, &[0x12; 20]));
        tbs.extend(wrap(SEQUENCE, &[0x06, 0x01, 0x2a]));
        tbs.extend(wrap(SEQUENCE, &[0x31; 200])); // a long issuer: long-form length
        tbs.extend(wrap(SEQUENCE, &validity));
        tbs.extend(wrap(SEQUENCE, &[0; 10])); // subject
        let mut c = wrap(SEQUENCE, &tbs);
        c.extend(wrap(SEQUENCE, &[0x06, 0x01, 0x2a]));
        wrap(SEQUENCE, &c)
    }

    #[test]
    fn reads_both_time_forms() {
        let v = Validity::of_der(&cert("261127150822Z", "20271127150822Z")).unwrap();
        assert_eq!(v.not_before, 1_795_792_102);
        assert_eq!(Utc(v.not_before).to_string(), "2026-11-27T15:08:22Z");
        assert_eq!(Utc(v.not_after).to_string(), "2027-11-27T15:08:22Z");
        let old = Validity::of_der(&cert("991231235959Z", "500101000000Z")).unwrap();
        assert_eq!(Utc(old.not_before).to_string(), "1999-12-31T23:59:59Z");
        assert_eq!(Utc(old.not_after).to_string(), "1950-01-01T00:00:00Z");
    }

    #[test]
    fn reads_a_real_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2030, 1, 2);
        params.not_after = rcgen::date_time_ymd(2031, 6, 30);
        let c = params.self_signed(&key).unwrap();
        let v = Validity::of_der(c.der()).unwrap();
        assert_eq!((v.not_before, v.not_after), (1_893_542_400, 1_940_544_000));
        #[cfg(feature = "net")]
        {
            assert_eq!(Validity::of_pem(c.pem().as_bytes()).unwrap(), v);
            assert_eq!(Validity::of_pem(b"nothing"), Err(ValidityError::NoPem));
        }
    }

    #[test]
    fn days_left_and_window() {
        let v = Validity {
            not_before: 1000,
            not_after: 1000 + 5 * DAY_S,
        };
        assert_eq!(v.window(999), Window::NotYetValid);
        assert_eq!(v.window(1000), Window::Valid);
        assert_eq!(v.window(1000 + 5 * DAY_S + 1), Window::Expired);
        assert_eq!(v.days_left(1000), 5);
        assert_eq!(v.days_left(1001), 4);
        assert_eq!(v.days_left(1000 + 5 * DAY_S + 1), -1);
        assert_eq!(v.seconds_left(1000 + 5 * DAY_S), 0);
    }

    #[test]
    fn garbage_is_a_typed_error_never_a_panic() {
        let good = cert("261127150822Z", "20271127150822Z");
        for n in 0..good.len() {
            assert!(Validity::of_der(&good[..n]).is_err(), "cut at {n}");
        }
        assert_eq!(
            Validity::of_der(&cert("26112715082X", "20271127150822Z")),
            Err(ValidityError::BadTime)
        );
        assert_eq!(
            Validity::of_der(&cert("261327150822Z", "20271127150822Z")),
            Err(ValidityError::BadTime)
        );
        assert_eq!(
            Validity::of_der(&[0x30, 0x85, 1, 1, 1, 1, 1]),
            Err(ValidityError::NotCertificate)
        );
    }
}
