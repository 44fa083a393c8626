//! `retectl certs [--expiring 30d]`: the certificates `enrollment.log`
//! records, newest per principal, with their expiry; and the expiry warnings
//! of `retectl validate` (the CA, every signer, every logged certificate).
//!
//! A principal issued again (a new bundle) is listed with its newest
//! certificate only: the older one is what the node replaced. The time left
//! is [`flor_vertex::validity`]'s, the nodes' own reckoning.

use std::path::{Path, PathBuf};

use flor_vertex::validity::{Validity, DAY_S};
use time::OffsetDateTime;

use crate::fsutil;
use crate::pki::{self, CertInfo, CA_CERT, ENROLLMENT_LOG, MGMT_CERT_DIR};

/// `retectl validate` warns about certificates expiring within this many days.
pub const WARN_DAYS: i64 = 30;

/// `retectl certs`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The rete repo.
    #[arg(default_value = ".")]
    pub repo: PathBuf,
    /// Fail (exit 1) when a certificate expires within this time: `30d`, `12h` or seconds.
    #[arg(long)]
    pub expiring: Option<String>,
}

/// Why `retectl certs` failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// enrollment.log could not be read.
    #[error(transparent)]
    Read(fsutil::FsError),
    /// A line of enrollment.log is not `issued-at, flow, principal, serial, sha256, not-after`.
    #[error("{ENROLLMENT_LOG}:{0}: not a line retectl wrote (6 tab-separated fields, RFC 3339 times, a 64-digit hex SHA-256)")]
    BadLine(usize),
    /// `--expiring` is not a duration.
    #[error("--expiring {0}: expected a duration like 30d, 12h or 3600")]
    BadWindow(String),
    /// Certificates expire inside the window (listed above).
    #[error("{0} certificate(s) expire within {1}")]
    Expiring(usize, String),
}

/// One certificate as enrollment.log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// When it was issued (RFC 3339, as logged).
    pub issued_at: String,
    /// How: flow-a, flow-b, ca-init, ca-sign.
    pub flow: String,
    /// Whose (a SPIFFE ID; the CA is `spiffe://<td>`).
    pub principal: String,
    /// Its `notAfter`, Unix seconds.
    pub not_after: i64,
}

/// `YYYY-MM-DDTHH:MM:SSZ` (what [`pki::rfc3339`] writes) as Unix seconds.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<u16>().ok();
    let month = time::Month::try_from(u8::try_from(n(5..7)?).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::from(n(0..4)?), month, u8::try_from(n(8..10)?).ok()?)
            .ok()?;
    let t = date
        .with_hms(
            u8::try_from(n(11..13)?).ok()?,
            u8::try_from(n(14..16)?).ok()?,
            u8::try_from(n(17..19)?).ok()?,
        )
        .ok()?;
    Some(t.assume_utc().unix_timestamp())
}

/// One line of enrollment.log, every field read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The certificate as [`issued`] lists it.
    pub issued: Issued,
    /// When it was issued, Unix seconds.
    pub issued_unix: i64,
    /// SHA-256 of its DER.
    pub sha256: [u8; 32],
}

/// Every certificate `repo`'s enrollment.log records, in log order (the
/// order of issue: the log is append-only). No log yet: none.
pub fn log(repo: &Path) -> Result<Vec<Logged>, CertsError> {
    let path = repo.join(ENROLLMENT_LOG);
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = fsutil::read_string(&path).map_err(CertsError::Read)?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let bad = || CertsError::BadLine(i + 1);
        let f: Vec<&str> = line.split('\t').collect();
        let [issued_at, flow, principal, _serial, sha, not_after] = f[..] else {
            return Err(bad());
        };
        let mut sha256 = [0u8; 32];
        flor_vertex::hex::decode(sha, &mut sha256).map_err(|_| bad())?;
        out.push(Logged {
            issued_unix: parse_rfc3339(issued_at).ok_or_else(bad)?,
            sha256,
            issued: Issued {
                issued_at: issued_at.into(),
                flow: flow.into(),
                principal: principal.into(),
                not_after: parse_rfc3339(not_after).ok_or_else(bad)?,
            },
        });
    }
    Ok(out)
}

