//! Client authentication: who may connect, checked against the app DB.
//!
//! The `auth.query` returns a verifier and the tenants the user may use; the
//! verifier's kind picks the exchange (SCRAM-SHA-256, MD5, or cleartext for
//! bcrypt). Unknown users run a mock exchange and fail exactly like a wrong
//! password, so the proxy never reveals which logins exist.

pub mod exchange;
pub mod query;
pub mod throttle;
pub mod verifier;

pub use exchange::{authenticate, AuthOutcome};
pub use query::{AuthQuery, UserRecord};
pub use throttle::Throttle;
pub use verifier::Verifier;
