//! Statement analysis: turns SQL text into value-agnostic routing facts by
//! walking pg_query's parse tree (the real PostgreSQL grammar).

use std::collections::HashSet;

use pg_query::protobuf::{self, a_const::Val, RangeVar, ScanToken, Token};
use pg_query::{Node, NodeEnum, NodeRef};

use crate::router::classify::classify_table;
use crate::router::{
    Analysis, RouteError, RouterConfig, SessionEffect, StatementInfo, TableRef, TenantValue,
    TxnControl,
};

/// Which tenant value a literal token feeds, so a level-2 cache hit can
/// substitute the new literal without re-parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotField {
    Filter(usize),
    Mention(usize),
}

/// A tenant literal and its byte offset in the SQL text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LiteralSlot {
    pub(crate) field: SlotField,
    pub(crate) loc: i32,
}

/// Parses and analyses `sql`; the uncached entry point, public so tools and
/// tests can bypass the cache.
pub fn analyze(sql: &str, cfg: &RouterConfig) -> Result<Analysis, RouteError> {
    let tokens = if may_have_comments(sql) {
        scan_tokens(sql)?
    } else {
        Vec::new()
    };
    analyze_tokens(sql, &tokens, cfg)
}

/// False when `sql` cannot contain a comment (neither `--` nor `/*` occurs
/// anywhere in it): the analysis then needs no scanner tokens, which saves
/// a scan (~4 µs) on a parse-cache miss.
pub(crate) fn may_have_comments(sql: &str) -> bool {
    sql.contains("--") || sql.contains("/*")
}

/// pg_query's scanner, guarded: on an empty or whitespace-only text
/// (an empty simple Query is valid) pg_query 18.1 builds a slice from a null
/// pointer, which aborts debug builds; such a text has no tokens anyway.
pub(crate) fn scan_tokens(sql: &str) -> Result<Vec<ScanToken>, RouteError> {
    if sql
        .bytes()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0B | 0x0C))
    {
        return Ok(Vec::new());
    }
    pg_query::scan_tokens(sql).map_err(syntax_error)
}

/// The error PostgreSQL's Parse message reports from the grammar alone,
/// before it looks at tables or names: a syntax error, or more than one
/// statement (both 42601). `None` when the text parses (or the parser fails
/// otherwise, which the server then judges).
pub fn grammar_error(sql: &str) -> Option<RouteError> {
    match pg_query::parse_protobuf(sql, 0) {
        Ok(tree) if tree.stmts.len() > 1 => Some(RouteError::new(
            "42601",
            "cannot insert multiple commands into a prepared statement",
        )),
        Ok(_) => None,
        Err(e @ (pg_query::Error::Parse(_) | pg_query::Error::Scan(_))) => Some(syntax_error(e)),
        Err(_) => None,
    }
}

fn syntax_error(e: pg_query::Error) -> RouteError {
    let msg = match e {
        pg_query::Error::Parse(m) | pg_query::Error::Scan(m) => m,
        other => other.to_string(),
    };
    RouteError::new("42601", msg)
}

/// Analysis when the caller already scanned the SQL (the cache needs the
/// tokens to check its level-2 templates), avoiding a second scan. The
/// tokens are only read for comments (tenant hints): `tokens` may be empty
/// when [`may_have_comments`] is false.
pub(crate) fn analyze_tokens(
    sql: &str,
    tokens: &[ScanToken],
    cfg: &RouterConfig,
) -> Result<Analysis, RouteError> {
    let parsed = pg_query::parse_protobuf(sql, 0).map_err(syntax_error)?;
    let stmts = &parsed.stmts;

    // Statement end offsets, so comments can be attached to a statement:
    // PostgreSQL's statement ranges exclude leading comments, so a comment
    // belongs to the first statement ending after it (or the last one).
    let ends: Vec<usize> = stmts
        .iter()
        .map(|s| {
            if s.stmt_len == 0 {
                sql.len()
            } else {
                (s.stmt_location + s.stmt_len) as usize
            }
        })
        .collect();
    let mut hints: Vec<Vec<String>> = vec![Vec::new(); stmts.len()];
    if !stmts.is_empty() {
        for t in tokens {
            if t.token == Token::CComment as i32 || t.token == Token::SqlComment as i32 {
                let start = t.start as usize;
                let idx = ends
                    .iter()
                    .position(|&e| e > start)
                    .unwrap_or(stmts.len() - 1);
                let text = &sql[start..t.end as usize];
                hints[idx].extend(hints_in_comment(text, &cfg.tenant_column));
            }
        }
    }

    let mut templatable = true;
    let mut statements = Vec::with_capacity(stmts.len());
    for (raw, hint_values) in stmts.iter().zip(hints) {
        let Some(root) = raw.stmt.as_ref().and_then(|n| n.node.as_ref()) else {
            continue;
        };
        let mut distinct: Vec<String> = Vec::new();
        for h in hint_values {
            if !distinct.contains(&h) {
                distinct.push(h);
            }
        }
        if distinct.len() > 1 {
            return Err(RouteError::new(
                "0A000",
                format!(
                    "statement spans several tenants: comment hints name {}",
                    quote_list(&distinct)
                ),
            )
            .with_hint("name a single tenant per statement"));
        }
        let mut w = Walker::new(cfg);
        w.walk_root(root, true);
        if let Some(e) = w.error.take() {
            return Err(e);
        }
        let filters = top_filters(root, &cfg.tenant_column, false);
        templatable &= w.templatable;
        statements.push(w.finish(distinct.pop(), filters));
    }
    Ok(Analysis {
        statements,
        templatable,
    })
}

