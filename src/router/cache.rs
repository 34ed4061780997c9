//! Two-level parse cache shared by all sessions.
//!
//! Level 1 maps the exact SQL text to its analysis. Level 2 maps the text
//! with literal values blanked out (see [`super::lexer`]) to an analysis
//! *template*, so statements that differ only in literals (ORMs inlining
//! values, pgbench `-M simple`) skip pg_query entirely; the tenant literals
//! are then read back from the new text by literal index. A template is
//! built the second time its shape is parsed (see [`Shape::Seen`]), so a
//! one-off statement pays for one parse and nothing more.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use pg_query::protobuf::{ScanToken, Token};

use crate::router::analysis::{analyze_tokens, may_have_comments, scan_tokens, SlotField};
use crate::router::lexer::{fast_key_in, FastKey, LitKind, Literal};
use crate::router::{Analysis, RouteError, RouterConfig, TenantValue, TxnControl};
use crate::workers::PerWorker;

/// Cache counters, exposed for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Level-1 plus level-2 hits.
    pub hits: u64,
    /// Full parses.
    pub misses: u64,
    /// Entries currently held (level 1 plus level 2).
    pub size: usize,
    /// Exact-text hits.
    pub l1_hits: u64,
    /// Literal-insensitive hits.
    pub l2_hits: u64,
}

/// A tenant literal of a template: statement index, the field it feeds and
/// the index of the literal (in text order) that holds it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    stmt: usize,
    field: SlotField,
    literal: usize,
}

/// A cached analysis plus which literals hold its tenant values. Without
/// slots the analysis is valid as is for every text with the same key, so
/// it is shared rather than copied.
struct Template {
    analysis: Arc<Analysis>,
    slots: Vec<Slot>,
}

/// What level 2 knows of a statement shape (a fast key).
#[derive(Clone)]
enum Shape {
    /// Parsed once; no template yet. Checking a template needs pg_query's
    /// scanner (~4 µs), which a statement whose shape never recurs should
    /// not pay, so the template is built when the shape comes back.
    Seen,
    Template(Arc<Template>),
}

struct Inner {
    cfg: Option<Arc<RouterConfig>>,
    /// Bumped whenever the levels are cleared, so work done outside the
    /// lock under an older configuration is neither served nor stored.
    generation: u64,
    l1: LruCache<String, Arc<Analysis>>,
    l2: LruCache<Vec<u8>, Shape>,
    l1_hits: u64,
}

/// Bounded, thread-safe parse cache; one instance is shared by every
/// session, so parsing cost is paid once per distinct statement shape.
pub struct ParseCache {
    /// One cache per session worker (`crate::workers`): every routed
    /// statement looks up and reorders an LRU, and one shared mutex made
    /// that a cache line bouncing between cores on each statement. A
    /// worker's lock is only contended by `stats` readers. Each worker
    /// parses a statement shape once for itself.
    shards: PerWorker<Shard>,
}

struct Shard {
    inner: Mutex<Inner>,
    // Outside the mutex so a level-2 hit needs the lock only for the lookup
    // itself; level-1 hits are counted under the lock they take anyway.
    l2_hits: AtomicU64,
    misses: AtomicU64,
}

thread_local! {
    /// The buffers of the last level-2 key built on this thread, reused by
    /// the next: a level-2 hit (the common case for texts that differ only
    /// in literals) then allocates nothing for its key.
    static SCRATCH_KEY: std::cell::Cell<FastKey> = std::cell::Cell::new(FastKey::default());
}

