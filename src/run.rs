//! What each CLI command does, kept out of `main.rs` so tests and tools can
//! call the same code.

use crate::clock::Metronome;
use crate::config::Config;
use crate::registry::{self, ops, SecretBox, TenantRegistry};
use crate::server::{self, Shared};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log.format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// `ENCRYPTION_KEY` is optional for pass-through use; without it tenants whose
/// secrets are encrypted cannot be loaded, which is logged.
fn secrets_from_env() -> Option<Arc<SecretBox>> {
    match SecretBox::from_env() {
        Ok(s) => Some(Arc::new(s)),
        Err(e) => {
            tracing::warn!(error = %e, "ENCRYPTION_KEY not usable: tenant data sources cannot be decrypted");
            None
        }
    }
}

/// `pgtenant serve`.
pub async fn serve(config: Config) -> ExitCode {
    init_logging(&config);
    // Before Shared::new: pools size their per-worker idle lists by the count.
    let workers = config
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let workers = match crate::workers::Workers::start(workers) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("pgtenant: cannot start worker threads: {e}");
            return ExitCode::from(1);
        }
    };
    let registry = Arc::new(TenantRegistry::new());
    let secrets = secrets_from_env();
    let shared = match Shared::new(config.clone(), registry.clone(), secrets.clone()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgtenant: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(&config.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pgtenant: cannot listen on {}: {e}", config.listen);
            return ExitCode::from(1);
        }
    };
    let sync = secrets.map(|s| {
        registry::spawn_registry_sync(
            config.app_db.url.clone(),
            registry.clone(),
            s,
            Duration::from_secs(30),
        )
    });
    if let Some(listen) = config.metrics.listen.clone() {
        tokio::spawn(crate::admin::http::serve(listen, shared.clone()));
    }
    {
        let shared = shared.clone();
        let mut changes = registry.subscribe();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(c) => shared.on_tenant_change(&c),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => break,
                }
            }
        });
    }
    let (tx, rx) = tokio::sync::watch::channel(None);
    spawn_signal_handlers(
        tx,
        shared.clone(),
        Duration::from_secs(config.shutdown_timeout_secs),
    );
    let upkeep = Metronome::new(Duration::from_secs(2));
    let pruner = {
        let shared = shared.clone();
        tokio::spawn(async move {
            loop {
                upkeep.tick().await;
                for p in shared.pools.all() {
                    p.maintain().await;
                }
            }
        })
    };
    tracing::info!(listen = %config.listen, workers = crate::workers::count(), "pgtenant ready");
    server::serve(listener, shared, &workers, rx).await;
    if let Some(s) = sync {
        s.abort();
    }
    pruner.abort();
    tracing::info!("pgtenant stopped");
    ExitCode::SUCCESS
}

/// SIGTERM drains for `shutdown_timeout`; SIGINT the same, with at most 2 s.
fn spawn_signal_handlers(
    tx: tokio::sync::watch::Sender<Option<Duration>>,
    shared: Arc<Shared>,
    drain: Duration,
) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        loop {
            tokio::select! {
                _ = term.recv() => {
                    tracing::info!(timeout_secs = drain.as_secs(), "SIGTERM: draining");
                    crate::admin::set_draining();
                    let _ = tx.send(Some(drain));
                }
                _ = int.recv() => {
                    tracing::info!("SIGINT: stopping");
                    crate::admin::set_draining();
                    let _ = tx.send(Some(drain.min(Duration::from_secs(2))));
                }
                _ = hup.recv() => {
                    let path = crate::admin::config_path();
                    match Config::load(path.as_deref()) {
                        Ok(c) => match shared.reload(c) {
                            Ok(()) => tracing::info!("configuration reloaded"),
                            Err(e) => tracing::error!(error = %e, "reload rejected; keeping the old configuration"),
                        },
                        Err(e) => tracing::error!(error = %e, "reload rejected; keeping the old configuration"),
                    }
                }
            }
        }
    });
}

async fn app_client(config: &Config) -> Result<tokio_postgres::Client, String> {
    crate::pool::control::client(&config.app_db.url)
        .await
        .map_err(|e| format!("cannot connect to the app DB: {e}"))
}

/// `pgtenant explain`.
pub async fn explain(
    config: Config,
    user: Option<String>,
    tenant: Option<String>,
    sql: String,
) -> ExitCode {
    let registry = Arc::new(TenantRegistry::new());
    let mut allowed: Option<Vec<String>> = None;
    if let Ok(client) = app_client(&config).await {
        if let Ok(secrets) = SecretBox::from_env() {
            if let Ok(records) = registry::load_all(&client, &secrets).await {
                registry.replace_all(records);
            }
        }
        if let Some(u) = &user {
            let appdb = Arc::new(crate::appdb::AppDb::new(&config.app_db.url).expect("validated"));
            match crate::auth::AuthQuery::new(config.auth.query.clone(), appdb)
                .lookup(u)
                .await
            {
                Ok(Some(rec)) => allowed = rec.tenants,
                Ok(None) => {
                    eprintln!("pgtenant: unknown user {u}");
                    return ExitCode::from(1);
                }
                Err(e) => eprintln!("pgtenant: auth query failed ({e}); assuming all tenants"),
            }
        }
    }
    let shared = match Shared::new(config, registry, None) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("pgtenant: {e}");
            return ExitCode::from(2);
        }
    };
    let text = shared.explain(&sql, allowed.as_deref(), tenant.as_deref());
    print!("{text}");
    ExitCode::SUCCESS
}