fn quote_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Extracts `key=value` / `key='value'` pairs from a comment. This is not
/// SQL parsing: the comment body is free text by definition.
pub(crate) fn hints_in_comment(text: &str, key: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let key = key.to_ascii_lowercase();
    let mut out = Vec::new();
    let mut from = 0;
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80;
    while let Some(pos) = lower[from..].find(&key) {
        let start = from + pos;
        let mut j = start + key.len();
        from = j;
        if start > 0 && is_ident(bytes[start - 1]) {
            continue;
        }
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() || !(bytes[j] == b'=' || bytes[j] == b':') {
            continue;
        }
        j += 1;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() {
            continue;
        }
        let q = bytes[j];
        let value = if q == b'\'' || q == b'"' {
            let mut v = String::new();
            let mut k = j + 1;
            let mut closed = false;
            while k < bytes.len() {
                if bytes[k] == q {
                    if k + 1 < bytes.len() && bytes[k + 1] == q {
                        v.push(q as char);
                        k += 2;
                        continue;
                    }
                    closed = true;
                    break;
                }
                let ch = text[k..].chars().next().unwrap_or('\0');
                v.push(ch);
                k += ch.len_utf8();
            }
            if !closed {
                continue;
            }
            from = k + 1;
            v
        } else {
            let end = text[j..]
                .find(|c: char| !(c.is_alphanumeric() || "-_.:".contains(c)))
                .map_or(text.len(), |e| j + e);
            from = end;
            text[j..end].to_string()
        };
        if !value.is_empty() {
            out.push(value);
        }
    }
    out
}

fn str_of(n: &Node) -> Option<&str> {
    match n.node.as_ref()? {
        NodeEnum::String(s) => Some(&s.sval),
        _ => None,
    }
}

fn op_name(name: &[Node]) -> &str {
    name.last().and_then(str_of).unwrap_or("")
}

fn is_tenant_col(n: &Node, col: &str) -> bool {
    match n.node.as_ref() {
        Some(NodeEnum::ColumnRef(c)) => c.fields.last().and_then(str_of) == Some(col),
        _ => false,
    }
}

type Valued = (TenantValue, Option<i32>);

/// A literal or parameter usable as a tenant id. Params inside PREPARE or a
/// DO body are not this message's bind parameters, so they are dropped.
fn value_of(n: &Node, drop_params: bool) -> Option<Valued> {
    match n.node.as_ref()? {
        NodeEnum::AConst(c) if !c.isnull => {
            let text = match c.val.as_ref()? {
                Val::Sval(s) => s.sval.clone(),
                Val::Ival(i) => i.ival.to_string(),
                Val::Fval(f) => f.fval.clone(),
                _ => return None,
            };
            Some((TenantValue::Literal(text), Some(c.location)))
        }
        NodeEnum::ParamRef(p) if !drop_params => u16::try_from(p.number)
            .ok()
            .map(|n| (TenantValue::Param(n), None)),
        NodeEnum::TypeCast(t) => value_of(t.arg.as_deref()?, drop_params),
        _ => None,
    }
}

fn strip_cast(n: &Node) -> &Node {
    match n.node.as_ref() {
        Some(NodeEnum::TypeCast(t)) => t.arg.as_deref().map_or(n, strip_cast),
        _ => n,
    }
}

/// Outcome of looking at one comparison for the tenant column.
enum TenantCmp {
    NotTenant,
    /// Equality / IN / = ANY(array literal): these values.
    Values(Vec<Valued>),
    /// A comparison that can match several tenants whatever the values.
    Spans,
}

fn tenant_cmp(a: &protobuf::AExpr, col: &str, drop_params: bool) -> TenantCmp {
    let (Some(l), Some(r)) = (a.lexpr.as_deref(), a.rexpr.as_deref()) else {
        return TenantCmp::NotTenant;
    };
    let op = op_name(&a.name);
    let kind = protobuf::AExprKind::try_from(a.kind).unwrap_or(protobuf::AExprKind::Undefined);
    let list_values = |items: &[Node]| -> Option<Vec<Valued>> {
        items.iter().map(|i| value_of(i, drop_params)).collect()
    };
    match kind {
        protobuf::AExprKind::AexprOp => {
            let (colside, valside) = if is_tenant_col(l, col) {
                (true, r)
            } else if is_tenant_col(r, col) {
                (true, l)
            } else {
                (false, r)
            };
            if !colside {
                return TenantCmp::NotTenant;
            }
            let value = value_of(valside, drop_params);
            match (op, value) {
                ("=", Some(v)) => TenantCmp::Values(vec![v]),
                ("<>", Some(_)) => TenantCmp::Spans,
                _ => TenantCmp::NotTenant,
            }
        }
        protobuf::AExprKind::AexprIn if is_tenant_col(l, col) => {
            let Some(NodeEnum::List(list)) = r.node.as_ref() else {
                return TenantCmp::NotTenant;
            };
            match (op, list_values(&list.items)) {
                ("=", Some(vs)) => TenantCmp::Values(vs),
                ("<>", Some(_)) => TenantCmp::Spans,
                _ => TenantCmp::NotTenant,
            }
        }
        protobuf::AExprKind::AexprOpAny if op == "=" && is_tenant_col(l, col) => {
            match strip_cast(r).node.as_ref() {
                Some(NodeEnum::AArrayExpr(arr)) => match list_values(&arr.elements) {
                    Some(vs) => TenantCmp::Values(vs),
                    None => TenantCmp::Spans,
                },
                _ => TenantCmp::Spans,
            }
        }
        _ => TenantCmp::NotTenant,
    }
}