impl ParseCache {
    /// Creates a cache holding at most `capacity` entries per level and worker.
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        ParseCache {
            shards: PerWorker::new_with(|| Shard {
                inner: Mutex::new(Inner {
                    cfg: None,
                    generation: 0,
                    l1: LruCache::new(cap),
                    l2: LruCache::new(cap),
                    l1_hits: 0,
                }),
                l2_hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the LRU inconsistent
        // in a way that matters for correctness, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ParseCache {
    /// Cached equivalent of [`crate::router::analyze`]. Errors are not
    /// cached. A change of `cfg` empties the cache, because analyses embed
    /// table classes and tenant-column decisions.
    pub fn analyze(&self, sql: &str, cfg: &Arc<RouterConfig>) -> Result<Arc<Analysis>, RouteError> {
        let shard = self.shards.here();
        let generation = {
            let mut g = shard.lock();
            // The same Arc is the same configuration: no field-by-field
            // comparison of the table lists on every statement.
            let same = g
                .cfg
                .as_ref()
                .is_some_and(|c| Arc::ptr_eq(c, cfg) || **c == **cfg);
            if !same {
                g.l1.clear();
                g.l2.clear();
                g.generation += 1;
                g.cfg = Some(cfg.clone());
            }
            if let Some(a) = g.l1.get(sql) {
                let a = Arc::clone(a);
                g.l1_hits += 1;
                return Ok(a);
            }
            g.generation
        };

        // Lexing happens outside the lock: it is the bulk of a level-2 hit
        // and other sessions' level-1 hits should not wait for it.
        let fast = fast_key_in(sql, SCRATCH_KEY.take());
        let mut seen_before = false;
        if let Some(f) = &fast {
            let shape = {
                let mut g = shard.lock();
                if g.generation == generation {
                    g.l2.get(f.key.as_slice()).cloned()
                } else {
                    None
                }
            };
            seen_before = shape.is_some();
            if let Some(Shape::Template(t)) = shape {
                if let Some(a) = instantiate(&t, sql, &f.literals) {
                    // Not copied into level 1: texts that differ only in
                    // literals (pgbench -M simple, ORMs inlining ids) rarely
                    // repeat exactly, so copying them would cost a String and
                    // an LRU insertion per hit (measured ~0.4 µs, about as much
                    // as the rest of the hit) and evict entries that do repeat.
                    shard.l2_hits.fetch_add(1, Ordering::Relaxed);
                    SCRATCH_KEY.set(fast.unwrap_or_default());
                    return Ok(a);
                }
            }
        }

        let want_template = seen_before && fast.is_some();
        let tokens = if want_template || may_have_comments(sql) {
            scan_tokens(sql)?
        } else {
            Vec::new()
        };
        let a = Arc::new(analyze_tokens(sql, &tokens, cfg)?);
        let template = match &fast {
            Some(f) if want_template => build_template(&a, sql, &tokens, &f.literals),
            _ => None,
        };
        shard.misses.fetch_add(1, Ordering::Relaxed);
        let mut g = shard.lock();
        if g.generation == generation {
            g.l1.put(sql.to_string(), Arc::clone(&a));
            match (template, fast) {
                (Some(t), Some(f)) => {
                    g.l2.put(f.key, Shape::Template(Arc::new(t)));
                }
                (None, Some(f)) if !seen_before => {
                    g.l2.put(f.key, Shape::Seen);
                }
                // Seen again and still no template (not templatable, or the
                // lexer and the scanner disagree): nothing to add.
                _ => {}
            }
        }
        Ok(a)
    }

    /// Drops level 1 only, so tests can make a shape recur without
    /// repeating an exact text (which level 1 would answer).
    #[cfg(test)]
    pub(crate) fn forget_level1(&self) {
        for shard in self.shards.iter() {
            shard.lock().l1.clear();
        }
    }

    /// Current counters, summed over the workers' caches.
    pub fn stats(&self) -> CacheStats {
        let mut st = CacheStats::default();
        for shard in self.shards.iter() {
            {
                let g = shard.lock();
                st.size += g.l1.len() + g.l2.len();
                st.l1_hits += g.l1_hits;
            }
            st.l2_hits += shard.l2_hits.load(Ordering::Relaxed);
            st.misses += shard.misses.load(Ordering::Relaxed);
        }
        st.hits = st.l1_hits + st.l2_hits;
        st
    }
}

/// The fast lexer's kind for a pg_query literal token, or None for tokens
/// that are not literals (or literal kinds the lexer never produces).
fn literal_kind(token: i32) -> Option<Option<LitKind>> {
    if token == Token::Sconst as i32 || token == Token::Usconst as i32 {
        Some(Some(LitKind::Str))
    } else if token == Token::Iconst as i32 {
        Some(Some(LitKind::Int))
    } else if token == Token::Fconst as i32 {
        Some(Some(LitKind::Float))
    } else if token == Token::Bconst as i32 || token == Token::Xconst as i32 {
        Some(None)
    } else {
        None
    }
}

/// Whether the fast lexer found exactly the literals PostgreSQL's scanner
/// found. This is what makes the hand-written lexer safe to key on: a text
/// it misreads never gets a template.
fn same_literals(tokens: &[ScanToken], literals: &[Literal]) -> bool {
    let mut lits = literals.iter();
    for t in tokens {
        let Some(kind) = literal_kind(t.token) else {
            continue;
        };
        match lits.next() {
            Some(l)
                if Some(l.kind) == kind
                    && i64::from(l.start) == i64::from(t.start)
                    && i64::from(l.end) == i64::from(t.end) => {}
            _ => return false,
        }
    }
    lits.next().is_none()
}

/// Value of a literal as the parser would see it, or None when the form is
/// not handled here (the caller then falls back to a full parse).
fn unquote(kind: LitKind, text: &str) -> Option<String> {
    match kind {
        LitKind::Int => {
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let t = text.trim_start_matches('0');
            Some(if t.is_empty() { "0".into() } else { t.into() })
        }
        LitKind::Float => (!text.contains('_')).then(|| text.to_string()),
        LitKind::Str => unquote_string(text),
    }
}

fn unquote_string(text: &str) -> Option<String> {
    if let Some(rest) = text.strip_prefix('$') {
        let tag_end = rest.find('$')?;
        let tag = &text[..tag_end + 2];
        let inner = text.strip_prefix(tag)?.strip_suffix(tag)?;
        return Some(inner.to_string());
    }
    let quoted = match text.strip_prefix(['E', 'e']) {
        Some(q) if q.contains('\\') => return None,
        Some(q) => q,
        None => text,
    };
    let inner = quoted.strip_prefix('\'')?.strip_suffix('\'')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Inside the quotes a quote must be doubled; anything else means
            // adjacent-literal continuation, which we leave to the parser.
            if chars.next() != Some('\'') {
                return None;
            }
        }
        out.push(c);
    }
    Some(out)
}

fn literal_text<'a>(sql: &'a str, l: &Literal) -> Option<&'a str> {
    sql.get(l.start as usize..l.end as usize)
}