/// `pgtenant rotate-key`.
pub async fn rotate_key(config: Config) -> ExitCode {
    let secrets = match SecretBox::from_env() {
        Ok(s) => s,
        Err(e) => return fail(format!("ENCRYPTION_KEY: {e}")),
    };
    let client = match app_client(&config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match ops::rotate_key(&client, &secrets, &ops::default_actor()).await {
        Ok(r) => {
            println!(
                "re-encrypted {} secret(s) ({} were on the previous key); {} tenant(s) without a password",
                r.rotated, r.were_on_previous_key, r.without_password
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

/// The `pgtenant tenant …` subcommands.
#[derive(clap::Subcommand)]
pub enum TenantOp {
    /// Register a tenant; the URL's password is encrypted before it is stored.
    Add {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long)]
        subdomain: String,
        /// postgres://user:pass@host:port/db (read from PGTENANT_TENANT_URL if omitted).
        #[arg(long, env = "PGTENANT_TENANT_URL", hide_env_values = true)]
        url: String,
        #[arg(long)]
        pool_size: Option<u32>,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        tenant_id_in_data_source: Option<String>,
    },
    /// List tenants (never secrets).
    List,
    /// One tenant in detail (the password only as "set (encrypted)").
    Show {
        id: String,
    },
    /// Change a tenant's fields.
    Set {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        subdomain: Option<String>,
        #[arg(long, hide_env_values = true)]
        url: Option<String>,
        #[arg(long)]
        pool_size: Option<u32>,
        #[arg(long)]
        mode: Option<String>,
        #[arg(long)]
        max_connections_per_tenant: Option<u32>,
        #[arg(long)]
        notes: Option<String>,
        #[arg(long)]
        region: Option<String>,
    },
    /// Refuse the tenant's new statements and close its idle connections.
    Suspend {
        id: String,
    },
    Resume {
        id: String,
    },
    Remove {
        id: String,
    },
    /// Connect to the tenant's data source and report latency and server version.
    Test {
        id: String,
    },
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("pgtenant: {msg}");
    ExitCode::from(1)
}

/// `pgtenant tenant …`.
pub async fn tenant(config: Config, op: TenantOp) -> ExitCode {
    let client = match app_client(&config).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let secrets = SecretBox::from_env();
    let need_secrets = || secrets.as_ref().map_err(|e| format!("ENCRYPTION_KEY: {e}"));
    let actor = ops::default_actor();
    let result: Result<(), String> = async {
        match op {
            TenantOp::Add {
                id,
                name,
                subdomain,
                url,
                pool_size,
                mode,
                region,
                tenant_id_in_data_source,
            } => {
                let mode = match mode.as_deref() {
                    None => None,
                    Some(m) => Some(
                        registry::PoolMode::parse(m)
                            .ok_or(format!("--mode {m}: expected transaction or session"))?,
                    ),
                };
                let rec = ops::add(
                    &client,
                    need_secrets()?,
                    ops::NewTenant {
                        id,
                        name,
                        subdomain,
                        url_with_password: registry::Secret::new(url),
                        pool_size,
                        mode,
                        region,
                        notes: None,
                        tenant_id_in_data_source,
                    },
                    &actor,
                )
                .await
                .map_err(|e| e.to_string())?;
                println!("added tenant {} ({})", rec.id, rec.name);
            }
            TenantOp::List => {
                let list = ops::list(&client, need_secrets()?)
                    .await
                    .map_err(|e| e.to_string())?;
                println!(
                    "{:<38} {:<24} {:<16} {:<10} data source",
                    "id", "name", "subdomain", "status"
                );
                for r in list {
                    let ds = match &r.data_source {
                        Ok(s) => s.url_without_password.clone(),
                        Err(e) => format!("ERROR: {e}"),
                    };
                    println!(
                        "{:<38} {:<24} {:<16} {:<10} {}",
                        r.id,
                        r.name,
                        r.subdomain,
                        r.status.as_str(),
                        ds
                    );
                }
            }
            TenantOp::Show { id } => {
                let d = ops::show(&client, need_secrets()?, &id)
                    .await
                    .map_err(|e| e.to_string())?;
                print!("{d}");
            }
            TenantOp::Set {
                id,
                name,
                subdomain,
                url,
                pool_size,
                mode,
                max_connections_per_tenant,
                notes,
                region,
            } => {
                let mut changes = ops::TenantChanges {
                    name,
                    subdomain,
                    url: url.map(registry::Secret::new),
                    notes,
                    region,
                    ..Default::default()
                };
                if let Some(n) = pool_size {
                    changes.pool.insert("pool_size".into(), n.into());
                }
                if let Some(m) = mode {
                    changes.pool.insert("mode".into(), m.into());
                }
                if let Some(n) = max_connections_per_tenant {
                    changes
                        .pool
                        .insert("max_connections_per_tenant".into(), n.into());
                }
                let rec = ops::set(&client, need_secrets()?, &id, changes, &actor)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("updated tenant {}", rec.id);
            }
            TenantOp::Suspend { id } => {
                ops::suspend(&client, &id, &actor)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("suspended tenant {id}");
            }
            TenantOp::Resume { id } => {
                ops::resume(&client, &id, &actor)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("resumed tenant {id}");
            }
            TenantOp::Remove { id } => {
                ops::remove(&client, &id, &actor)
                    .await
                    .map_err(|e| e.to_string())?;
                println!("removed tenant {id}");
            }
            TenantOp::Test { id } => {
                let rec = registry::load_one(&client, need_secrets()?, &id)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or(format!("tenant {id} does not exist"))?;
                let report = ops::test(&rec).await.map_err(|e| e.to_string())?;
                println!(
                    "tenant {id}: connected in {:.1} ms; {}",
                    report.latency.as_secs_f64() * 1000.0,
                    report.server_version
                );
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}
