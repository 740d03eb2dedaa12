//! The key codec: an order-preserving, prefix-free encoding of tuples of
//! string (or byte-string) segments, with fixed-width big-endian `u64`s where
//! a number is needed.
//!
//! # Encoding
//! A string segment is written byte for byte, except that a `0x00` byte is
//! escaped as `0x00 0xFF`; the segment then ends with the terminator
//! `0x00 0x01`. A `u64` segment is its 8 bytes, big-endian, with no
//! terminator (it has a fixed width). A key is the concatenation of its
//! segments.
//!
//! # Invariants (checked by the tests below)
//! - **Prefix-free**: inside an encoded string a `0x00` is always followed by
//!   `0xFF`, so the terminator `0x00 0x01` marks exactly where the segment ends.
//!   Hence `enc(x)` is never a prefix of `enc(y)` for `x != y`, and a prefix
//!   scan on `enc(profile:p4)` never returns the keys of `profile:p42`.
//! - **Order-preserving**: for tuples whose segments have the same kinds
//!   position by position, the bytewise order of the encodings is the
//!   lexicographic order of the tuples, strings compared bytewise (Rust's
//!   `str`/`[u8]` order). Where one string is a proper prefix of the other,
//!   the shorter one's terminator (`0x00 0x01`) sorts below both any non-zero
//!   byte and an escaped zero (`0x00 0xFF`).
//! - **Round trip**: [`Decoder`] gives back exactly the segments that were
//!   encoded, and rejects (never panics on) malformed input.

use std::borrow::Cow;

/// The byte that starts an escape or a terminator.
const ESC: u8 = 0x00;
/// Follows [`ESC`] for an escaped zero byte.
const ESC_ZERO: u8 = 0xFF;
/// Follows [`ESC`] at the end of a segment.
const ESC_END: u8 = 0x01;

/// Why a key could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Appends one encoded byte-string segment (escaped, terminated) to `out`.
pub fn push_bytes(out: &mut Vec<u8>, s: &[u8]) {
    out.reserve(s.len() + 2);
    // Text rarely holds the escape byte: a short segment is copied whole
    // (std's word-at-a-time search; the memchr crate's dispatch costs more
    // than it saves below a few dozen bytes).
    if s.len() < 64 && !s.contains(&ESC) {
        out.extend_from_slice(s);
        out.extend_from_slice(&[ESC, ESC_END]);
        return;
    }
    let mut rest = s;
    while let Some(pos) = memchr::memchr(ESC, rest) {
        out.extend_from_slice(&rest[..pos]);
        out.extend_from_slice(&[ESC, ESC_ZERO]);
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[ESC, ESC_END]);
}

/// Appends one encoded string segment to `out`.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    push_bytes(out, s.as_bytes());
}

/// Appends a `u64` segment (8 bytes, big-endian) to `out`.
pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// Encodes a tuple of string segments into a new key.
pub fn encode(segments: &[&str]) -> Vec<u8> {
    let mut out = Vec::with_capacity(segments.iter().map(|s| s.len() + 2).sum());
    for s in segments {
        push_str(&mut out, s);
    }
    out
}

/// The length of the first encoded string segment of `key`, terminator
/// included: `key[..n]` is that segment's encoding.
pub fn segment_len(key: &[u8]) -> Result<usize, CodecError> {
    segment(key).map(|(len, _)| len)
}

/// The length of the first segment of `key` (terminator included), and
/// whether it holds an escaped byte.
fn segment(key: &[u8]) -> Result<(usize, bool), CodecError> {
    let mut i = 0;
    loop {
        match memchr::memchr(ESC, &key[i..]) {
            None => return Err(CodecError("string segment without terminator")),
            Some(p) => {
                let at = i + p;
                match key.get(at + 1) {
                    Some(&ESC_END) => return Ok((at + 2, i > 0)),
                    Some(&ESC_ZERO) => i = at + 2,
                    Some(_) => return Err(CodecError("invalid escape in string segment")),
                    None => return Err(CodecError("string segment without terminator")),
                }
            }
        }
    }
}

