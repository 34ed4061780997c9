//! Micro-benchmark of the routing parse cache: level-1 hit, level-2 hits
//! (with and without a tenant literal to substitute) and full miss on a
//! two-table join. Run with `cargo run --release --example router_bench`.

use std::hint::black_box;
use std::time::Instant;

use pgtenant::router::{analyze, ParseCache, RouterConfig};

const JOIN: &str = "SELECT a.name, c.email FROM accounts a JOIN contacts c ON c.account_id = a.id WHERE a.tenant_id = 'x' AND c.id = 42";

fn per_op(label: &str, iters: u32, mut f: impl FnMut(u32)) {
    // Warm-up uses indices past the timed range so it cannot pre-fill
    // level 1 with texts the timed loop is meant to miss.
    for i in 0..1000 {
        f(iters + i);
    }
    let start = Instant::now();
    for i in 0..iters {
        f(i);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / f64::from(iters);
    println!("{label:<34} {us:>9.3} µs/op  ({iters} iterations)");
}

fn main() {
    let cfg = std::sync::Arc::new(RouterConfig::default());

    let cache = ParseCache::new(cfg.cache_capacity);
    cache.analyze(JOIN, &cfg).unwrap();
    per_op("level-1 hit (exact text)", 2_000_000, |_| {
        black_box(cache.analyze(black_box(JOIN), &cfg).unwrap());
    });

    // Distinct texts differing only in literals: level 1 misses, level 2
    // hits and the tenant literal is substituted into a copy of the
    // template. A capacity smaller than the text count keeps level 1 cold
    // even if level-2 hits were copied into it.
    let texts: Vec<String> = (0..51_000)
        .map(|i| {
            JOIN.replace("'x'", &format!("'t{i}'"))
                .replace("42", &i.to_string())
        })
        .collect();
    let small = ParseCache::new(1024);
    small.analyze(JOIN, &cfg).unwrap();
    per_op("level-2 hit (literals differ)", 50_000, |i| {
        black_box(small.analyze(&texts[i as usize], &cfg).unwrap());
    });
    let st = small.stats();
    println!(
        "  (level-2 stats: l1_hits={} l2_hits={} misses={})",
        st.l1_hits, st.l2_hits, st.misses
    );

    // Same shape with the tenant as a parameter (pgbench -M simple style:
    // only non-tenant literals change): the template is shared as is.
    let param_texts: Vec<String> = texts
        .iter()
        .map(|t| t.replacen("'t", "$1 || 't", 1))
        .collect();
    let shared = ParseCache::new(1024);
    shared.analyze(&param_texts[50_999], &cfg).unwrap();
    per_op("level-2 hit (no tenant literal)", 50_000, |i| {
        black_box(shared.analyze(&param_texts[i as usize], &cfg).unwrap());
    });
    let st = shared.stats();
    println!(
        "  (level-2 stats: l1_hits={} l2_hits={} misses={})",
        st.l1_hits, st.l2_hits, st.misses
    );

    // A new statement shape every time (the alias differs, so neither
    // level can hit): what a cache miss costs, lookups included.
    let shapes: Vec<String> = (0..21_000)
        .map(|i| JOIN.replace("a.name,", &format!("a.name AS n{i},")))
        .collect();
    let fresh = ParseCache::new(64);
    per_op("cache miss (new shape, 2-table join)", 20_000, |i| {
        black_box(fresh.analyze(&shapes[i as usize], &cfg).unwrap());
    });
    per_op("full miss (analyze, no cache)", 20_000, |_| {
        black_box(analyze(black_box(JOIN), &cfg).unwrap());
    });
    per_op("raw pg_query::parse_protobuf (reference)", 20_000, |_| {
        black_box(pg_query::parse_protobuf(black_box(JOIN), 0).unwrap());
    });
    per_op("raw pg_query::parse (reference)", 20_000, |_| {
        black_box(pg_query::parse(black_box(JOIN), 0).unwrap());
    });
}
