//! Fast, literal-insensitive cache keys for the level-2 parse cache.
//!
//! The level-2 cache serves statements that differ from a cached one only in
//! literal values. Finding the literals with `pg_query::scan_tokens` costs
//! several microseconds (the C scanner plus protobuf decoding), more than
//! the rest of a cache hit together, so this module finds them with a small
//! byte-level lexer instead.
//!
//! A hand-written lexer is safe here because it never decides anything about
//! routing:
//!
//! * it only forms cache keys: the statement text with each literal replaced
//!   by a marker of its kind, every other byte (comments with tenant hints,
//!   identifiers, operators, whitespace, `$n`) kept verbatim;
//! * every routing fact still comes from pg_query's parse tree: a template is
//!   only ever built from a full analysis of a real statement;
//! * a template is only stored under a key when, for that statement, the
//!   literal ranges found here are exactly those of pg_query's scanner
//!   (`ParseCache` checks this), so a text this lexer misreads never gets
//!   a template;
//! * a later statement with the same key has the same bytes outside its
//!   literals, so it can only be misread inside a literal; the literal rules
//!   below are PostgreSQL's own (with `standard_conforming_strings = on`, as
//!   the router parses), and anything rarer returns `None`, which merely
//!   sends the statement down the full-parse path.
//!
//! Forms answered with `None` (no fast key): `U&'…'`/`U&"…"`, `B'…'`,
//! `X'…'`, hexadecimal/octal/binary and underscored numbers, a number
//! followed by an identifier character, `$` or a second `.`, E-string
//! octal/hex/Unicode escapes, strings that may be continued by a following
//! string (PostgreSQL concatenates `'a'` newline `'b'`), unterminated quotes
//! and comments, empty quoted identifiers, NUL bytes and out-of-range `$n`.

/// Literal kinds, mirroring the scanner token a literal becomes; the kind is
/// part of the key because the parse tree differs between them (an integer
/// that does not fit in 32 bits is a float constant to PostgreSQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum LitKind {
    /// `'…'`, `E'…'`, `$tag$…$tag$` (Sconst).
    Str = b's',
    /// Decimal integer that fits in an `int4` (Iconst).
    Int = b'i',
    /// Decimal with a point or exponent, or an integer too large for `int4`
    /// (Fconst).
    Float = b'f',
}

/// A literal's byte range in the statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Literal {
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) kind: LitKind,
}

/// The level-2 key of a statement and its literals, in text order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct FastKey {
    pub(crate) key: Vec<u8>,
    pub(crate) literals: Vec<Literal>,
}

/// Starts a literal marker in a key. 0xFF never occurs in UTF-8, so a marker
/// cannot be confused with statement text.
const MARK: u8 = 0xFF;

/// Computes the level-2 key of `sql`, or None when the text uses a form this
/// lexer does not handle (the caller then takes the full-parse path).
#[cfg(test)]
pub(crate) fn fast_key(sql: &str) -> Option<FastKey> {
    fast_key_in(sql, FastKey::default())
}

