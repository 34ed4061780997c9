//! The operator's side of pgtenant: the psql admin console (virtual database
//! `pgtenant`) and the HTTP endpoints (/metrics, /healthz, /readyz).

pub mod console;
pub mod http;

/// What the console shows about one connected client (SHOW CLIENTS).
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub user: String,
    pub database: String,
    pub peer: std::net::SocketAddr,
    pub connected_at: std::time::SystemTime,
    pub tls: bool,
}
