//! The listener and the state every session shares.

use crate::appdb::AppDb;
use crate::auth::{AuthQuery, Throttle};
use crate::config::Config;
use crate::pool::{BackendUrl, DataSourcePool, PoolMode, PoolSet, PoolSettings};
use crate::protocol::backend::PgError;
use crate::registry::{SecretBox, TenantRecord, TenantRegistry, TenantStatus};
use crate::router::{self, ParseCache, RouterConfig, TableRef, TenantPlacement};
use crate::session::cancel::CancelRegistry;
use crate::session::{Session, Target};
use dashmap::DashMap;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::TcpListener;

/// TLS material for client connections.
pub struct TlsMaterial {
    pub config: Arc<rustls::ServerConfig>,
    /// The certificate PEM, for SCRAM-SHA-256-PLUS channel binding.
    pub cert_pem: Vec<u8>,
}

impl TlsMaterial {
    pub fn load(cert: &std::path::Path, key: &std::path::Path) -> Result<TlsMaterial, String> {
        let cert_pem =
            std::fs::read(cert).map_err(|e| format!("tls.cert {}: {e}", cert.display()))?;
        let key_pem = std::fs::read(key).map_err(|e| format!("tls.key {}: {e}", key.display()))?;
        let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.cert: {e}"))?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
            .map_err(|e| format!("tls.key: {e}"))?
            .ok_or("tls.key: no private key found")?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls.cert/tls.key: {e}"))?;
        Ok(TlsMaterial {
            config: Arc::new(config),
            cert_pem,
        })
    }
}

/// Tenant id → placement, looked up twice per routed statement. foldhash:
/// the keys come from the registry, so a client choosing which id to look
/// up cannot make the map slow.
type PlacementMap = HashMap<String, Placement, foldhash::fast::RandomState>;

/// Where a tenant's statements go, cached per registry generation.
#[derive(Clone)]
struct Placement {
    target: Result<Target, PgError>,
    placement: Option<TenantPlacement>,
}

/// State shared by every session: config, pools, registry, parse cache.
pub struct Shared {
    config: RwLock<Arc<Config>>,
    pub app_db: Arc<AppDb>,
    pub auth_query: AuthQuery,
    pub throttle: Throttle,
    pub pools: PoolSet,
    app_pool: RwLock<Arc<DataSourcePool>>,
    tls: RwLock<Option<Arc<TlsMaterial>>>,
    pub cancels: CancelRegistry,
    server_params: tokio::sync::OnceCell<Vec<(String, String)>>,
    router_config: RwLock<Arc<RouterConfig>>,
    /// `routing.enabled`, read on every statement: an atomic copy of the
    /// config value so the hot path takes no lock for it.
    routing_enabled: std::sync::atomic::AtomicBool,
    pub parse_cache: ParseCache,
    pub registry: Arc<TenantRegistry>,
    pub secrets: Option<Arc<SecretBox>>,
    placements: RwLock<(u64, PlacementMap)>,
    rls_verified: DashMap<(String, String), bool>,
    /// Connected clients by session id, for the admin console.
    pub clients: DashMap<u64, crate::admin::ClientInfo>,
}