fn slot_value(a: &Analysis, stmt: usize, field: SlotField) -> Option<&TenantValue> {
    let s = a.statements.get(stmt)?;
    match field {
        SlotField::Filter(i) => s.tenant_filters.get(i),
        SlotField::Mention(i) => s.tenant_mentions.get(i),
    }
}

fn build_template(
    a: &Arc<Analysis>,
    sql: &str,
    tokens: &[ScanToken],
    literals: &[Literal],
) -> Option<Template> {
    if !a.templatable || !same_literals(tokens, literals) {
        return None;
    }
    // A two-phase-commit gid is a string literal that the analysis carries
    // but does not mark as a slot; a template would hand one statement's
    // gid to another.
    if a.statements.iter().any(|s| {
        matches!(
            s.txn,
            TxnControl::PrepareTransaction(_)
                | TxnControl::CommitPrepared(_)
                | TxnControl::RollbackPrepared(_)
        )
    }) {
        return None;
    }
    let mut slots = Vec::new();
    for (si, s) in a.statements.iter().enumerate() {
        for slot in &s.slots {
            let loc = u32::try_from(slot.loc).ok()?;
            let idx = literals.binary_search_by_key(&loc, |l| l.start).ok()?;
            let l = &literals[idx];
            // Only a plain literal whose text we decode exactly as the
            // parser did may be substituted later.
            let decoded = unquote(l.kind, literal_text(sql, l)?)?;
            match slot_value(a, si, slot.field)? {
                TenantValue::Literal(v) if *v == decoded => {}
                _ => return None,
            }
            slots.push(Slot {
                stmt: si,
                field: slot.field,
                literal: idx,
            });
        }
    }
    if slots.is_empty() {
        return Some(Template {
            analysis: Arc::clone(a),
            slots,
        });
    }
    // Every hit clones the template, so blank what each hit overwrites:
    // an empty String clones without allocating.
    let mut hollow = Analysis::clone(a);
    for slot in &slots {
        *slot_target(&mut hollow, slot)? = TenantValue::Literal(String::new());
    }
    for s in &mut hollow.statements {
        s.filter_tenant = None;
    }
    Some(Template {
        analysis: Arc::new(hollow),
        slots,
    })
}

