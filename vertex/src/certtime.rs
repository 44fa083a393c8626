//! How long a certificate is valid: its X.509 validity window, read from DER
//! (sans-IO), and the seconds or days left of it at a given time.
//!
//! One place for "when does this certificate expire" so the agent's status,
//! `flor doctor`, the metrics gauges and retectl all agree. Only the path to
//! `tbsCertificate.validity` is walked; nothing is verified here (the TLS
//! stack verifies chains), so a certificate whose validity cannot be read is
//! a typed error, never a panic.
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     [0] version OPTIONAL, serialNumber INTEGER, signature AlgorithmIdentifier,
//!     issuer Name, validity SEQUENCE { notBefore Time, notAfter Time }, ... } ... }
//! Time ::= UTCTime (YYMMDDHHMMSSZ) | GeneralizedTime (YYYYMMDDHHMMSSZ)
//! ```

use core::fmt;

/// Seconds in a day, for [`Validity::days_left`].
pub const SECONDS_PER_DAY: i64 = 86_400;

/// A certificate's validity window in Unix seconds (both ends inclusive, RFC 5280 4.1.2.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// `notBefore`.
    pub not_before: i64,
    /// `notAfter`.
    pub not_after: i64,
}

/// Why a certificate's validity could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertTimeError {
    /// The bytes are not a DER certificate of the expected shape.
    Malformed,
    /// A time is not a UTCTime or GeneralizedTime in `Z` form.
    BadTime,
    /// The PEM holds no certificate.
    NoCertificate,
}

impl fmt::Display for CertTimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CertTimeError::Malformed => "certificate is not DER of the X.509 shape",
            CertTimeError::BadTime => "certificate validity time is not UTCTime/GeneralizedTime",
            CertTimeError::NoCertificate => "no CERTIFICATE block in the PEM",
        })
    }
}

impl Validity {
    /// Reads the validity window of a DER certificate.
    pub fn of_der(der: &[u8]) -> Result<Validity, CertTimeError> {
        let (cert, _) = element(der, SEQUENCE)?;
        let (mut tbs, _) = element(cert, SEQUENCE)?;
        if tbs.first() == Some(&VERSION_TAG) {
            tbs = element(tbs, VERSION_TAG)?.1;
        }
        for tag in [INTEGER, SEQUENCE, SEQUENCE] {
            tbs = element(tbs, tag)?.1; // serial, signature algorithm, issuer
        }
        let (validity, _) = element(tbs, SEQUENCE)?;
        let (not_before, rest) = time(validity)?;
        let (not_after, _) = time(rest)?;
        Ok(Validity {
            not_before,
            not_after,
        })
    }

    /// Reads the validity of the first certificate in a PEM file (a chain's leaf).
    #[cfg(feature = "net")]
    pub fn of_pem(pem: &[u8]) -> Result<Validity, CertTimeError> {
        use pki_types::pem::PemObject;
        let der = pki_types::CertificateDer::pem_slice_iter(pem)
            .next()
            .ok_or(CertTimeError::NoCertificate)?
            .map_err(|_| CertTimeError::NoCertificate)?;
        Validity::of_der(&der)
    }

    /// Seconds from `now` (Unix) until `notAfter` passes; negative once expired.
    pub fn seconds_left(&self, now: i64) -> i64 {
        self.not_after.saturating_sub(now)
    }

    /// Whole days left at `now` (rounded down); negative once expired.
    pub fn days_left(&self, now: i64) -> i64 {
        self.seconds_left(now).div_euclid(SECONDS_PER_DAY)
    }

    /// Whether `now` is inside the window.
    pub fn contains(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION_TAG: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element with tag `tag` at the start of `b`: (contents, rest).
fn element(b: &[u8], tag: u8) -> Result<(&[u8], &[u8]), CertTimeError> {
    let (&t, b) = b.split_first().ok_or(CertTimeError::Malformed)?;
    if t != tag {
        return Err(CertTimeError::Malformed);
    }
    element_body(b)
}

fn element_body(b: &[u8]) -> Result<(&[u8], &[u8]), CertTimeError> {
    let (&first, mut b) = b.split_first().ok_or(CertTimeError::Malformed)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        // Four length bytes address 4 GiB; a certificate never needs more.
        if n == 0 || n > 4 || b.len() < n {
            return Err(CertTimeError::Malformed);
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | usize::from(x));
        b = &b[n..];
        len
    };
    if b.len() < len {
        return Err(CertTimeError::Malformed);
    }
    Ok(b.split_at(len))
}

/// A Time at the start of `b`: (Unix seconds, rest).
fn time(b: &[u8]) -> Result<(i64, &[u8]), CertTimeError> {
    let (&tag, after) = b.split_first().ok_or(CertTimeError::Malformed)?;
    let (s, rest) = element_body(after)?;
    let (year, s) = match tag {
        // RFC 5280: YY >= 50 is 19YY, else 20YY.
        UTC_TIME if s.len() == 13 => {
            let yy = digits(&s[..2])?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        GENERALIZED_TIME if s.len() == 15 => (digits(&s[..4])?, &s[4..]),
        _ => return Err(CertTimeError::BadTime),
    };
    if s[10] != b'Z' {
        return Err(CertTimeError::BadTime);
    }
    let (month, day) = (digits(&s[0..2])?, digits(&s[2..4])?);
    let (h, m, sec) = (digits(&s[4..6])?, digits(&s[6..8])?, digits(&s[8..10])?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return Err(CertTimeError::BadTime);
    }
    let days = days_from_civil(year, month, day);
    Ok((days * SECONDS_PER_DAY + h * 3600 + m * 60 + sec, rest))
}

fn digits(s: &[u8]) -> Result<i64, CertTimeError> {
    s.iter().try_fold(0i64, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + i64::from(c - b'0'))
        } else {
            Err(CertTimeError::BadTime)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test fixtures
    use super::*;

    fn cert(not_before: i64, not_after: i64) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec!["x.test".to_string()]).unwrap();
        p.not_before =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(not_before as u64);
        p.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(not_after as u64);
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_window_of_a_generated_certificate() {
        // 2026-11-27T00:00:00Z and 2027-11-27T12:34:56Z; then one past 2050 (GeneralizedTime).
        for (nb, na) in [
            (1_795_737_600, 1_827_318_896),
            (1_795_737_600, 2_556_143_999),
        ] {
            let v = Validity::of_der(&cert(nb, na)).unwrap();
            assert_eq!(
                v,
                Validity {
                    not_before: nb,
                    not_after: na
                }
            );
            assert_eq!(v.seconds_left(na - 10), 10);
            assert_eq!(v.days_left(na - 5 * SECONDS_PER_DAY - 1), 5);
            assert_eq!(v.days_left(na + 1), -1);
            assert!(v.contains(nb) && v.contains(na) && !v.contains(na + 1) && !v.contains(nb - 1));
        }
    }

    #[test]
    fn civil_days_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let good = cert(0, 86_400);
        for cut in 0..good.len() {
            let _ = Validity::of_der(&good[..cut]);
        }
        assert_eq!(Validity::of_der(&[]), Err(CertTimeError::Malformed));
        assert_eq!(
            Validity::of_der(&[0x30, 0x84, 0xff]),
            Err(CertTimeError::Malformed)
        );
        let mut bad = good.clone();
        // Corrupt one digit of the first time (after its tag 0x17 and length 13).
        let at = bad.windows(2).position(|w| w == [UTC_TIME, 13]).unwrap() + 3;
        bad[at] = b'x';
        assert_eq!(Validity::of_der(&bad), Err(CertTimeError::BadTime));
    }
}