impl Shared {
    pub fn new(
        config: Config,
        registry: Arc<TenantRegistry>,
        secrets: Option<Arc<SecretBox>>,
    ) -> Result<Arc<Shared>, String> {
        let app_url =
            BackendUrl::parse(&config.app_db.url).map_err(|e| format!("app_db.url: {e}"))?;
        let app_db =
            Arc::new(AppDb::new(&config.app_db.url).map_err(|e| format!("app_db.url: {e}"))?);
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(c), Some(k)) => Some(Arc::new(TlsMaterial::load(c, k)?)),
            _ => None,
        };
        let router_config = router_config(&config);
        let pools = PoolSet::default();
        let app_pool = pools.get_or_create(&app_url, &PoolSettings::from_defaults(&config.pool));
        Ok(Arc::new(Shared {
            auth_query: AuthQuery::new(config.auth.query.clone(), app_db.clone()),
            throttle: Throttle::new(
                config.auth.throttle_failures,
                Duration::from_secs(config.auth.throttle_window_secs),
            ),
            parse_cache: ParseCache::new(config.routing.parse_cache_capacity.max(16)),
            app_db,
            pools,
            app_pool: RwLock::new(app_pool),
            tls: RwLock::new(tls),
            cancels: CancelRegistry::default(),
            server_params: tokio::sync::OnceCell::new(),
            router_config: RwLock::new(Arc::new(router_config)),
            routing_enabled: config.routing.enabled.into(),
            registry,
            secrets,
            placements: RwLock::new((u64::MAX, PlacementMap::default())),
            rls_verified: DashMap::new(),
            clients: DashMap::new(),
            config: RwLock::new(Arc::new(config)),
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    pub fn tls(&self) -> Option<Arc<TlsMaterial>> {
        self.tls.read().unwrap().clone()
    }

    pub fn routing_enabled(&self) -> bool {
        self.routing_enabled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Applies a re-read configuration (SIGHUP / RELOAD) without dropping clients.
    pub fn reload(&self, config: Config) -> Result<(), String> {
        let tls = match (&config.tls.cert, &config.tls.key) {
            (Some(c), Some(k)) => Some(Arc::new(TlsMaterial::load(c, k)?)),
            _ => None,
        };
        let app_url =
            BackendUrl::parse(&config.app_db.url).map_err(|e| format!("app_db.url: {e}"))?;
        *self.app_pool.write().unwrap() = self
            .pools
            .get_or_create(&app_url, &PoolSettings::from_defaults(&config.pool));
        *self.tls.write().unwrap() = tls;
        *self.router_config.write().unwrap() = Arc::new(router_config(&config));
        self.placements.write().unwrap().0 = u64::MAX;
        self.routing_enabled
            .store(config.routing.enabled, std::sync::atomic::Ordering::Relaxed);
        *self.config.write().unwrap() = Arc::new(config);
        Ok(())
    }

    pub fn app_target(&self) -> Target {
        Target {
            pool: self.app_pool.read().unwrap().clone(),
            tenant: None,
        }
    }

    /// ParameterStatus values to greet clients with, read from the app DB once.
    pub async fn server_params(&self) -> Result<Vec<(String, String)>, PgError> {
        self.server_params
            .get_or_try_init(|| async {
                let pool = self.app_target().pool;
                let conn = pool.checkout(None, crate::clock::Tick::now()).await?;
                let params = conn.params.clone();
                conn.release(crate::clock::Tick::now());
                Ok(params)
            })
            .await
            .cloned()
    }

    /// The statement's analysis; `Ok(None)` when pg_query cannot parse it, in
    /// which case the backend reports the syntax error itself (a statement
    /// PostgreSQL cannot parse reads and writes nothing).
    pub fn analyze(&self, sql: &str) -> Result<Option<Arc<router::Analysis>>, PgError> {
        let cfg = self.router_config.read().unwrap().clone();
        match self.parse_cache.analyze(sql, &cfg) {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.sqlstate == "42601" => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn placements(&self) -> std::sync::RwLockReadGuard<'_, (u64, PlacementMap)> {
        let generation = self.registry.generation();
        {
            let guard = self.placements.read().unwrap();
            if guard.0 == generation {
                return guard;
            }
        }
        let records = self.registry.all();
        let mut per_source: HashMap<String, usize> = HashMap::new();
        for r in &records {
            if let Ok(spec) = &r.data_source {
                *per_source.entry(spec.pool_key()).or_default() += 1;
            }
        }
        let defaults = self.config().pool.clone();
        let mut map = PlacementMap::with_capacity_and_hasher(records.len(), Default::default());
        for r in records {
            // A tenant whose data source is unusable (bad secret, bad URL) still
            // routes to itself, so its clients get its 08004 error, not "unknown tenant".
            let placement = Some(match r.data_source.as_ref() {
                Ok(spec) => TenantPlacement {
                    data_source: spec.pool_key().into(),
                    shared: per_source.get(&spec.pool_key()).copied().unwrap_or(0) > 1,
                    active: r.status == TenantStatus::Active,
                },
                Err(_) => TenantPlacement {
                    data_source: "".into(),
                    shared: false,
                    active: r.status == TenantStatus::Active,
                },
            });
            let target = self.build_target(&r, &defaults);
            map.insert(r.id.clone(), Placement { target, placement });
        }
        *self.placements.write().unwrap() = (generation, map);
        self.placements.read().unwrap()
    }

    fn build_target(
        &self,
        r: &TenantRecord,
        defaults: &crate::config::PoolDefaults,
    ) -> Result<Target, PgError> {
        if r.status != TenantStatus::Active {
            return Err(
                PgError::error("08004", format!("tenant \"{}\" is suspended", r.id))
                    .with_hint("An administrator can resume it with `pgtenant tenant resume`."),
            );
        }
        let spec = r.data_source.as_ref().map_err(|e| {
            PgError::error(
                "08004",
                format!("tenant \"{}\" has an unusable data source: {e}", r.id),
            )
            .with_hint("Check the tenant's data_source_url / data_source_password and ENCRYPTION_KEY (`pgtenant tenant test`).")
        })?;
        let url = spec.backend_url();
        let mut settings = PoolSettings::from_defaults(defaults);
        settings.size = r.pool.pool_size.max(1) as usize;
        settings.mode = if r.pool.mode.as_str() == "session" {
            PoolMode::Session
        } else {
            PoolMode::Transaction
        };
        settings.checkout_timeout = r.pool.checkout_timeout;
        settings.idle_timeout = r.pool.idle_timeout;
        settings.max_lifetime = r.pool.max_lifetime;
        settings.min_idle = (r.pool.min_idle as usize).min(settings.size);
        settings.max_per_tenant =
            (r.pool.max_connections_per_tenant as usize).clamp(1, settings.size);
        Ok(Target {
            pool: self.pools.get_or_create(&url, &settings),
            tenant: Some(r.data_tenant_id().into()),
        })
    }

    /// The target for `tenant`, or the error its clients get (unknown, suspended, broken secret).
    pub fn tenant_target(&self, tenant: &str) -> Result<Target, PgError> {
        match self.placements().1.get(tenant) {
            Some(p) => p.target.clone(),
            None => Err(
                PgError::error("3D000", format!("tenant \"{tenant}\" does not exist"))
                    .with_hint("List tenants with `pgtenant tenant list`."),
            ),
        }
    }

    /// What `pgtenant explain` and `EXPLAIN ROUTE` print for `sql`.
    pub fn explain(
        &self,
        sql: &str,
        allowed: Option<&[String]>,
        session_tenant: Option<&str>,
    ) -> String {
        let cfg = self.router_config.read().unwrap().clone();
        router::explain(sql, allowed, session_tenant, &cfg, &self.directory())
    }

    /// Reacts to a registry change: a suspended tenant's idle backend
    /// connections are closed and its others are not reused (routing already
    /// refuses its new statements); an active one's are reused again.
    pub fn on_tenant_change(&self, change: &crate::registry::TenantChange) {
        let Some(rec) = self.registry.get(change.id()) else {
            return;
        };
        let tenant = rec.data_tenant_id();
        if rec.status == TenantStatus::Active {
            for p in self.pools.all() {
                p.resume_tenant(tenant);
            }
            return;
        }
        let closed: usize = self
            .pools
            .all()
            .iter()
            .map(|p| p.suspend_tenant(tenant))
            .sum();
        tracing::info!(tenant = %rec.id, closed, "tenant suspended: closed its idle backend connections");
    }

    /// The router's view of tenant placements.
    pub fn directory(&self) -> Directory<'_> {
        Directory(self.placements())
    }

    pub fn tenant_by_subdomain(&self, subdomain: &str) -> Option<String> {
        self.registry.by_subdomain(subdomain).map(|r| r.id.clone())
    }

    /// Some active tenant, for describing statements whose tenant comes at Bind.
    pub fn any_active_tenant(&self) -> Option<String> {
        let p = self.placements();
        let mut ids: Vec<&String> =
            p.1.iter()
                .filter(|(_, v)| v.target.is_ok())
                .map(|(k, _)| k)
                .collect();
        ids.sort();
        ids.first().map(|s| s.to_string())
    }

    /// Refuses unless every table is protected by row-level security keyed on
    /// the tenant setting on `target`'s data source. Checked once per table.
    pub async fn check_rls(&self, target: &Target, tables: &[TableRef]) -> Result<(), PgError> {
        let setting = self.config().routing.tenant_setting.clone();
        let mut unprotected = Vec::new();
        for t in tables {
            let key = (target.pool.name.clone(), t.to_string());
            let ok = match self.rls_verified.get(&key) {
                Some(v) => *v,
                None => {
                    let v = rls_protected(&target.pool.url, t, &setting)
                        .await
                        .map_err(|e| {
                            PgError::error(
                                "08006",
                                format!(
                                    "cannot check row-level security on {}: {e}",
                                    target.pool.name
                                ),
                            )
                        })?;
                    self.rls_verified.insert(key, v);
                    v
                }
            };
            if !ok {
                unprotected.push(t.to_string());
            }
        }
        if unprotected.is_empty() {
            return Ok(());
        }
        Err(PgError::error(
            "42501",
            format!(
                "table(s) {} on a shared data source are not protected by row-level security on {setting}; the statement must name its tenant",
                unprotected.join(", ")
            ),
        )
        .with_hint(format!(
            "Add a filter such as WHERE tenant_id = '…' (or a /* tenant_id='…' */ hint), or enable RLS with a policy using current_setting('{setting}')."
        )))
    }
}

/// Adapter giving the router read access to tenant placements.
pub struct Directory<'a>(std::sync::RwLockReadGuard<'a, (u64, PlacementMap)>);

impl router::TenantDirectory for Directory<'_> {
    fn tenant(&self, id: &str) -> Option<TenantPlacement> {
        self.0 .1.get(id).and_then(|p| p.placement.clone())
    }
}

fn router_config(config: &Config) -> RouterConfig {
    RouterConfig {
        app_tables: config.routing.app_tables.clone(),
        tenant_column: config.routing.tenant_column.clone(),
        tenant_setting: config.routing.tenant_setting.clone(),
        cache_capacity: config.routing.parse_cache_capacity,
    }
}

/// Asks a data source whether `table` is protected by RLS keyed on `setting`
/// for the role pgtenant connects as.
async fn rls_protected(url: &BackendUrl, table: &TableRef, setting: &str) -> Result<bool, String> {
    let (client, conn) = crate::pool::control::connect_url(url).await?;
    crate::pool::control::spawn_driver(conn);
    let row = client
        .query_opt(
            "SELECT c.relrowsecurity \
                AND (c.relforcerowsecurity OR c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = current_user)) \
                AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) \
                AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid \
                    AND (pg_get_expr(p.polqual, p.polrelid) LIKE '%' || $2 || '%'))
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relname = $1 AND (n.nspname = $3 OR ($3 = '' AND pg_table_is_visible(c.oid)))",
            &[&table.name, &setting.to_string(), &table.schema.clone().unwrap_or_default()],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.map(|r| r.get::<_, bool>(0)).unwrap_or(false))
}

/// Accepts clients until `shutdown` carries a drain time, then stops
/// accepting and waits that long for sessions to finish.
pub async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    workers: &crate::workers::Workers,
    shutdown: tokio::sync::watch::Receiver<Option<Duration>>,
) {
    let mut shutdown = shutdown;
    let tracker = tokio_util_tracker::Tracker::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        crate::clock::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let shared = shared.clone();
                let guard = tracker.enter();
                workers.spawn_session(tcp, move |tcp| async move {
                    Session::run(tcp, peer, shared).await;
                    drop(guard);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let drain = shutdown.borrow().unwrap_or(Duration::ZERO);
    tracing::info!(active = tracker.active(), "draining client sessions");
    let _ = crate::clock::timeout(drain, tracker.wait_idle()).await;
}

/// A tiny task tracker: counts live sessions and waits for zero.
mod tokio_util_tracker {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::Notify;

    #[derive(Default, Clone)]
    pub struct Tracker(Arc<(AtomicUsize, Notify)>);
    pub struct Guard(Arc<(AtomicUsize, Notify)>);

    impl Tracker {
        pub fn enter(&self) -> Guard {
            self.0 .0.fetch_add(1, Ordering::SeqCst);
            Guard(self.0.clone())
        }
        pub fn active(&self) -> usize {
            self.0 .0.load(Ordering::SeqCst)
        }
        pub async fn wait_idle(&self) {
            loop {
                let notified = self.0 .1.notified();
                if self.active() == 0 {
                    return;
                }
                notified.await;
            }
        }
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            if self.0 .0.fetch_sub(1, Ordering::SeqCst) == 1 {
                self.0 .1.notify_waiters();
            }
        }
    }
}