/// Tenant values constraining the whole statement: top-level AND conjuncts
/// of WHERE (every arm of a set operation must have one) or INSERT VALUES.
fn top_filters(root: &NodeEnum, col: &str, drop_params: bool) -> Vec<Valued> {
    match root {
        NodeEnum::SelectStmt(s) => select_filters(s, col, drop_params).unwrap_or_default(),
        NodeEnum::UpdateStmt(s) => where_filters(s.where_clause.as_deref(), col, drop_params),
        NodeEnum::DeleteStmt(s) => where_filters(s.where_clause.as_deref(), col, drop_params),
        NodeEnum::InsertStmt(s) => insert_values(s, col, drop_params)
            .filter(|(_, complete)| *complete)
            .map(|(v, _)| v)
            .unwrap_or_default(),
        NodeEnum::ExplainStmt(s) => inner_filters(s.query.as_deref(), col, drop_params),
        NodeEnum::PrepareStmt(s) => inner_filters(s.query.as_deref(), col, true),
        NodeEnum::DeclareCursorStmt(s) => inner_filters(s.query.as_deref(), col, drop_params),
        NodeEnum::CreateTableAsStmt(s) => inner_filters(s.query.as_deref(), col, drop_params),
        NodeEnum::CopyStmt(s) => inner_filters(s.query.as_deref(), col, drop_params),
        _ => Vec::new(),
    }
}

fn inner_filters(n: Option<&Node>, col: &str, drop_params: bool) -> Vec<Valued> {
    n.and_then(|n| n.node.as_ref())
        .map(|e| top_filters(e, col, drop_params))
        .unwrap_or_default()
}

fn select_filters(s: &protobuf::SelectStmt, col: &str, drop_params: bool) -> Option<Vec<Valued>> {
    if s.op != protobuf::SetOperation::SetopNone as i32 {
        let mut l = select_filters(s.larg.as_deref()?, col, drop_params)?;
        l.extend(select_filters(s.rarg.as_deref()?, col, drop_params)?);
        return Some(l);
    }
    let v = where_filters(s.where_clause.as_deref(), col, drop_params);
    (!v.is_empty()).then_some(v)
}

fn where_filters(w: Option<&Node>, col: &str, drop_params: bool) -> Vec<Valued> {
    let mut out = Vec::new();
    let mut stack: Vec<&Node> = w.into_iter().collect();
    while let Some(n) = stack.pop() {
        match n.node.as_ref() {
            Some(NodeEnum::BoolExpr(b)) if b.boolop == protobuf::BoolExprType::AndExpr as i32 => {
                stack.extend(b.args.iter().rev());
            }
            Some(NodeEnum::AExpr(a)) => {
                if let TenantCmp::Values(vs) = tenant_cmp(a, col, drop_params) {
                    out.extend(vs);
                }
            }
            _ => {}
        }
    }
    out
}

/// Tenant column values of an `INSERT ... VALUES`; `complete` is false when
/// some row has no usable value there (DEFAULT, an expression).
fn insert_values(
    s: &protobuf::InsertStmt,
    col: &str,
    drop_params: bool,
) -> Option<(Vec<Valued>, bool)> {
    let idx = s.cols.iter().position(|c| match c.node.as_ref() {
        Some(NodeEnum::ResTarget(r)) => r.name == col && r.indirection.is_empty(),
        _ => false,
    })?;
    let Some(NodeEnum::SelectStmt(sel)) = s.select_stmt.as_deref().and_then(|n| n.node.as_ref())
    else {
        return None;
    };
    if sel.values_lists.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut complete = true;
    for row in &sel.values_lists {
        let Some(NodeEnum::List(l)) = row.node.as_ref() else {
            complete = false;
            continue;
        };
        match l.items.get(idx).and_then(|v| value_of(v, drop_params)) {
            Some(v) => out.push(v),
            None => complete = false,
        }
    }
    Some((out, complete))
}

/// Recursive tree walker. pg_query has no generic child iterator, so each
/// node kind that can contain relations is handled explicitly, and
/// pg_query's own `nodes()` traversal is used as a safety net afterwards.
struct Walker<'a> {
    cfg: &'a RouterConfig,
    scopes: Vec<Vec<String>>,
    tables: Vec<TableRef>,
    seen: HashSet<i32>,
    mentions: Vec<Valued>,
    under_or: bool,
    neg_depth: u32,
    effects: Vec<SessionEffect>,
    resets: Option<String>,
    txn: TxnControl,
    templatable: bool,
    drop_params: bool,
    unknown: bool,
    assume_tenant: bool,
    error: Option<RouteError>,
}

impl<'a> Walker<'a> {
    fn new(cfg: &'a RouterConfig) -> Self {
        Walker {
            cfg,
            scopes: Vec::new(),
            tables: Vec::new(),
            seen: HashSet::new(),
            mentions: Vec::new(),
            under_or: false,
            neg_depth: 0,
            effects: Vec::new(),
            resets: None,
            txn: TxnControl::None,
            templatable: true,
            drop_params: false,
            unknown: false,
            assume_tenant: false,
            error: None,
        }
    }

    fn fail(&mut self, e: RouteError) {
        if self.error.is_none() {
            self.error = Some(e);
        }
    }