fn slot_target<'a>(a: &'a mut Analysis, slot: &Slot) -> Option<&'a mut TenantValue> {
    let s = a.statements.get_mut(slot.stmt)?;
    match slot.field {
        SlotField::Filter(i) => s.tenant_filters.get_mut(i),
        SlotField::Mention(i) => s.tenant_mentions.get_mut(i),
    }
}

fn instantiate(t: &Template, sql: &str, literals: &[Literal]) -> Option<Arc<Analysis>> {
    if t.slots.is_empty() {
        return Some(Arc::clone(&t.analysis));
    }
    let mut a = Analysis::clone(&t.analysis);
    for slot in &t.slots {
        let l = literals.get(slot.literal)?;
        let v = unquote(l.kind, literal_text(sql, l)?)?;
        *slot_target(&mut a, slot)? = TenantValue::Literal(v);
        let loc = i32::try_from(l.start).ok()?;
        let s = a.statements.get_mut(slot.stmt)?;
        for sl in s.slots.iter_mut().filter(|sl| sl.field == slot.field) {
            sl.loc = loc;
        }
    }
    for s in &mut a.statements {
        s.filter_tenant = s.tenant_filters.first().cloned();
    }
    Some(Arc::new(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_forms() {
        let s = LitKind::Str;
        assert_eq!(unquote(s, "'a''b'").as_deref(), Some("a'b"));
        assert_eq!(unquote(s, "E'ab'").as_deref(), Some("ab"));
        assert_eq!(unquote(s, "E'a\\nb'"), None);
        assert_eq!(unquote(s, "$$x'y$$").as_deref(), Some("x'y"));
        assert_eq!(unquote(s, "$t$x$t$").as_deref(), Some("x"));
        assert_eq!(unquote(s, "'a'\n'b'"), None);
        assert_eq!(unquote(LitKind::Int, "0042").as_deref(), Some("42"));
        assert_eq!(unquote(LitKind::Int, "0x2A"), None);
    }

    /// The safety net itself: a literal list that differs from the
    /// scanner's in any range or kind never yields a template.
    #[test]
    fn templates_need_the_scanners_literals() {
        let lit = |start, end, kind| Literal { start, end, kind };
        let sql = "SELECT 'a'\n'b', 1, 2.5, $1";
        let tokens = scan_tokens(sql).unwrap();
        let right = [
            lit(7, 14, LitKind::Str),
            lit(16, 17, LitKind::Int),
            lit(19, 22, LitKind::Float),
        ];
        assert!(same_literals(&tokens, &right));
        let split = [
            lit(7, 10, LitKind::Str),
            lit(11, 14, LitKind::Str),
            lit(16, 17, LitKind::Int),
            lit(19, 22, LitKind::Float),
        ];
        assert!(!same_literals(&tokens, &split));
        assert!(!same_literals(&tokens, &right[..2]));
        let mut kind = right;
        kind[2].kind = LitKind::Int;
        assert!(!same_literals(&tokens, &kind));
        let mut range = right;
        range[1].end = 18;
        assert!(!same_literals(&tokens, &range));
        let bits = scan_tokens("SELECT B'1'").unwrap();
        assert!(!same_literals(&bits, &[lit(7, 11, LitKind::Str)]));

        let cfg = RouterConfig::default();
        let a = Arc::new(crate::router::analyze(sql, &cfg).unwrap());
        assert!(build_template(&a, sql, &tokens, &right).is_some());
        assert!(build_template(&a, sql, &tokens, &split).is_none());
    }
}