/// Reads segments back from a key, front to back.
#[derive(Clone, Debug)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(key: &'a [u8]) -> Self {
        Decoder { rest: key }
    }

    /// True when every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The bytes not decoded yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Decodes the next byte-string segment (borrowed when it has no escapes).
    pub fn bytes(&mut self) -> Result<Cow<'a, [u8]>, CodecError> {
        // One scan finds the terminator and tells whether anything before
        // it was escaped.
        let (n, escaped) = segment(self.rest)?;
        let enc = &self.rest[..n - 2];
        self.rest = &self.rest[n..];
        if !escaped {
            return Ok(Cow::Borrowed(enc));
        }
        let mut out = Vec::with_capacity(enc.len());
        let mut rest = enc;
        while let Some(pos) = memchr::memchr(ESC, rest) {
            // `segment_len` guarantees an `ESC_ZERO` follows inside `enc`.
            out.extend_from_slice(&rest[..pos]);
            out.push(ESC);
            rest = &rest[pos + 2..];
        }
        out.extend_from_slice(rest);
        Ok(Cow::Owned(out))
    }

    /// Decodes the next string segment, which must be UTF-8.
    pub fn str(&mut self) -> Result<Cow<'a, str>, CodecError> {
        match self.bytes()? {
            Cow::Borrowed(b) => std::str::from_utf8(b)
                .map(Cow::Borrowed)
                .map_err(|_| CodecError("string segment is not UTF-8")),
            Cow::Owned(v) => String::from_utf8(v)
                .map(Cow::Owned)
                .map_err(|_| CodecError("string segment is not UTF-8")),
        }
    }

    /// Decodes the next `u64` segment.
    pub fn u64(&mut self) -> Result<u64, CodecError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<8>() else {
            return Err(CodecError("u64 segment shorter than 8 bytes"));
        };
        self.rest = rest;
        Ok(u64::from_be_bytes(*head))
    }

    /// Fails unless every byte has been consumed.
    pub fn end(&self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError("trailing bytes after the last segment"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// Random strings over an alphabet that stresses the escapes and the
    /// order around them: NUL, bytes 0x01 and 0xFF neighbours in UTF-8 ("ÿ"
    /// is C3 BF), multi-byte characters, and ordinary letters.
    fn random_string(rng: &mut StdRng) -> String {
        const ALPHABET: &[&str] = &[
            "\u{0}", "\u{1}", "ÿ", "a", "b", "p", "4", "2", ":", "\u{7f}", "é", "😀", "\u{ff}",
        ];
        let len = rng.random_range(0..6);
        (0..len)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())])
            .collect()
    }

    fn random_tuple(rng: &mut StdRng) -> Vec<String> {
        let n = rng.random_range(1..4);
        (0..n).map(|_| random_string(rng)).collect()
    }

    fn enc(t: &[String]) -> Vec<u8> {
        let v: Vec<&str> = t.iter().map(String::as_str).collect();
        encode(&v)
    }

    fn decode_all(key: &[u8], n: usize) -> Vec<String> {
        let mut d = Decoder::new(key);
        let out = (0..n)
            .map(|_| d.str().expect("decodes").into_owned())
            .collect();
        d.end().expect("no trailing bytes");
        out
    }

    #[test]
    fn round_trip() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..20_000 {
            let t = random_tuple(&mut rng);
            let k = enc(&t);
            assert_eq!(decode_all(&k, t.len()), t);
        }
    }

    #[test]
    fn order_is_preserved() {
        let mut rng = StdRng::seed_from_u64(2);
        for _ in 0..50_000 {
            // Same arity: tuples of one tree have the same shape.
            let n = rng.random_range(1..4);
            let a: Vec<String> = (0..n).map(|_| random_string(&mut rng)).collect();
            let b: Vec<String> = (0..n).map(|_| random_string(&mut rng)).collect();
            assert_eq!(enc(&a).cmp(&enc(&b)), a.cmp(&b), "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn whole_segments_are_prefix_free() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..50_000 {
            let x = random_string(&mut rng);
            let mut y = x.clone();
            if rng.random_bool(0.8) {
                y.push_str(&random_string(&mut rng));
            } else {
                y = random_string(&mut rng);
            }
            let (ex, ey) = (encode(&[&x]), encode(&[&y]));
            assert_eq!(ey.starts_with(&ex), x == y, "{x:?} vs {y:?}");
            // A longer key that starts with enc(y) is still not under enc(x).
            let mut long = ey.clone();
            push_str(&mut long, &random_string(&mut rng));
            assert_eq!(long.starts_with(&ex), x == y, "{x:?} vs {y:?}");
        }
    }

    #[test]
    fn fixed_examples() {
        assert_eq!(encode(&["a\u{0}b"]), b"a\x00\xffb\x00\x01");
        assert!(encode(&["profile:p4"]) < encode(&["profile:p4\u{0}"]));
        assert!(encode(&["profile:p4\u{0}"]) < encode(&["profile:p42"]));
        assert!(!encode(&["profile:p42"]).starts_with(&encode(&["profile:p4"])));
        let mut k = encode(&["x"]);
        push_u64(&mut k, 258);
        let mut d = Decoder::new(&k);
        assert_eq!(d.str().ok().as_deref(), Some("x"));
        assert_eq!(d.u64(), Ok(258));
        assert!(d.end().is_ok());
    }

    #[test]
    fn u64_order() {
        let mut rng = StdRng::seed_from_u64(4);
        for _ in 0..10_000 {
            let (a, b): (u64, u64) = (rng.random(), rng.random_range(0..1000));
            let (mut ka, mut kb) = (Vec::new(), Vec::new());
            push_u64(&mut ka, a);
            push_u64(&mut kb, b);
            assert_eq!(ka.cmp(&kb), a.cmp(&b));
        }
    }

    #[test]
    fn malformed_keys_are_errors_not_panics() {
        let mut rng = StdRng::seed_from_u64(5);
        for _ in 0..50_000 {
            let len = rng.random_range(0..12);
            let key: Vec<u8> = (0..len)
                .map(|_| [0x00, 0x01, 0xFF, b'a', 0xC3][rng.random_range(0..5)])
                .collect();
            let mut d = Decoder::new(&key);
            while !d.is_empty() {
                if d.str().is_err() {
                    break;
                }
            }
            let _ = Decoder::new(&key).u64();
            let _ = segment_len(&key);
        }
        assert!(Decoder::new(b"ab").str().is_err());
        assert!(Decoder::new(b"a\x00\x02\x00\x01").str().is_err());
        assert!(Decoder::new(b"a\x00").str().is_err());
        assert!(Decoder::new(b"\xff\x00\x01").str().is_err());
        assert!(Decoder::new(b"1234567").u64().is_err());
    }
}
