//! The operator's side of pgtenant: the psql admin console (virtual database
//! `pgtenant`) and the HTTP endpoints (/metrics, /healthz, /readyz).

pub mod console;
pub mod http;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

/// What the console shows about one connected client (SHOW CLIENTS).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub peer: std::net::SocketAddr,
    pub connected_at: std::time::SystemTime,
    pub tls: bool,
    /// The tenant the session's current (or last) transaction ran for.
    pub tenant: std::sync::Arc<Mutex<Option<std::sync::Arc<str>>>>,
    /// Signalled by `KILL <tenant>` (the session ends with 57P01), and by pools asking for kept connections back.
    pub signal: std::sync::Arc<crate::session::signal::SessionSignal>,
}

/// Ends every session working for `tenant` (KILL); returns how many.
pub fn kill_tenant_sessions(clients: &dashmap::DashMap<u64, ClientInfo>, tenant: &str) -> usize {
    let mut n = 0;
    for c in clients.iter() {
        if c.tenant.lock().unwrap().as_deref() == Some(tenant) {
            c.signal.fire();
            n += 1;
        }
    }
    n
}

/// The configuration file the running process was started with: `--config`
/// / `-c` on the command line, else `PGTENANT_CONFIG`; `None` means the
/// configuration comes from the environment only. RELOAD re-reads it.
pub fn config_path() -> Option<PathBuf> {
    if let Some(p) = config_path_from_args(std::env::args_os().skip(1)) {
        return Some(p);
    }
    std::env::var_os("PGTENANT_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn config_path_from_args(args: impl Iterator<Item = std::ffi::OsString>) -> Option<PathBuf> {
    let mut args = args;
    while let Some(a) = args.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" || s == "-c" {
            return args.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
        if let Some(v) = s
            .strip_prefix("-c")
            .filter(|v| !v.is_empty() && !s.starts_with("--"))
        {
            return Some(PathBuf::from(v));
        }
    }
    None
}

/// PAUSE / RESUME state. The console records it; sessions are expected to
/// call [`wait_while_paused`] before checking out a server connection.
#[derive(Default)]
struct PauseState {
    all: bool,
    tenants: HashSet<String>,
}

static PAUSE: LazyLock<(Mutex<PauseState>, tokio::sync::Notify)> = LazyLock::new(|| {
    (
        Mutex::new(PauseState::default()),
        tokio::sync::Notify::new(),
    )
});
/// Set once any session consulted the pause gate; until then PAUSE warns
/// that it has no effect.
static GATE_CONSULTED: AtomicBool = AtomicBool::new(false);
/// Whether any PAUSE is in force: the per-checkout gate costs one atomic load otherwise.
static ANY_PAUSED: AtomicBool = AtomicBool::new(false);
/// Set by SHUTDOWN or SIGTERM: /readyz answers 503 from then on.
static DRAINING: AtomicBool = AtomicBool::new(false);

/// Pauses everything (`None`) or one tenant.
pub fn pause(tenant: Option<&str>) {
    let mut s = PAUSE.0.lock().unwrap();
    match tenant {
        None => s.all = true,
        Some(t) => {
            s.tenants.insert(t.to_string());
        }
    }
    ANY_PAUSED.store(true, Ordering::SeqCst);
}

/// Resumes everything (`None`: clears every pause) or one tenant.
pub fn resume(tenant: Option<&str>) {
    {
        let mut s = PAUSE.0.lock().unwrap();
        match tenant {
            None => {
                s.all = false;
                s.tenants.clear();
            }
            Some(t) => {
                s.tenants.remove(t);
            }
        }
        ANY_PAUSED.store(s.all || !s.tenants.is_empty(), Ordering::SeqCst);
    }
    PAUSE.1.notify_waiters();
}

/// Whether new work for `tenant` (`None` = app DB) should wait.
pub fn is_paused(tenant: Option<&str>) -> bool {
    let s = PAUSE.0.lock().unwrap();
    s.all || tenant.is_some_and(|t| s.tenants.contains(t))
}

/// [`is_paused`] for the per-transaction path: one atomic load while no
/// PAUSE is in force.
pub fn pause_applies(tenant: Option<&str>) -> bool {
    ANY_PAUSED.load(Ordering::SeqCst) && is_paused(tenant)
}

/// Whether every pool is paused, and which tenants are.
pub fn paused() -> (bool, Vec<String>) {
    let s = PAUSE.0.lock().unwrap();
    let mut t: Vec<String> = s.tenants.iter().cloned().collect();
    t.sort();
    (s.all, t)
}

/// The gate sessions call before checking out a server connection for
/// `tenant` (`None` = app DB): returns once neither PAUSE applies.
pub async fn wait_while_paused(tenant: Option<&str>) {
    if !GATE_CONSULTED.load(Ordering::Relaxed) {
        GATE_CONSULTED.store(true, Ordering::Relaxed);
    }
    if !ANY_PAUSED.load(Ordering::SeqCst) {
        return;
    }
    loop {
        let notified = PAUSE.1.notified();
        if !is_paused(tenant) {
            return;
        }
        notified.await;
    }
}

pub(crate) fn gate_consulted() -> bool {
    GATE_CONSULTED.load(Ordering::Relaxed)
}

/// Marks the process as draining (readiness fails from now on).
pub fn set_draining() {
    DRAINING.store(true, Ordering::Relaxed);
}

pub fn is_draining() -> bool {
    DRAINING.load(Ordering::Relaxed)
}

/// Removes the password from a `postgres://user:pw@host/db` URL or a
/// `password=…` keyword/value string, for display.
pub fn redact_url(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..authority_end];
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!(
                    "{}{}:********{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| {
            if kv.to_ascii_lowercase().starts_with("password=") {
                "password=********".to_string()
            } else {
                kv.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_config_path_in_arguments() {
        let a = |v: &[&str]| config_path_from_args(v.iter().map(std::ffi::OsString::from));
        assert_eq!(a(&["serve", "--config", "/x.toml"]), Some("/x.toml".into()));
        assert_eq!(a(&["--config=/y.toml", "serve"]), Some("/y.toml".into()));
        assert_eq!(a(&["-c", "/z.toml", "serve"]), Some("/z.toml".into()));
        assert_eq!(a(&["serve"]), None);
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db?sslmode=disable"),
            "postgres://u:********@h:5432/db?sslmode=disable"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("host=h password=secret user=u"),
            "host=h password=******** user=u"
        );
    }

    #[tokio::test]
    async fn pause_gate_waits_for_resume() {
        pause(Some("t-gate"));
        assert!(is_paused(Some("t-gate")));
        assert!(!is_paused(Some("other")));
        let h = tokio::spawn(async { wait_while_paused(Some("t-gate")).await });
        crate::clock::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!h.is_finished());
        resume(Some("t-gate"));
        crate::clock::timeout(std::time::Duration::from_secs(1), h)
            .await
            .unwrap()
            .unwrap();
    }
}
