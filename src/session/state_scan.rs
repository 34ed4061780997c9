//! The pass-through check for statements that may change session state.
//!
//! In transaction pooling a backend connection goes back to the pool after
//! every transaction, so a `SET` or a `LISTEN` would leak to the next client.
//! Without routing, statements are not parsed (that is the cheap path), so a
//! text check decides which statements pin their connection: it runs on every
//! pass-through statement and must cost little more than reading the bytes.

/// Whether `sql` may change session state (SET, RESET, DISCARD, set_config,
/// advisory locks, LISTEN, PREPARE…): a cheap, conservative text check.
/// Letters and digits make words; anything else, `_` and non-ASCII bytes
/// included, separates them, so `pg_advisory_lock` and `set_config` are
/// found by their parts. Only word starts are compared against the word
/// list; they are found sixteen bytes at a time (`word_mask`).
pub(crate) fn may_change_session_state(sql: &[u8]) -> bool {
    // Whether the byte before the current chunk was a word byte.
    let mut carry = 0u32;
    let mut chunks = sql.chunks_exact(16);
    let mut base = 0;
    for chunk in &mut chunks {
        let word = word_mask(chunk.try_into().expect("16 bytes"));
        if any_session_word(sql, base, word & !((word << 1) | carry)) {
            return true;
        }
        carry = word >> 15;
        base += 16;
    }
    let tail = chunks.remainder();
    if tail.is_empty() {
        return false;
    }
    // Padded with NULs, which are not word bytes.
    let mut padded = [0u8; 16];
    padded[..tail.len()].copy_from_slice(tail);
    let word = word_mask(&padded);
    any_session_word(sql, base, word & !((word << 1) | carry))
}

/// Whether a session word begins at any of `starts` (bit i: `sql[base + i]`).
fn any_session_word(sql: &[u8], base: usize, mut starts: u32) -> bool {
    while starts != 0 {
        if starts_session_word(&sql[base + starts.trailing_zeros() as usize..]) {
            return true;
        }
        starts &= starts - 1;
    }
    false
}

