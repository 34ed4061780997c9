//! The `pgtenant` command line: run the proxy and the tools around it.

use clap::{Parser, Subcommand};
use pgtenant::config::Config;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "pgtenant",
    version,
    about = "Transparent PostgreSQL routing proxy for dual-database multi-tenant apps"
)]
struct Cli {
    /// Configuration file (TOML); PGTENANT_* environment variables override it.
    #[arg(long, short, global = true, env = "PGTENANT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve,
    /// Read a password on stdin, print a SCRAM-SHA-256 verifier for the users table.
    Passwd,
    /// Read a secret on stdin, print its encrypted form (iv:authTag:ciphertext).
    Encrypt,
    /// Show how a statement would be routed, or the error a client would get.
    Explain {
        /// Login whose allowed tenants apply (looked up with auth.query).
        #[arg(long)]
        user: Option<String>,
        /// Tenant set in the session (as with SET app.tenant_id).
        #[arg(long)]
        tenant: Option<String>,
        sql: String,
    },
    /// Manage tenants in the app DB registry.
    Tenant {
        #[command(subcommand)]
        command: pgtenant::run::TenantOp,
    },
    /// Re-encrypt every tenant secret with ENCRYPTION_KEY (old key in ENCRYPTION_KEY_PREVIOUS).
    RotateKey,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Passwd => {
            let pw = read_stdin_secret();
            if pw.is_empty() {
                eprintln!("pgtenant passwd: empty password on stdin");
                return ExitCode::from(2);
            }
            println!("{}", pgtenant::auth::verifier::scram_verifier(&pw));
            ExitCode::SUCCESS
        }
        Command::Encrypt => {
            let secrets = match pgtenant::registry::SecretBox::from_env() {
                Ok(s) => s,
                Err(e) => return fail(&format!("ENCRYPTION_KEY: {e}")),
            };
            let secret = read_stdin_secret();
            match secrets.encrypt(&secret) {
                Ok(s) => {
                    println!("{s}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        command => {
            let config = match Config::load(cli.config.as_deref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("pgtenant: {e}");
                    return ExitCode::from(2);
                }
            };
            // One thread here; `serve` starts its session workers itself
            // (src/workers.rs explains why not tokio's multi-thread runtime).
            let rt = match pgtenant::clock::event_loop() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("pgtenant: cannot start the event loop: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(async move {
                match command {
                    Command::Serve => pgtenant::run::serve(config).await,
                    Command::Explain { user, tenant, sql } => {
                        pgtenant::run::explain(config, user, tenant, sql).await
                    }
                    Command::Tenant { command } => pgtenant::run::tenant(config, command).await,
                    Command::RotateKey => pgtenant::run::rotate_key(config).await,
                    Command::Passwd | Command::Encrypt => unreachable!(),
                }
            })
        }
    }
}

fn read_stdin_secret() -> String {
    let mut s = String::new();
    let _ = std::io::stdin().read_to_string(&mut s);
    s.trim_end_matches(['\n', '\r']).to_string()
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("pgtenant: {msg}");
    ExitCode::from(1)
}
