//! Lowercase hex for keys and signatures. Hand-written: twenty lines do not
//! earn a dependency's bytes on a 16 MB router.

/// Why hex text was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HexError {
    /// The text is not exactly twice the output length.
    BadLength,
    /// A character is not `0-9 a-f` (uppercase is refused so each value has one spelling).
    BadDigit,
}

/// Writes `bytes` as lowercase hex into `out`, which must hold `2 * bytes.len()`.
///
/// # Panics
/// Never: a short `out` yields only the digits that fit.
pub fn encode<'a>(bytes: &[u8], out: &'a mut [u8]) -> &'a str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut n = 0;
    for (b, pair) in bytes.iter().zip(out.as_chunks_mut::<2>().0) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
        n += 2;
    }
    // Only ASCII digits were written.
    core::str::from_utf8(&out[..n]).unwrap_or_default()
}

fn nibble(c: u8) -> Result<u8, HexError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(HexError::BadDigit),
    }
}

/// Decodes `text` into exactly `out.len()` bytes.
pub fn decode(text: &str, out: &mut [u8]) -> Result<(), HexError> {
    let t = text.as_bytes();
    if t.len() != out.len() * 2 {
        return Err(HexError::BadLength);
    }
    for (o, pair) in out.iter_mut().zip(t.as_chunks::<2>().0) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 8];
        assert_eq!(encode(&[0xde, 0xad, 0x00, 0x0f], &mut buf), "dead000f");
        let mut out = [0u8; 4];
        decode("dead000f", &mut out).unwrap();
        assert_eq!(out, [0xde, 0xad, 0x00, 0x0f]);
        assert_eq!(decode("dead00", &mut out), Err(HexError::BadLength));
        assert_eq!(decode("dead000g", &mut out), Err(HexError::BadDigit));
        assert_eq!(decode("DEAD000F", &mut out), Err(HexError::BadDigit));
    }
}
