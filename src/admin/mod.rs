//! The operator's side of pgtenant: the psql admin console (virtual database
//! `pgtenant`) and the HTTP endpoints (/metrics, /healthz, /readyz).

pub mod console;
pub mod http;