/// Every principal's newest certificate in `repo`'s enrollment.log, in log
/// order of first issue. No log yet: none.
pub fn issued(repo: &Path) -> Result<Vec<Issued>, CertsError> {
    let mut out: Vec<Issued> = Vec::new();
    for entry in log(repo)?.into_iter().map(|l| l.issued) {
        match out.iter_mut().find(|e| e.principal == entry.principal) {
            Some(e) => *e = entry,
            None => out.push(entry),
        }
    }
    Ok(out)
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// Time left in words: "expires in 4 days (at ...)" or "EXPIRED 3 days ago (at ...)".
pub fn left(not_after: i64, now: i64) -> String {
    let v = Validity {
        not_before: i64::MIN,
        not_after,
    };
    let at = pki::rfc3339(not_after);
    if v.seconds_left(now) < 0 {
        format!("EXPIRED {} days ago ({at})", -v.seconds_left(now) / DAY_S)
    } else {
        format!("expires in {} days ({at})", v.days_left(now))
    }
}

/// `retectl validate`'s warnings: the CA, each signer and each logged
/// certificate that expires within [`WARN_DAYS`] (expired CA and signers
/// are validation errors already, reported by [`pki::check_repo`]).
pub fn warnings(repo: &Path) -> Vec<String> {
    let now = now();
    let soon = |not_after: i64| not_after - now < WARN_DAYS * DAY_S;
    let mut out = Vec::new();
    let mut files = vec![repo.join(CA_CERT)];
    if let Ok(rd) = std::fs::read_dir(repo.join(MGMT_CERT_DIR)) {
        let mut signers: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        signers.sort();
        files.extend(signers);
    }
    for path in files {
        let Ok(pem) = fsutil::read_string(&path) else {
            continue;
        };
        if let Ok(info) = CertInfo::parse(&path, pem.as_bytes()) {
            if soon(info.not_after) && info.not_after >= now {
                let rel = path.strip_prefix(repo).unwrap_or(&path);
                out.push(format!(
                    "{}: certificate {}: expires within {WARN_DAYS} days",
                    rel.display(),
                    left(info.not_after, now)
                ));
            }
        }
    }
    match issued(repo) {
        Ok(list) => {
            for i in list.iter().filter(|i| soon(i.not_after)) {
                out.push(format!(
                    "{ENROLLMENT_LOG}: {} ({}, issued {}): {}: expires within {WARN_DAYS} days",
                    i.principal,
                    i.flow,
                    i.issued_at,
                    left(i.not_after, now)
                ));
            }
        }
        Err(e) => out.push(e.to_string()),
    }
    out
}

/// `30d`, `12h`, `90m`, `3600s` or `3600` as seconds.
fn parse_window(s: &str) -> Option<i64> {
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = digits.parse().ok()?;
    let mult = match unit {
        'd' => DAY_S,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(mult).filter(|&v| v >= 0)
}

/// Runs `retectl certs`.
pub fn run(args: Args) -> Result<(), CertsError> {
    let window = match &args.expiring {
        Some(w) => Some(parse_window(w).ok_or_else(|| CertsError::BadWindow(w.clone()))?),
        None => None,
    };
    let list = issued(&args.repo)?;
    let now = now();
    let mut inside = 0;
    for i in &list {
        let flag = match window {
            Some(w) if i.not_after - now < w => {
                inside += 1;
                "  <- within the window"
            }
            _ => "",
        };
        println!(
            "{}\t{}\t{}\tissued {}{flag}",
            i.principal,
            left(i.not_after, now),
            i.flow,
            i.issued_at
        );
    }
    if list.is_empty() {
        println!("{ENROLLMENT_LOG} records no certificate yet");
    }
    match (inside, args.expiring) {
        (0, _) | (_, None) => Ok(()),
        (n, Some(w)) => Err(CertsError::Expiring(n, w)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_pki_writes() {
        for t in [0, 1_700_000_000, 1_795_792_102, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&pki::rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-11-27 15:08:22Z"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    #[test]
    fn windows() {
        assert_eq!(parse_window("30d"), Some(30 * DAY_S));
        assert_eq!(parse_window("12h"), Some(43_200));
        assert_eq!(parse_window("3600"), Some(3600));
        assert_eq!(parse_window("5x"), None);
        assert_eq!(parse_window("d"), None);
        assert_eq!(parse_window("-1d"), None);
    }

    #[test]
    fn newest_certificate_per_principal_counts() {
        let dir = tempfile::tempdir().unwrap();
        const SHA: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        std::fs::write(
            dir.path().join(ENROLLMENT_LOG),
            format!(
                "# header\n\
             2026-01-01T00:00:00Z\tflow-a\tspiffe://t/user/bob\tab\t{SHA}\t2027-01-01T00:00:00Z\n\
             2026-01-01T00:00:00Z\tca-init\tspiffe://t\tab\t{SHA}\t2036-01-01T00:00:00Z\n\
             2026-06-01T00:00:00Z\tflow-b\tspiffe://t/user/bob\tab\t{SHA}\t2026-06-06T00:00:00Z\n"
            ),
        )
        .unwrap();
        let l = issued(dir.path()).unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].principal, "spiffe://t/user/bob");
        assert_eq!(l[0].flow, "flow-b");
        std::fs::write(dir.path().join(ENROLLMENT_LOG), "a\tb\n").unwrap();
        assert!(matches!(issued(dir.path()), Err(CertsError::BadLine(1))));
    }
}