/// Bit i of the result is set where `chunk[i]` is an ASCII letter or digit.
#[cfg(target_arch = "x86_64")]
fn word_mask(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load
    // reads exactly the 16 bytes of `chunk`.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        // Signed compares: bytes >= 0x80 are negative, so never in a range.
        let in_range = |x, lo: u8, hi: u8| {
            _mm_and_si128(
                _mm_cmpgt_epi8(x, _mm_set1_epi8(lo as i8 - 1)),
                _mm_cmplt_epi8(x, _mm_set1_epi8(hi as i8 + 1)),
            )
        };
        // Setting bit 5 maps exactly the letters onto a..z.
        let letter = in_range(_mm_or_si128(v, _mm_set1_epi8(0x20)), b'a', b'z');
        let digit = in_range(v, b'0', b'9');
        _mm_movemask_epi8(_mm_or_si128(letter, digit)) as u32
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn word_mask(chunk: &[u8; 16]) -> u32 {
    portable_word_mask(chunk)
}

/// `word_mask` eight bytes at a time in plain integers (SWAR), for targets
/// without the x86_64 path; tested against it on x86_64.
#[cfg(any(test, not(target_arch = "x86_64")))]
fn portable_word_mask(chunk: &[u8; 16]) -> u32 {
    /// Bit 7 of each byte of the result is set where that byte of `x` is an
    /// ASCII letter or digit. Every per-byte sum stays below 0x100, so no
    /// carry crosses into the next byte.
    fn word_bytes(x: u64) -> u64 {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = ONES * 0x80;
        let ascii = !x & HIGH;
        let y = x & !HIGH;
        let lower = y | (ONES * 0x20);
        let letter =
            (lower + ONES * (0x80 - b'a' as u64)) & !(lower + ONES * (0x80 - b'z' as u64 - 1));
        let digit = (y + ONES * (0x80 - b'0' as u64)) & !(y + ONES * (0x80 - b'9' as u64 - 1));
        (letter | digit) & ascii
    }
    /// Gathers bit 7 of each byte into the low 8 bits, byte 0 first.
    fn gather(x: u64) -> u32 {
        ((x >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u32
    }
    let [lo, hi] = [&chunk[..8], &chunk[8..]].map(|h| {
        gather(word_bytes(u64::from_le_bytes(
            h.try_into().expect("8 bytes"),
        )))
    });
    lo | (hi << 8)
}

/// The words `may_change_session_state` looks for, compared ignoring case.
/// (No two may share their first two letters: see `PAIRS`. `hold` and
/// `temp` stand for `DECLARE … WITH HOLD` and `CREATE TEMP[ORARY] TABLE`.)
const WORDS: [&[u8]; 12] = [
    b"set",
    b"reset",
    b"discard",
    b"advisory",
    b"listen",
    b"unlisten",
    b"prepare",
    b"deallocate",
    b"begin",
    b"start",
    b"hold",
    b"temp",
];

/// The index into `WORDS`, plus one, of the word a start's first two bytes
/// may begin, by the low five bits of each byte (`pair_key`): those bits
/// tell letters apart in either case. Digits alias letters, and the full
/// compare then rejects them. Most word starts stop at this lookup.
static PAIRS: [u8; 1024] = {
    let mut t = [0u8; 1024];
    let mut i = 0;
    while i < WORDS.len() {
        t[pair_key(WORDS[i][0], WORDS[i][1])] = i as u8 + 1;
        i += 1;
    }
    t
};

const fn pair_key(a: u8, b: u8) -> usize {
    ((a as usize & 31) << 5) | (b as usize & 31)
}

/// Whether `rest` begins with one of `WORDS`.
fn starts_session_word(rest: &[u8]) -> bool {
    let [a, b, ..] = rest else {
        return false;
    };
    let Some(word) = PAIRS[pair_key(*a, *b)].checked_sub(1) else {
        return false;
    };
    let word = WORDS[word as usize];
    rest.get(..word.len())
        .is_some_and(|s| s.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::{may_change_session_state, portable_word_mask, word_mask};

    #[test]
    fn session_state_words_are_found_in_any_case_and_position() {
        for sql in [
            "SET search_path = x",
            "select set_config('a', 'b', false)",
            "DISCARD ALL",
            "SELECT pg_advisory_lock(1)",
            "LISTEN ch",
            "PREPARE p AS SELECT 1",
            "DEALLOCATE p",
            "BEGIN",
            "START TRANSACTION",
            "  /* x */ reset all; SeT x = 1",
            "RESET ALL",
            "UNLISTEN *",
            "select pg_try_advisory_lock_shared(1)",
            "select 1;set x=1",
            "select\tpg_catalog.set_config('a', 'b', false)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
            "CREATE TEMPORARY TABLE t (x int)",
            "create temp table t as select 1",
        ] {
            assert!(may_change_session_state(sql.as_bytes()), "{sql}");
        }
        for (sql, flagged) in [
            ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", false),
            // Words inside other words are not words.
            ("SELECT * FROM offsets OFFSET 5", false),
            ("SELECT presets, subsets FROM t", false),
            // Conservative: SET as a word, even in UPDATE, is flagged.
            ("UPDATE t SET", true),
            ("", false),
            ("s", false),
            ("SELECT 1 -- 8 bytes!set", true),
            ("SELECT 12345678set", false),
            ("SELECT \u{e9}set", true),
        ] {
            assert_eq!(may_change_session_state(sql.as_bytes()), flagged, "{sql}");
        }
    }

    /// The chunked scan agrees with a plain byte loop on every kind
    /// of byte, at every offset across the 16-byte chunk boundaries.
    #[test]
    fn session_state_scan_matches_a_byte_loop() {
        fn reference(sql: &[u8]) -> bool {
            let mut in_word = false;
            for (i, &c) in sql.iter().enumerate() {
                let word = c.is_ascii_alphanumeric();
                if word && !in_word && super::starts_session_word(&sql[i..]) {
                    return true;
                }
                in_word = word;
            }
            false
        }
        // Words, word parts and every kind of separator, concatenated at random.
        let tokens: &[&[u8]] = &[
            b"set",
            b"SeT",
            b"reset",
            b"listen",
            b"begin",
            b"start",
            b"advisory",
            b"se",
            b"s",
            b"x",
            b"ab",
            b"9",
            b"_",
            b" ",
            b"\t",
            b";",
            b"\xe9",
            b"\x80",
            b"@",
            b"[",
            b"`",
            b"{",
            b"\x7f",
            b"presets",
            b"Z",
            b"selection12",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut flagged = [0; 2];
        for _ in 0..20_000 {
            let n = next() % 24;
            let sql: Vec<u8> = (0..n)
                .flat_map(|_| {
                    tokens[(next() % tokens.len() as u64) as usize]
                        .iter()
                        .copied()
                })
                .collect();
            let expected = reference(&sql);
            assert_eq!(may_change_session_state(&sql), expected, "{sql:?}");
            flagged[expected as usize] += 1;
        }
        assert!(flagged[0] > 1000 && flagged[1] > 1000, "{flagged:?}");
        for c in 0..=255u8 {
            let sql = [b'x', c, b's', b'e', b't'];
            assert_eq!(may_change_session_state(&sql), reference(&sql), "{c}");
        }
    }

    /// The SSE2 mask and the portable one agree on every byte value in
    /// every lane.
    #[test]
    fn word_masks_agree() {
        for c in 0..=255u8 {
            for lane in 0..16 {
                let mut chunk = [b'x'; 16];
                chunk[lane] = c;
                assert_eq!(
                    word_mask(&chunk),
                    portable_word_mask(&chunk),
                    "{c} at {lane}"
                );
                let expected = if c.is_ascii_alphanumeric() {
                    0xffff
                } else {
                    0xffff & !(1 << lane)
                };
                assert_eq!(word_mask(&chunk), expected, "{c} at {lane}");
            }
        }
    }
}