    fn finish(self, hint: Option<String>, filters: Vec<Valued>) -> StatementInfo {
        let mut tables: Vec<TableRef> = Vec::with_capacity(self.tables.len());
        for t in self.tables {
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        let mut slots = Vec::new();
        for (i, (_, loc)) in filters.iter().enumerate() {
            if let Some(loc) = loc {
                slots.push(LiteralSlot {
                    field: SlotField::Filter(i),
                    loc: *loc,
                });
            }
        }
        for (i, (_, loc)) in self.mentions.iter().enumerate() {
            if let Some(loc) = loc {
                slots.push(LiteralSlot {
                    field: SlotField::Mention(i),
                    loc: *loc,
                });
            }
        }
        let tenant_filters: Vec<TenantValue> = filters.into_iter().map(|(v, _)| v).collect();
        StatementInfo {
            tables,
            hint_tenant: hint,
            filter_tenant: tenant_filters.first().cloned(),
            tenant_filters,
            tenant_mentions: self.mentions.into_iter().map(|(v, _)| v).collect(),
            tenant_under_or: self.under_or,
            effects: self.effects,
            resets: self.resets,
            txn: self.txn,
            unknown_tables: self.unknown,
            assume_tenant_tables: self.assume_tenant,
            slots,
        }
    }

    /// Walks a statement root, then cross-checks with pg_query's traversal
    /// so a relation in a node kind this walker does not know is still
    /// counted (as a table: failing closed).
    fn walk_root(&mut self, root: &NodeEnum, top: bool) {
        if top && !is_known_statement(root) {
            self.unknown = true;
        }
        let outer_seen = std::mem::take(&mut self.seen);
        self.node_enum(root);
        for (n, _, _, _) in root.nodes() {
            if let NodeRef::RangeVar(rv) = n {
                if !self.seen.contains(&rv.location) {
                    self.add_table(rv, false);
                }
            }
        }
        self.seen = outer_seen;
    }

    fn is_cte(&self, name: &str) -> bool {
        self.scopes.iter().any(|s| s.iter().any(|c| c == name))
    }

    fn add_table(&mut self, rv: &RangeVar, may_be_cte: bool) {
        self.seen.insert(rv.location);
        if may_be_cte && rv.schemaname.is_empty() && self.is_cte(&rv.relname) {
            return;
        }
        let schema = (!rv.schemaname.is_empty()).then(|| rv.schemaname.clone());
        self.add_name(schema, rv.relname.clone());
    }

    fn add_name(&mut self, schema: Option<String>, name: String) {
        let class = classify_table(schema.as_deref(), &name, self.cfg);
        self.tables.push(TableRef {
            schema,
            name,
            class,
        });
    }

    /// Adds a table named by a list of String nodes (DROP, COMMENT);
    /// `drop_last` skips a trailing column/trigger/rule name.
    fn add_name_list(&mut self, n: &Node, drop_last: bool) {
        let Some(NodeEnum::List(l)) = n.node.as_ref() else {
            self.unknown = true;
            return;
        };
        let mut parts: Vec<&str> = l.items.iter().filter_map(str_of).collect();
        if drop_last {
            parts.pop();
        }
        match parts.as_slice() {
            [name] => self.add_name(None, name.to_string()),
            [.., schema, name] => self.add_name(Some(schema.to_string()), name.to_string()),
            [] => self.unknown = true,
        }
    }

    fn rel(&mut self, rv: &Option<RangeVar>) {
        match rv {
            Some(rv) => self.add_table(rv, false),
            None => self.unknown = true,
        }
    }

    fn node(&mut self, n: &Node) {
        if let Some(e) = n.node.as_ref() {
            self.node_enum(e);
        }
    }

    fn nodes(&mut self, ns: &[Node]) {
        for n in ns {
            self.node(n);
        }
    }

    fn opt(&mut self, n: &Option<Box<Node>>) {
        if let Some(n) = n {
            self.node(n);
        }
    }

    fn mention(&mut self, vs: Vec<Valued>) {
        if self.neg_depth > 0 {
            self.under_or = true;
        }
        self.mentions.extend(vs);
    }

    /// Pushes a CTE scope; returns whether one was pushed so the caller pops
    /// it after walking the statement body.
    fn with(&mut self, w: &Option<protobuf::WithClause>) -> bool {
        let Some(w) = w else { return false };
        let ctes: Vec<&protobuf::CommonTableExpr> = w
            .ctes
            .iter()
            .filter_map(|c| match c.node.as_ref() {
                Some(NodeEnum::CommonTableExpr(c)) => Some(c.as_ref()),
                _ => None,
            })
            .collect();
        if w.recursive {
            self.scopes
                .push(ctes.iter().map(|c| c.ctename.clone()).collect());
            for c in &ctes {
                self.opt(&c.ctequery);
            }
        } else {
            // A non-recursive CTE sees only earlier siblings, so
            // `WITH accounts AS (SELECT * FROM accounts)` still reads the
            // real table.
            self.scopes.push(Vec::new());
            for c in &ctes {
                self.opt(&c.ctequery);
                if let Some(s) = self.scopes.last_mut() {
                    s.push(c.ctename.clone());
                }
            }
        }
        true
    }

    fn pop(&mut self, pushed: bool) {
        if pushed {
            self.scopes.pop();
        }
    }

    fn returning(&mut self, r: &Option<protobuf::ReturningClause>) {
        if let Some(r) = r {
            self.nodes(&r.exprs);
        }
    }

    fn select(&mut self, s: &protobuf::SelectStmt) {
        let pushed = self.with(&s.with_clause);
        if let Some(l) = &s.larg {
            self.select(l);
        }
        if let Some(r) = &s.rarg {
            self.select(r);
        }
        self.nodes(&s.from_clause);
        self.nodes(&s.target_list);
        self.opt(&s.where_clause);
        self.nodes(&s.group_clause);
        self.opt(&s.having_clause);
        self.nodes(&s.window_clause);
        self.nodes(&s.values_lists);
        self.nodes(&s.sort_clause);
        self.nodes(&s.distinct_clause);
        self.opt(&s.limit_offset);
        self.opt(&s.limit_count);
        for lc in &s.locking_clause {
            // FOR UPDATE OF names FROM items, not new relations.
            if let Some(NodeEnum::LockingClause(lc)) = lc.node.as_ref() {
                for r in &lc.locked_rels {
                    if let Some(NodeEnum::RangeVar(rv)) = r.node.as_ref() {
                        self.seen.insert(rv.location);
                    }
                }
            }
        }
        if let Some(into) = &s.into_clause {
            self.temp_rel(&into.rel);
            self.rel(&into.rel);
        }
        self.pop(pushed);
    }

    /// A temporary relation being created (`TEMP`, or in `pg_temp`): it
    /// would outlive the transaction on the server connection.
    fn temp_rel(&mut self, r: &Option<protobuf::RangeVar>) {
        if r.as_ref().is_some_and(|r| {
            r.relpersistence == "t" || r.schemaname.eq_ignore_ascii_case("pg_temp")
        }) {
            self.effects.push(SessionEffect::Untracked);
        }
    }

    fn insert(&mut self, s: &protobuf::InsertStmt) {
        let pushed = self.with(&s.with_clause);
        self.rel(&s.relation);
        if let Some((vs, _)) = insert_values(s, &self.cfg.tenant_column, self.drop_params) {
            self.mention(vs);
        }
        self.opt(&s.select_stmt);
        if let Some(oc) = &s.on_conflict_clause {
            if let Some(inf) = &oc.infer {
                self.nodes(&inf.index_elems);
                self.opt(&inf.where_clause);
            }
            self.nodes(&oc.target_list);
            self.opt(&oc.where_clause);
        }
        self.returning(&s.returning_clause);
        self.pop(pushed);
    }

    /// `UPDATE ... SET tenant_id = 'b'` moves rows to tenant b: a mention.
    fn set_targets(&mut self, targets: &[Node]) {
        for t in targets {
            if let Some(NodeEnum::ResTarget(r)) = t.node.as_ref() {
                if r.name == self.cfg.tenant_column {
                    if let Some(v) = r.val.as_deref().and_then(|v| value_of(v, self.drop_params)) {
                        self.mention(vec![v]);
                    }
                }
            }
            self.node(t);
        }
    }

    fn func_call(&mut self, f: &protobuf::FuncCall) {
        let name = f.funcname.last().and_then(str_of).unwrap_or("");
        if name.eq_ignore_ascii_case("set_config") {
            self.templatable = false;
            self.set_config(f);
        }
        self.nodes(&f.args);
        self.nodes(&f.agg_order);
        self.opt(&f.agg_filter);
        if let Some(w) = &f.over {
            self.nodes(&w.partition_clause);
            self.nodes(&w.order_clause);
        }
    }

    fn set_config(&mut self, f: &protobuf::FuncCall) {
        let setting = &self.cfg.tenant_setting;
        let name = f.args.first().and_then(|a| value_of(a, true));
        match name {
            Some((TenantValue::Literal(n), _)) if !n.eq_ignore_ascii_case(setting) => {
                let local = f.args.get(2).is_some_and(|a| {
                    matches!(
                        strip_cast(a).node.as_ref(),
                        Some(NodeEnum::AConst(c)) if matches!(
                            c.val.as_ref(),
                            Some(Val::Boolval(b)) if b.boolval
                        ) || matches!(
                            c.val.as_ref(),
                            Some(Val::Sval(s)) if parse_bool(&s.sval) == Some(true)
                        )
                    )
                });
                self.effects.push(if local {
                    SessionEffect::LocalSetting
                } else {
                    SessionEffect::Other
                });
                return;
            }
            Some(_) if f.args.len() == 3 => {}
            _ => {
                self.fail(
                    RouteError::new(
                        "0A000",
                        "set_config() with a non-literal setting name cannot be routed",
                    )
                    .with_hint(format!(
                        "call set_config('{setting}', ...) with literal names"
                    )),
                );
                return;
            }
        }
        let value = value_of(&f.args[1], self.drop_params).map(|(v, _)| v);
        let local = match strip_cast(&f.args[2]).node.as_ref() {
            Some(NodeEnum::AConst(c)) => match c.val.as_ref() {
                Some(Val::Boolval(b)) => Some(b.boolval),
                Some(Val::Sval(s)) => parse_bool(&s.sval),
                Some(Val::Ival(i)) => Some(i.ival != 0),
                _ => None,
            },
            _ => None,
        };
        match (value, local) {
            (Some(TenantValue::Literal(v)), Some(_)) if v.is_empty() => {
                self.effects.push(SessionEffect::ResetTenant)
            }
            (Some(value), Some(local)) => {
                self.effects.push(SessionEffect::SetTenant { value, local })
            }
            _ => self.fail(RouteError::new(
                "0A000",
                format!("set_config('{setting}', ...) needs a literal or parameter value and a literal is_local"),
            )),
        }
    }

    fn set_stmt(&mut self, s: &protobuf::VariableSetStmt) {
        use protobuf::VariableSetKind as K;
        self.templatable = false;
        let ours = s.name.eq_ignore_ascii_case(&self.cfg.tenant_setting);
        let kind = K::try_from(s.kind).unwrap_or(K::Undefined);
        let effect = match kind {
            K::VarResetAll => SessionEffect::ResetAll,
            K::VarReset | K::VarSetDefault if ours => SessionEffect::ResetTenant,
            K::VarSetValue if ours => {
                let v = match s.args.as_slice() {
                    [a] => value_of(a, true).map(|(v, _)| v),
                    _ => None,
                };
                match v {
                    Some(TenantValue::Literal(v)) if v.is_empty() => SessionEffect::ResetTenant,
                    Some(value) => SessionEffect::SetTenant {
                        value,
                        local: s.is_local,
                    },
                    None => {
                        self.fail(RouteError::new(
                            "22023",
                            format!("{} must be set to a single literal value", s.name),
                        ));
                        return;
                    }
                }
            }
            _ if s.is_local => SessionEffect::LocalSetting,
            K::VarReset | K::VarSetDefault => {
                self.resets = Some(s.name.to_ascii_lowercase());
                SessionEffect::Other
            }
            _ => SessionEffect::Other,
        };
        self.effects.push(effect);
    }

    fn txn(&mut self, t: &protobuf::TransactionStmt) {
        use protobuf::TransactionStmtKind as K;
        let name = t.savepoint_name.clone();
        self.txn = match K::try_from(t.kind).unwrap_or(K::Undefined) {
            K::TransStmtBegin | K::TransStmtStart => TxnControl::Begin,
            K::TransStmtCommit => TxnControl::Commit,
            K::TransStmtRollback => TxnControl::Rollback,
            K::TransStmtSavepoint => TxnControl::Savepoint(name),
            K::TransStmtRelease => TxnControl::ReleaseSavepoint(name),
            K::TransStmtRollbackTo => TxnControl::RollbackToSavepoint(name),
            K::TransStmtPrepare => TxnControl::PrepareTransaction(t.gid.clone()),
            K::TransStmtCommitPrepared => TxnControl::CommitPrepared(t.gid.clone()),
            K::TransStmtRollbackPrepared => TxnControl::RollbackPrepared(t.gid.clone()),
            K::Undefined => TxnControl::None,
        };
    }

    /// DO bodies are PL/pgSQL text: parse them with the PL/pgSQL parser and
    /// analyse every embedded SQL expression. Anything that cannot be seen
    /// statically (dynamic EXECUTE, other languages, parse failures) is
    /// treated as touching tenant tables, never as table-less.
    fn do_block(&mut self, d: &protobuf::DoStmt) {
        self.templatable = false;
        let mut body = None;
        let mut language = "plpgsql".to_string();
        for a in &d.args {
            if let Some(NodeEnum::DefElem(de)) = a.node.as_ref() {
                let val = de.arg.as_deref().and_then(str_of).map(str::to_string);
                match de.defname.as_str() {
                    "as" => body = val,
                    "language" => language = val.unwrap_or_default().to_ascii_lowercase(),
                    _ => {}
                }
            }
        }
        let (Some(body), "plpgsql") = (body, language.as_str()) else {
            self.assume_tenant = true;
            self.unknown = true;
            return;
        };
        let mut tag = "$pgtenant$".to_string();
        while body.contains(&tag) {
            tag.insert(1, 'x');
        }
        let func = format!(
            "CREATE FUNCTION pg_temp.pgtenant_do() RETURNS void LANGUAGE plpgsql AS {tag}{body}{tag}"
        );
        let Ok(json) = pg_query::parse_plpgsql(&func) else {
            self.assume_tenant = true;
            self.unknown = true;
            return;
        };
        let mut queries = Vec::new();
        let mut dynamic = false;
        collect_plpgsql(&json, &mut queries, &mut dynamic);
        if dynamic {
            self.assume_tenant = true;
            self.unknown = true;
        }
        let prev = std::mem::replace(&mut self.drop_params, true);
        for (q, mode) in queries {
            match pg_query::parse_protobuf(&q, mode) {
                Ok(r) => {
                    for s in &r.stmts {
                        if let Some(e) = s.stmt.as_ref().and_then(|n| n.node.as_ref()) {
                            let saved = std::mem::take(&mut self.scopes);
                            self.walk_root(e, false);
                            self.scopes = saved;
                        }
                    }
                }
                Err(_) => {
                    self.assume_tenant = true;
                    self.unknown = true;
                }
            }
        }
        self.drop_params = prev;
    }

    fn drop_stmt(&mut self, s: &protobuf::DropStmt) {
        use protobuf::ObjectType as O;
        let ty = O::try_from(s.remove_type).unwrap_or(O::Undefined);
        let drop_last = match ty {
            O::ObjectTable
            | O::ObjectView
            | O::ObjectMatview
            | O::ObjectForeignTable
            | O::ObjectSequence
            | O::ObjectIndex => false,
            O::ObjectTrigger | O::ObjectRule | O::ObjectPolicy => true,
            _ => {
                self.unknown = true;
                return;
            }
        };
        for o in &s.objects {
            self.add_name_list(o, drop_last);
        }
    }

    fn comment(&mut self, s: &protobuf::CommentStmt) {
        use protobuf::ObjectType as O;
        let drop_last = match O::try_from(s.objtype).unwrap_or(O::Undefined) {
            O::ObjectTable
            | O::ObjectView
            | O::ObjectMatview
            | O::ObjectForeignTable
            | O::ObjectSequence
            | O::ObjectIndex => false,
            O::ObjectColumn => true,
            _ => {
                self.unknown = true;
                return;
            }
        };
        match s.object.as_deref() {
            Some(o) => self.add_name_list(o, drop_last),
            None => self.unknown = true,
        }
    }

    fn node_enum(&mut self, e: &NodeEnum) {
        use protobuf::BoolExprType;
        use NodeEnum as N;
        match e {
            N::SelectStmt(s) => self.select(s),
            N::InsertStmt(s) => self.insert(s),
            N::UpdateStmt(s) => {
                let pushed = self.with(&s.with_clause);
                self.rel(&s.relation);
                self.set_targets(&s.target_list);
                self.nodes(&s.from_clause);
                self.opt(&s.where_clause);
                self.returning(&s.returning_clause);
                self.pop(pushed);
            }
            N::DeleteStmt(s) => {
                let pushed = self.with(&s.with_clause);
                self.rel(&s.relation);
                self.nodes(&s.using_clause);
                self.opt(&s.where_clause);
                self.returning(&s.returning_clause);
                self.pop(pushed);
            }
            N::MergeStmt(s) => {
                let pushed = self.with(&s.with_clause);
                self.rel(&s.relation);
                self.opt(&s.source_relation);
                self.opt(&s.join_condition);
                self.nodes(&s.merge_when_clauses);
                self.returning(&s.returning_clause);
                self.pop(pushed);
            }
            N::MergeWhenClause(m) => {
                self.opt(&m.condition);
                self.set_targets(&m.target_list);
                self.nodes(&m.values);
            }
            N::RangeVar(rv) => self.add_table(rv, true),
            N::JoinExpr(j) => {
                self.opt(&j.larg);
                self.opt(&j.rarg);
                self.opt(&j.quals);
            }
            N::RangeSubselect(r) => self.opt(&r.subquery),
            N::RangeFunction(r) => self.nodes(&r.functions),
            N::RangeTableSample(r) => {
                self.opt(&r.relation);
                self.nodes(&r.args);
            }
            N::RangeTableFunc(r) => {
                self.opt(&r.docexpr);
                self.opt(&r.rowexpr);
            }
            N::AExpr(a) => {
                match tenant_cmp(a, &self.cfg.tenant_column, self.drop_params) {
                    TenantCmp::Values(vs) => self.mention(vs),
                    TenantCmp::Spans => self.under_or = true,
                    TenantCmp::NotTenant => {}
                }
                self.opt(&a.lexpr);
                self.opt(&a.rexpr);
            }
            N::BoolExpr(b) => {
                let neg = b.boolop != BoolExprType::AndExpr as i32;
                self.neg_depth += u32::from(neg);
                self.nodes(&b.args);
                self.neg_depth -= u32::from(neg);
            }
            N::SubLink(s) => {
                self.opt(&s.testexpr);
                self.opt(&s.subselect);
            }
            N::FuncCall(f) => self.func_call(f),
            N::TypeCast(t) => self.opt(&t.arg),
            N::CaseExpr(c) => {
                self.opt(&c.arg);
                self.nodes(&c.args);
                self.opt(&c.defresult);
            }
            N::CaseWhen(w) => {
                self.opt(&w.expr);
                self.opt(&w.result);
            }
            N::CoalesceExpr(c) => self.nodes(&c.args),
            N::MinMaxExpr(m) => self.nodes(&m.args),
            N::NullTest(n) => self.opt(&n.arg),
            N::BooleanTest(b) => self.opt(&b.arg),
            N::RowExpr(r) => self.nodes(&r.args),
            N::AArrayExpr(a) => self.nodes(&a.elements),
            N::AIndirection(a) => {
                self.opt(&a.arg);
                self.nodes(&a.indirection);
            }
            N::CollateClause(c) => self.opt(&c.arg),
            N::ResTarget(r) => {
                self.opt(&r.val);
                self.nodes(&r.indirection);
            }
            N::MultiAssignRef(m) => self.opt(&m.source),
            N::List(l) => self.nodes(&l.items),
            N::SortBy(s) => self.opt(&s.node),
            N::GroupingSet(g) => self.nodes(&g.content),
            N::NamedArgExpr(n) => self.opt(&n.arg),
            N::WindowDef(w) => {
                self.nodes(&w.partition_clause);
                self.nodes(&w.order_clause);
            }
            N::IndexElem(i) => self.opt(&i.expr),
            N::CommonTableExpr(c) => self.opt(&c.ctequery),
            N::Constraint(c) => {
                if let Some(pk) = &c.pktable {
                    self.add_table(pk, false);
                }
                self.opt(&c.raw_expr);
                self.opt(&c.where_clause);
            }
            N::ColumnDef(c) => {
                self.nodes(&c.constraints);
                self.opt(&c.raw_default);
            }
            N::PartitionCmd(p) => self.rel(&p.name),
            N::AlterTableCmd(c) => self.opt(&c.def),
            N::CopyStmt(c) => {
                if c.relation.is_some() {
                    self.rel(&c.relation);
                }
                self.opt(&c.query);
                self.opt(&c.where_clause);
            }
            N::ExplainStmt(s) => self.opt(&s.query),
            N::PrepareStmt(s) => {
                self.effects.push(SessionEffect::Untracked);
                let prev = std::mem::replace(&mut self.drop_params, true);
                self.opt(&s.query);
                self.drop_params = prev;
            }
            N::DeclareCursorStmt(s) => {
                // CURSOR_OPT_HOLD: the cursor outlives its transaction.
                if s.options & 0x0020 != 0 {
                    self.effects.push(SessionEffect::Untracked);
                }
                self.opt(&s.query);
            }
            N::CreateTableAsStmt(s) => {
                self.opt(&s.query);
                if let Some(into) = &s.into {
                    self.temp_rel(&into.rel);
                    self.rel(&into.rel);
                }
            }
            N::ListenStmt(_) => self.effects.push(SessionEffect::Untracked),
            N::ViewStmt(s) => {
                self.temp_rel(&s.view);
                self.rel(&s.view);
                self.opt(&s.query);
            }
            N::CreateStmt(s) => {
                self.temp_rel(&s.relation);
                self.rel(&s.relation);
                self.nodes(&s.inh_relations);
                self.nodes(&s.table_elts);
                self.nodes(&s.constraints);
            }
            N::AlterTableStmt(s) => {
                self.rel(&s.relation);
                self.nodes(&s.cmds);
            }
            N::IndexStmt(s) => {
                self.rel(&s.relation);
                self.nodes(&s.index_params);
                self.opt(&s.where_clause);
            }
            N::DropStmt(s) => self.drop_stmt(s),
            N::TruncateStmt(s) => self.nodes(&s.relations),
            N::RenameStmt(s) => self.rel(&s.relation),
            N::AlterObjectSchemaStmt(s) => self.rel(&s.relation),
            N::AlterOwnerStmt(s) => self.rel(&s.relation),
            N::CommentStmt(s) => self.comment(s),
            N::GrantStmt(s) => {
                let table = s.objtype == protobuf::ObjectType::ObjectTable as i32
                    && s.targtype == protobuf::GrantTargetType::AclTargetObject as i32;
                if table {
                    self.nodes(&s.objects);
                } else {
                    self.unknown = true;
                }
            }
            N::LockStmt(s) => self.nodes(&s.relations),
            N::VacuumStmt(s) => {
                if s.rels.is_empty() {
                    self.unknown = true;
                }
                self.nodes(&s.rels);
            }
            N::VacuumRelation(v) => self.rel(&v.relation),
            N::ClusterStmt(s) => self.rel(&s.relation),
            N::ReindexStmt(s) => self.rel(&s.relation),
            N::RefreshMatViewStmt(s) => self.rel(&s.relation),
            N::CreatePolicyStmt(s) => {
                self.rel(&s.table);
                self.opt(&s.qual);
                self.opt(&s.with_check);
            }
            N::AlterPolicyStmt(s) => {
                self.rel(&s.table);
                self.opt(&s.qual);
                self.opt(&s.with_check);
            }
            N::CreateTrigStmt(s) => {
                self.rel(&s.relation);
                if let Some(c) = &s.constrrel {
                    self.add_table(c, false);
                }
                self.opt(&s.when_clause);
            }
            N::RuleStmt(s) => {
                self.rel(&s.relation);
                self.opt(&s.where_clause);
                self.nodes(&s.actions);
            }
            N::CreateSeqStmt(s) => {
                self.temp_rel(&s.sequence);
                self.rel(&s.sequence);
            }
            N::AlterSeqStmt(s) => self.rel(&s.sequence),
            N::CallStmt(s) => {
                self.unknown = true;
                if let Some(f) = &s.funccall {
                    self.func_call(f);
                }
            }
            N::ExecuteStmt(_) => self.unknown = true,
            N::PlassignStmt(p) => {
                if let Some(v) = &p.val {
                    self.select(v);
                }
                self.nodes(&p.indirection);
            }
            N::DoStmt(d) => self.do_block(d),
            N::VariableSetStmt(s) => self.set_stmt(s),
            N::DiscardStmt(d) => {
                if d.target == protobuf::DiscardMode::DiscardAll as i32 {
                    // DISCARD ALL includes DEALLOCATE ALL.
                    self.effects.push(SessionEffect::ResetAll);
                    self.effects.push(SessionEffect::Deallocate(None));
                } else {
                    self.effects.push(SessionEffect::Other);
                }
            }
            N::TransactionStmt(t) => self.txn(t),
            N::DeallocateStmt(d) => self.effects.push(SessionEffect::Deallocate(
                (!d.isall && !d.name.is_empty()).then(|| d.name.clone()),
            )),
            _ => {}
        }
    }
}

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "t" | "true" | "on" | "yes" | "y" | "1" => Some(true),
        "f" | "false" | "off" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Statement kinds whose relations the walker finds, or that touch no
/// relation at all; any other top-level kind is routed as unknown.
fn is_known_statement(e: &NodeEnum) -> bool {
    use NodeEnum as N;
    matches!(
        e,
        N::SelectStmt(_)
            | N::InsertStmt(_)
            | N::UpdateStmt(_)
            | N::DeleteStmt(_)
            | N::MergeStmt(_)
            | N::CopyStmt(_)
            | N::ExplainStmt(_)
            | N::PrepareStmt(_)
            | N::DeclareCursorStmt(_)
            | N::CreateTableAsStmt(_)
            | N::ViewStmt(_)
            | N::CreateStmt(_)
            | N::AlterTableStmt(_)
            | N::IndexStmt(_)
            | N::DropStmt(_)
            | N::TruncateStmt(_)
            | N::RenameStmt(_)
            | N::AlterObjectSchemaStmt(_)
            | N::AlterOwnerStmt(_)
            | N::CommentStmt(_)
            | N::GrantStmt(_)
            | N::LockStmt(_)
            | N::VacuumStmt(_)
            | N::ClusterStmt(_)
            | N::ReindexStmt(_)
            | N::RefreshMatViewStmt(_)
            | N::CreatePolicyStmt(_)
            | N::AlterPolicyStmt(_)
            | N::CreateTrigStmt(_)
            | N::RuleStmt(_)
            | N::CreateSeqStmt(_)
            | N::AlterSeqStmt(_)
            | N::CallStmt(_)
            | N::ExecuteStmt(_)
            | N::DoStmt(_)
            | N::VariableSetStmt(_)
            | N::VariableShowStmt(_)
            | N::DiscardStmt(_)
            | N::TransactionStmt(_)
            | N::ListenStmt(_)
            | N::NotifyStmt(_)
            | N::UnlistenStmt(_)
            | N::DeallocateStmt(_)
            | N::CheckPointStmt(_)
            | N::LoadStmt(_)
            | N::ClosePortalStmt(_)
            | N::FetchStmt(_)
            | N::ConstraintsSetStmt(_)
    )
}

/// Collects `(query, parse mode)` of every PL/pgSQL expression and flags
/// dynamic SQL, whose tables cannot be known statically.
fn collect_plpgsql(v: &serde_json::Value, out: &mut Vec<(String, i32)>, dynamic: &mut bool) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k.starts_with("PLpgSQL_stmt_dyn") || k == "dynquery" {
                    *dynamic = true;
                }
                if k == "PLpgSQL_expr" {
                    if let Some(q) = v.get("query").and_then(|q| q.as_str()) {
                        let mode = v.get("parseMode").and_then(|m| m.as_i64()).unwrap_or(0);
                        out.push((q.to_string(), mode as i32));
                    }
                }
                collect_plpgsql(v, out, dynamic);
            }
        }
        serde_json::Value::Array(a) => {
            for v in a {
                collect_plpgsql(v, out, dynamic);
            }
        }
        _ => {}
    }
}
