//! pgtenant: a transparent PostgreSQL wire-protocol proxy that sends each
//! statement of a multi-tenant app to the right database — metadata tables to
//! the application DB, business tables to the tenant's data source.
//!
//! See docs/architecture.md for the path of one statement through these modules.

pub mod admin;
pub mod appdb;
pub mod auth;
pub mod clock;
pub mod config;
pub mod counted;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod protocol;
pub mod registry;
pub mod router;
pub mod run;
pub mod secret;
pub mod server;
pub mod session;
pub mod workers;
