//! Two-level parse cache shared by all sessions.
//!
//! Level 1 maps the exact SQL text to its analysis. Level 2 maps the token
//! stream with literal values blanked out to an analysis *template*, so
//! statements that differ only in literals (ORMs inlining values, pgbench
//! `-M simple`) skip the parser; the tenant literals are then read back from
//! the new text by token index.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use pg_query::protobuf::{ScanToken, Token};

use crate::router::analysis::{analyze_tokens, SlotField};
use crate::router::{Analysis, RouteError, RouterConfig, TenantValue};

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

/// A cached analysis plus where its tenant literals sit in the token
/// stream.
struct Template {
    analysis: Analysis,
    slots: Vec<(usize, SlotField, usize)>,
}

struct Inner {
    cfg: Option<RouterConfig>,
    l1: LruCache<String, Arc<Analysis>>,
    l2: LruCache<Vec<u8>, Arc<Template>>,
    l1_hits: u64,
    l2_hits: u64,
    misses: u64,
}

/// Bounded, thread-safe parse cache; one instance is shared by every
/// session, so parsing cost is paid once per distinct statement shape.
pub struct ParseCache {
    inner: Mutex<Inner>,
}

impl ParseCache {
    /// Creates a cache holding at most `capacity` entries per level.
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        ParseCache {
            inner: Mutex::new(Inner {
                cfg: None,
                l1: LruCache::new(cap),
                l2: LruCache::new(cap),
                l1_hits: 0,
                l2_hits: 0,
                misses: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the LRU inconsistent
        // in a way that matters for correctness, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Cached equivalent of [`crate::router::analyze`]. Errors are not
    /// cached. A change of `cfg` empties the cache, because analyses embed
    /// table classes and tenant-column decisions.
    pub fn analyze(&self, sql: &str, cfg: &RouterConfig) -> Result<Arc<Analysis>, RouteError> {
        {
            let mut g = self.lock();
            if g.cfg.as_ref() != Some(cfg) {
                g.l1.clear();
                g.l2.clear();
                g.cfg = Some(cfg.clone());
            }
            if let Some(a) = g.l1.get(sql) {
                let a = Arc::clone(a);
                g.l1_hits += 1;
                return Ok(a);
            }
        }
        let tokens =
            pg_query::scan_tokens(sql).map_err(|e| RouteError::new("42601", e.to_string()))?;
        let key = l2_key(sql, &tokens);
        let template = self.lock().l2.get(&key).cloned();
        if let Some(t) = template {
            if let Some(a) = instantiate(&t, sql, &tokens) {
                let a = Arc::new(a);
                let mut g = self.lock();
                g.l1.put(sql.to_string(), Arc::clone(&a));
                g.l2_hits += 1;
                return Ok(a);
            }
        }
        let analysis = analyze_tokens(sql, &tokens, cfg)?;
        let template = build_template(&analysis, sql, &tokens);
        let a = Arc::new(analysis);
        let mut g = self.lock();
        g.misses += 1;
        g.l1.put(sql.to_string(), Arc::clone(&a));
        if let Some(t) = template {
            g.l2.put(key, Arc::new(t));
        }
        Ok(a)
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let g = self.lock();
        CacheStats {
            hits: g.l1_hits + g.l2_hits,
            misses: g.misses,
            size: g.l1.len() + g.l2.len(),
            l1_hits: g.l1_hits,
            l2_hits: g.l2_hits,
        }
    }
}

fn is_literal(token: i32) -> bool {
    [
        Token::Sconst,
        Token::Usconst,
        Token::Iconst,
        Token::Fconst,
        Token::Bconst,
        Token::Xconst,
    ]
    .iter()
    .any(|t| *t as i32 == token)
}

/// Token kinds plus the text of every non-literal token (comments included,
/// since tenant hints live there).
fn l2_key(sql: &str, tokens: &[ScanToken]) -> Vec<u8> {
    let mut key = Vec::with_capacity(sql.len() + tokens.len() * 3);
    for t in tokens {
        key.extend_from_slice(&(t.token as u16).to_le_bytes());
        if !is_literal(t.token) {
            key.extend_from_slice(&sql.as_bytes()[t.start as usize..t.end as usize]);
        }
        // 0xFF never occurs in UTF-8, so it cannot be confused with text.
        key.push(0xFF);
    }
    key
}

/// Value of a literal token as the parser would see it, or None when the
/// form is not handled here (the caller then falls back to a full parse).
fn unquote(token: i32, text: &str) -> Option<String> {
    if token == Token::Iconst as i32 {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let t = text.trim_start_matches('0');
        return Some(if t.is_empty() { "0".into() } else { t.into() });
    }
    if token == Token::Fconst as i32 {
        return (!text.contains('_')).then(|| text.to_string());
    }
    if token != Token::Sconst as i32 {
        return None;
    }
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

fn slot_value(a: &Analysis, stmt: usize, field: SlotField) -> Option<&TenantValue> {
    let s = a.statements.get(stmt)?;
    match field {
        SlotField::Filter(i) => s.tenant_filters.get(i),
        SlotField::Mention(i) => s.tenant_mentions.get(i),
    }
}

fn build_template(a: &Analysis, sql: &str, tokens: &[ScanToken]) -> Option<Template> {
    if !a.templatable {
        return None;
    }
    let mut slots = Vec::new();
    for (si, s) in a.statements.iter().enumerate() {
        for slot in &s.slots {
            let idx = tokens.binary_search_by_key(&slot.loc, |t| t.start).ok()?;
            let t = &tokens[idx];
            // Only a plain literal token whose text we decode exactly as the
            // parser did may be substituted later.
            let decoded = unquote(t.token, &sql[t.start as usize..t.end as usize])?;
            match slot_value(a, si, slot.field)? {
                TenantValue::Literal(v) if *v == decoded => {}
                _ => return None,
            }
            slots.push((si, slot.field, idx));
        }
    }
    Some(Template {
        analysis: a.clone(),
        slots,
    })
}

fn instantiate(t: &Template, sql: &str, tokens: &[ScanToken]) -> Option<Analysis> {
    let mut a = t.analysis.clone();
    for &(si, field, idx) in &t.slots {
        let tok = tokens.get(idx)?;
        let v = unquote(tok.token, sql.get(tok.start as usize..tok.end as usize)?)?;
        let s = a.statements.get_mut(si)?;
        let target = match field {
            SlotField::Filter(i) => s.tenant_filters.get_mut(i)?,
            SlotField::Mention(i) => s.tenant_mentions.get_mut(i)?,
        };
        *target = TenantValue::Literal(v);
        for slot in s.slots.iter_mut().filter(|sl| sl.field == field) {
            slot.loc = tok.start;
        }
    }
    for s in &mut a.statements {
        s.filter_tenant = s.tenant_filters.first().cloned();
    }
    Some(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_forms() {
        let s = Token::Sconst as i32;
        assert_eq!(unquote(s, "'a''b'").as_deref(), Some("a'b"));
        assert_eq!(unquote(s, "E'ab'").as_deref(), Some("ab"));
        assert_eq!(unquote(s, "E'a\\nb'"), None);
        assert_eq!(unquote(s, "$$x'y$$").as_deref(), Some("x'y"));
        assert_eq!(unquote(s, "$t$x$t$").as_deref(), Some("x"));
        assert_eq!(unquote(s, "'a'\n'b'"), None);
        assert_eq!(unquote(Token::Iconst as i32, "0042").as_deref(), Some("42"));
        assert_eq!(unquote(Token::Iconst as i32, "0x2A"), None);
    }
}