/// [`fast_key`], built in `out`'s buffers (emptied first): a caller that
/// hands back the key of the last statement allocates nothing.
pub(crate) fn fast_key_in(sql: &str, mut out: FastKey) -> Option<FastKey> {
    let b = sql.as_bytes();
    // Literal offsets are stored as u32, like PostgreSQL's int locations.
    if u32::try_from(b.len()).is_err() {
        return None;
    }
    out.key.clear();
    out.key.reserve(b.len() + 8);
    out.literals.clear();
    // Start of the verbatim run not yet copied into the key; copying runs
    // instead of bytes keeps the common case a few memcpys.
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let class = CLASS[c as usize];
        if class & SPECIAL == 0 {
            // Whitespace, punctuation and most operator characters: only
            // copied. This is most bytes that are not identifiers.
            i += 1;
            continue;
        }
        let next = at(b, i + 1);
        if class & IDENT_START != 0 {
            // Prefixes only count at the start of a token: `be'x'` is the
            // identifier `be` then a plain string.
            match (c, next) {
                (b'e' | b'E', b'\'') => {
                    let end = escape_string(b, i + 2)?;
                    push_literal(&mut out, b, &mut run, i, end, LitKind::Str);
                    i = end;
                    no_continuation(b, i)?;
                    continue;
                }
                (b'b' | b'B' | b'x' | b'X', b'\'') => return None,
                (b'u' | b'U', b'&') if matches!(at(b, i + 2), b'\'' | b'"') => return None,
                // Anything else, including `n'…'` (which the scanner splits
                // into NCHAR and a plain string), is an identifier.
                _ => {}
            }
            i += 1;
            while i < b.len() && CLASS[b[i] as usize] & IDENT_CONT != 0 {
                i += 1;
            }
            continue;
        }
        match c {
            b'0'..=b'9' => {
                let (end, kind) = number(b, i)?;
                push_literal(&mut out, b, &mut run, i, end, kind);
                i = end;
            }
            b'\'' => {
                let end = plain_string(b, i + 1)?;
                push_literal(&mut out, b, &mut run, i, end, LitKind::Str);
                i = end;
                no_continuation(b, i)?;
            }
            b'"' => i = quoted_ident(b, i + 1)?,
            b'-' if next == b'-' => i = line_comment_end(b, i + 2)?,
            b'/' if next == b'*' => i = block_comment_end(b, i + 2)?,
            b'$' if next.is_ascii_digit() => i = param_end(b, i + 1)?,
            b'$' if next == b'$' || is_ident_start(next) => {
                let end = dollar_string(b, i)?;
                push_literal(&mut out, b, &mut run, i, end, LitKind::Str);
                i = end;
                no_continuation(b, i)?;
            }
            // `$` followed by anything else is an error or an odd token in
            // PostgreSQL; not worth reasoning about.
            b'$' => return None,
            // `..` is one token, so `..5` is `..` then the integer 5, not
            // `.` then `.5`.
            b'.' if next == b'.' => i += 2,
            b'.' if next.is_ascii_digit() => {
                let (end, kind) = number(b, i)?;
                push_literal(&mut out, b, &mut run, i, end, kind);
                i = end;
            }
            // The scanner sees a NUL as the end of the text.
            0 => return None,
            // A lone `-`, `/` or `.`.
            _ => i += 1,
        }
    }
    out.key.extend_from_slice(&b[run..]);
    Some(out)
}

/// Byte classes, as bit flags: most bytes need only one table load.
const SPECIAL: u8 = 1;
const IDENT_START: u8 = 2;
const IDENT_CONT: u8 = 4;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        let start = b.is_ascii_alphabetic() || b == b'_' || b >= 0x80;
        if start {
            t[c] |= SPECIAL | IDENT_START | IDENT_CONT;
        }
        if b.is_ascii_digit() {
            t[c] |= SPECIAL | IDENT_CONT;
        }
        if b == b'$' {
            t[c] |= IDENT_CONT;
        }
        if matches!(b, b'\'' | b'"' | b'-' | b'/' | b'$' | b'.' | 0) {
            t[c] |= SPECIAL;
        }
        c += 1;
    }
    t
};

/// Byte at `i`, or 0 past the end (0 is rejected wherever it matters).
#[inline]
fn at(b: &[u8], i: usize) -> u8 {
    b.get(i).copied().unwrap_or(0)
}

#[inline]
fn is_ident_start(c: u8) -> bool {
    CLASS[c as usize] & IDENT_START != 0
}

#[inline]
fn is_ident_cont(c: u8) -> bool {
    CLASS[c as usize] & IDENT_CONT != 0
}

fn push_literal(
    out: &mut FastKey,
    b: &[u8],
    run: &mut usize,
    start: usize,
    end: usize,
    kind: LitKind,
) {
    out.key.extend_from_slice(&b[*run..start]);
    out.key.push(MARK);
    out.key.push(kind as u8);
    *run = end;
    // Offsets fit: fast_key rejected texts longer than u32::MAX.
    out.literals.push(Literal {
        start: start as u32,
        end: end as u32,
        kind,
    });
}

/// End of a standard-conforming `'…'` string whose body starts at `i`
/// (backslashes are ordinary characters, `''` is a quote).
fn plain_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *b.get(i)? {
            b'\'' if at(b, i + 1) == b'\'' => i += 2,
            b'\'' => return Some(i + 1),
            0 => return None,
            _ => i += 1,
        }
    }
}

/// End of an `E'…'` string whose body starts at `i`. Only escapes that can
/// neither fail nor produce arbitrary bytes are accepted; octal, hex and
/// Unicode escapes may be rejected by the scanner, which a key could not
/// reproduce.
fn escape_string(b: &[u8], mut i: usize) -> Option<usize> {
    loop {
        match *b.get(i)? {
            b'\\' => match at(b, i + 1) {
                0 | b'0'..=b'7' | b'x' | b'u' | b'U' => return None,
                _ => i += 2,
            },
            b'\'' if at(b, i + 1) == b'\'' => i += 2,
            b'\'' => return Some(i + 1),
            0 => return None,
            _ => i += 1,
        }
    }
}

/// End of a `$tag$…$tag$` string starting at `start`. The body ends at the
/// first occurrence of the delimiter: the scanner never lets a `$` inside
/// the body start a longer match that could hide it.
fn dollar_string(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    // Tag characters are identifier characters except `$`; the first is
    // never a digit (the caller checked).
    while i < b.len() && (is_ident_start(b[i]) || b[i].is_ascii_digit()) {
        i += 1;
    }
    // `$abc` without a closing `$` is not a delimiter.
    if at(b, i) != b'$' {
        return None;
    }
    let delim = &b[start..=i];
    let body = &b[i + 1..];
    let pos = body.windows(delim.len()).position(|w| w == delim)?;
    if body[..pos].contains(&0) {
        return None;
    }
    Some(i + 1 + pos + delim.len())
}

/// PostgreSQL concatenates a string with a following `'…'` when only
/// whitespace containing a newline (and `--` comments) separates them.
/// Rather than replicate that rule, refuse any string followed by another
/// quote after whitespace and comments.
fn no_continuation(b: &[u8], mut i: usize) -> Option<()> {
    loop {
        match at(b, i) {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C => i += 1,
            b'-' if at(b, i + 1) == b'-' => i = line_comment_end(b, i + 2)?,
            b'/' if at(b, i + 1) == b'*' => i = block_comment_end(b, i + 2)?,
            b'\'' => return None,
            _ => return Some(()),
        }
    }
}

/// End of a `"…"` identifier whose body starts at `i` (`""` is a quote).
fn quoted_ident(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start;
    loop {
        match *b.get(i)? {
            b'"' if at(b, i + 1) == b'"' => i += 2,
            // The scanner rejects `""` (zero-length identifier).
            b'"' if i == start => return None,
            b'"' => return Some(i + 1),
            0 => return None,
            _ => i += 1,
        }
    }
}

/// End of a `--` comment whose body starts at `i`: the next CR or LF.
fn line_comment_end(b: &[u8], mut i: usize) -> Option<usize> {
    while i < b.len() {
        match b[i] {
            b'\n' | b'\r' => return Some(i),
            0 => return None,
            _ => i += 1,
        }
    }
    Some(i)
}

/// End of a `/* … */` comment whose body starts at `i`; comments nest.
fn block_comment_end(b: &[u8], mut i: usize) -> Option<usize> {
    let mut depth = 1u32;
    loop {
        match (*b.get(i)?, at(b, i + 1)) {
            (b'/', b'*') => {
                depth += 1;
                i += 2;
            }
            (b'*', b'/') => {
                depth -= 1;
                i += 2;
                if depth == 0 {
                    return Some(i);
                }
            }
            (0, _) => return None,
            _ => i += 1,
        }
    }
}

/// End of a `$n` parameter whose digits start at `i`.
fn param_end(b: &[u8], mut i: usize) -> Option<usize> {
    let start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    // `$1abc` is a scanner error and `$1.5`, `$1$` are odd enough to leave
    // to the real scanner; numbers past int4 are rejected by it.
    if is_ident_cont(at(b, i)) || at(b, i) == b'.' || !fits_int4(&b[start..i]) {
        return None;
    }
    Some(i)
}

/// End and kind of the number starting at `start` (a digit, or `.` then a
/// digit): `digits[.digits][e[+-]digits]`, `.digits[e[+-]digits]`.
fn number(b: &[u8], start: usize) -> Option<(usize, LitKind)> {
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    let mut i = digits(start);
    let mut integer = true;
    if at(b, i) == b'.' {
        integer = false;
        i = digits(i + 1);
    }
    if matches!(at(b, i), b'e' | b'E') {
        let mut j = i + 1;
        if matches!(at(b, j), b'+' | b'-') {
            j += 1;
        }
        // `1e`, `1e+` and `1ex` are scanner errors.
        if !at(b, j).is_ascii_digit() {
            return None;
        }
        integer = false;
        i = digits(j);
    }
    // An identifier character right after a number is an error (or a
    // 0x/0o/0b prefix, or an underscore separator); a second `.` is `1..2`
    // or `1.2.3`, whose tokenisation is special-cased by the scanner.
    let after = at(b, i);
    if is_ident_cont(after) || after == b'.' {
        return None;
    }
    let kind = if integer && fits_int4(&b[start..i]) {
        LitKind::Int
    } else {
        LitKind::Float
    };
    Some((i, kind))
}

/// Whether decimal digits fit in an `int4`, which decides Iconst vs Fconst.
fn fits_int4(digits: &[u8]) -> bool {
    let mut v: u64 = 0;
    for &d in digits {
        v = v * 10 + u64::from(d - b'0');
        if v > i32::MAX as u64 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key built in the buffers of another statement's is the key built
    /// from scratch: nothing of the earlier text or its literals remains.
    #[test]
    fn a_key_built_in_reused_buffers_is_the_same() {
        let long =
            "SELECT * FROM accounts WHERE tenant_id = 'acme' AND id IN (1, 2, 3) AND name = 'x'";
        for sql in ["SELECT 1", "SELECT * FROM t WHERE id = 42", ""] {
            let reused = fast_key_in(sql, fast_key(long).unwrap());
            assert_eq!(reused, fast_key(sql), "{sql}");
        }
    }

    /// Literal texts and kinds, for compact assertions.
    fn lits(sql: &str) -> Option<Vec<(&str, LitKind)>> {
        let k = fast_key(sql)?;
        Some(
            k.literals
                .iter()
                .map(|l| (&sql[l.start as usize..l.end as usize], l.kind))
                .collect(),
        )
    }

    use LitKind::{Float as F, Int as I, Str as S};

    #[test]
    fn strings() {
        assert_eq!(lits("SELECT 'a'"), Some(vec![("'a'", S)]));
        assert_eq!(lits("SELECT 'it''s'"), Some(vec![("'it''s'", S)]));
        assert_eq!(lits("SELECT ''"), Some(vec![("''", S)]));
        assert_eq!(lits("SELECT ''''"), Some(vec![("''''", S)]));
        // Standard-conforming: a backslash is an ordinary character.
        assert_eq!(lits(r"SELECT 'a\', 1"), Some(vec![(r"'a\'", S), ("1", I)]));
        assert_eq!(lits("SELECT 'é -- /* \"'"), Some(vec![("'é -- /* \"'", S)]));
        assert_eq!(lits("SELECT 'a\nb'"), Some(vec![("'a\nb'", S)]));
        // `n'…'` is NCHAR then a plain string.
        assert_eq!(lits("SELECT n'x'"), Some(vec![("'x'", S)]));
        assert_eq!(
            lits("SELECT date'2020-01-01'"),
            Some(vec![("'2020-01-01'", S)])
        );
    }

    #[test]
    fn escape_strings() {
        assert_eq!(lits("SELECT E'a'"), Some(vec![("E'a'", S)]));
        assert_eq!(lits("SELECT e'a'"), Some(vec![("e'a'", S)]));
        assert_eq!(
            lits(r"SELECT E'it\'s', 2"),
            Some(vec![(r"E'it\'s'", S), ("2", I)])
        );
        assert_eq!(
            lits(r"SELECT E'a\\', 2"),
            Some(vec![(r"E'a\\'", S), ("2", I)])
        );
        assert_eq!(lits(r"SELECT E'\n\t''x'"), Some(vec![(r"E'\n\t''x'", S)]));
        // Only a token-initial E starts an escape string.
        assert_eq!(lits("SELECT be'x'"), Some(vec![("'x'", S)]));
        assert_eq!(lits("SELECT Ee'x'"), Some(vec![("'x'", S)]));
        for sql in [
            r"SELECT E'\101'",
            r"SELECT E'\0'",
            r"SELECT E'\x41'",
            r"SELECT E'\u0041'",
            r"SELECT E'\U00000041'",
            r"SELECT E'abc\",
        ] {
            assert_eq!(lits(sql), None, "{sql}");
        }
    }

    #[test]
    fn dollar_quotes() {
        assert_eq!(lits("SELECT $$a'b$$"), Some(vec![("$$a'b$$", S)]));
        assert_eq!(
            lits("SELECT $t$ $$ $1 'x' $u$ $t$, 1"),
            Some(vec![("$t$ $$ $1 'x' $u$ $t$", S), ("1", I)])
        );
        assert_eq!(lits("SELECT $a_1$x$a_1$"), Some(vec![("$a_1$x$a_1$", S)]));
        assert_eq!(lits("SELECT $é$x$é$"), Some(vec![("$é$x$é$", S)]));
        // A longer tag that starts like the delimiter does not close it.
        assert_eq!(lits("SELECT $a$ $ab$ $a$"), Some(vec![("$a$ $ab$ $a$", S)]));
        assert_eq!(lits("SELECT $a$ $ba$a$"), Some(vec![("$a$ $ba$a$", S)]));
        for sql in [
            "SELECT $$abc",
            "SELECT $a$abc$b$",
            "SELECT $abc",
            "SELECT $ 1",
        ] {
            assert_eq!(lits(sql), None, "{sql}");
        }
    }

    #[test]
    fn identifiers_and_params() {
        // `$` inside an identifier, digits inside identifiers, and `$n`.
        assert_eq!(
            lits("SELECT a$b, x1, a$1 FROM t WHERE c = $1"),
            Some(vec![])
        );
        assert_eq!(lits("SELECT a$$b$$ FROM t"), Some(vec![]));
        assert_eq!(lits("SELECT \"a\"\"'b\" FROM t"), Some(vec![]));
        assert_eq!(lits("SELECT \"1\", \"$$\" , 'x'"), Some(vec![("'x'", S)]));
        assert_eq!(lits("SELECT é1 FROM t"), Some(vec![]));
        assert_eq!(lits("SELECT $1::text, $12"), Some(vec![]));
        for sql in [
            "SELECT \"abc",
            "SELECT \"\"",
            "SELECT U&\"a\"",
            "SELECT $1abc",
            "SELECT $1.5",
            "SELECT $1$",
            "SELECT $99999999999",
        ] {
            assert_eq!(lits(sql), None, "{sql}");
        }
        // `u&` only matters before a quote.
        assert_eq!(lits("SELECT u&1"), Some(vec![("1", I)]));
    }

    #[test]
    fn comments() {
        assert_eq!(
            lits("SELECT 1 -- 'x' $$ \n, 2"),
            Some(vec![("1", I), ("2", I)])
        );
        assert_eq!(lits("SELECT 1 -- 'x'"), Some(vec![("1", I)]));
        assert_eq!(lits("SELECT /* a /* 'b */ $$ */ 1"), Some(vec![("1", I)]));
        assert_eq!(
            lits("/* tenant_id='t1' */ SELECT 'x'"),
            Some(vec![("'x'", S)])
        );
        assert_eq!(
            lits("SELECT 1 /**/ + /*/ 2 */ 3"),
            Some(vec![("1", I), ("3", I)])
        );
        // Comment starts inside operator characters.
        assert_eq!(lits("SELECT 1 +-- c\n2"), Some(vec![("1", I), ("2", I)]));
        assert_eq!(lits("SELECT 1 +/* c */2"), Some(vec![("1", I), ("2", I)]));
        for sql in ["SELECT /* a /* b */ 1", "SELECT /* 1", "SELECT 1 /*"] {
            assert_eq!(lits(sql), None, "{sql}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(
            lits("SELECT 1, 0042, 1.5, 1., .5, 1e3, 1.5e3, 1.5E+3, 1e-3, .5e3, 1.e3"),
            Some(vec![
                ("1", I),
                ("0042", I),
                ("1.5", F),
                ("1.", F),
                (".5", F),
                ("1e3", F),
                ("1.5e3", F),
                ("1.5E+3", F),
                ("1e-3", F),
                (".5e3", F),
                ("1.e3", F),
            ])
        );
        // int4 overflow makes an Fconst.
        assert_eq!(
            lits("SELECT 2147483647, 2147483648, 00000000002147483647"),
            Some(vec![
                ("2147483647", I),
                ("2147483648", F),
                ("00000000002147483647", I)
            ])
        );
        // Unary minus is an operator; `..` is a token.
        assert_eq!(lits("SELECT -5, x..5"), Some(vec![("5", I), ("5", I)]));
        assert_eq!(lits("SELECT a.5"), Some(vec![(".5", F)]));
        assert_eq!(lits("SELECT 1'x'"), Some(vec![("1", I), ("'x'", S)]));
        for sql in [
            "SELECT 0x1F",
            "SELECT 0o17",
            "SELECT 0b101",
            "SELECT 1_000",
            "SELECT 1abc",
            "SELECT 1e",
            "SELECT 1e+",
            "SELECT 1ex",
            "SELECT 1.5x",
            "SELECT 1..5",
            "SELECT 1.2.3",
            "SELECT 1.5e3.",
            "SELECT 1$",
            "SELECT 1é",
        ] {
            assert_eq!(lits(sql), None, "{sql}");
        }
    }

    #[test]
    fn refused_forms() {
        for sql in [
            "SELECT U&'a'",
            "SELECT u&'a'",
            "SELECT B'101'",
            "SELECT b'101'",
            "SELECT X'1F'",
            "SELECT x'1F'",
            "SELECT 'abc",
            "SELECT 'abc''",
            "SELECT E'abc",
            "SELECT 'a\0b'",
            "SELECT 1\0",
            // Possible continuations.
            "SELECT 'a'\n'b'",
            "SELECT 'a' -- c\n'b'",
            "SELECT 'a' 'b'",
            "SELECT E'a'\n'b'",
            "SELECT 'a' /* c */\n'b'",
            "SELECT $$a$$\n'b'",
        ] {
            assert_eq!(lits(sql), None, "{sql:?}");
        }
    }

    #[test]
    fn key_keeps_everything_but_literal_values() {
        let k = |s: &str| fast_key(s).unwrap().key;
        let base = "/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 'a' AND id = 1";
        assert_eq!(
            k(base),
            k("/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 'bcd' AND id = 22")
        );
        assert_eq!(
            k(base),
            k("/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = $$x$$ AND id = 0")
        );
        for other in [
            "/* tenant_id='t2' */ SELECT * FROM t WHERE tenant_id = 'a' AND id = 1",
            "/* tenant_id='t1' */ SELECT * FROM u WHERE tenant_id = 'a' AND id = 1",
            "/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 'a' AND id = 1.0",
            "/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 1 AND id = 1",
            "/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 'a' AND id = 9999999999",
            "/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 'a' AND id  = 1",
            "/* tenant_id='t1' */ SELECT * FROM t WHERE tenant_id = 'a' AND id = $1",
        ] {
            assert_ne!(k(base), k(other), "{other}");
        }
        // Markers cannot collide with text: 0xFF is not UTF-8.
        assert!(k("SELECT 'x'").contains(&MARK));
        assert!(!k("SELECT x").contains(&MARK));
    }
}
