//! Test support: throwaway PostgreSQL clusters from the system's binaries,
//! and a pgtenant process in front of them. No mocks: everything real.
#![allow(dead_code)]

pub mod wire;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SUPERUSER_PASSWORD: &str = "test-superuser-pw";

/// Where initdb/pg_ctl live: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
pub fn pg_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries not found: apt-get install postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("no initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// Runs a server binary, as `postgres` when we are root (PostgreSQL refuses root).
fn pg_command(bin: &str) -> Command {
    let path = pg_bindir().join(bin);
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// A port free now that no other test of this process was given. Asking
/// the kernel for port 0 can hand the same port to two tests in turn (the
/// first one's probe closes before its cluster or proxy binds it): the
/// likely cause of a metrics request once met by a broken pipe. Ports come
/// from a counter instead, below the kernel's ephemeral range (32768 and up
/// on Linux, used by outgoing connections), from a start that differs
/// between test binaries.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < SPAN, "no free port left for this test binary");
        let port = (LOW + (start + n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running throwaway cluster; stopped and deleted on drop.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(&[])
    }

    /// `extra` lines are appended to postgresql.conf.
    pub fn start_with(extra: &[&str]) -> Cluster {
        let dir = tempdir();
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).unwrap();
        chown_postgres(&dir);
        let out = pg_command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 300\nshared_buffers = 32MB\npassword_encryption = 'scram-sha-256'\n",
            dir.display()
        );
        for l in extra {
            conf.push_str(l);
            conf.push('\n');
        }
        let conf_path = data.join("postgresql.auto.conf");
        let mut existing = std::fs::read_to_string(&conf_path).unwrap_or_default();
        existing.push_str(&conf);
        std::fs::write(&conf_path, existing).unwrap();
        chown_postgres(&dir);
        let c = Cluster { dir, port };
        c.pg_ctl_start();
        c
    }

    fn pg_ctl_start(&self) {
        let out = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    pub fn stop(&self) {
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn restart(&self) {
        self.stop();
        self.pg_ctl_start();
    }

    /// A URL for `user`/`password` on database `db`.
    pub fn url_as(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }

    pub fn url(&self, db: &str) -> String {
        self.url_as("postgres", SUPERUSER_PASSWORD, db)
    }

    /// Runs SQL through psql as the superuser; panics on error.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.psql_output(db, sql);
        assert!(
            out.status.success(),
            "psql failed: {}\nSQL: {sql}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn psql_output(&self, db: &str, sql: &str) -> std::process::Output {
        Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGSSLMODE", "disable")
            .output()
            .expect("psql")
    }

    pub fn createdb(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tempdir() -> PathBuf {
    let base = std::env::temp_dir().join(format!(
        "pgtenant-test-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&base).unwrap();
    base
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{}", t & 0xffffff, N.fetch_add(1, Ordering::Relaxed))
}

fn chown_postgres(dir: &Path) {
    if is_root() {
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir)
            .status();
    }
}

/// A pgtenant process; killed on drop. Its stderr log is kept for assertions.
pub struct Proxy {
    pub port: u16,
    pub child: Child,
    pub log: PathBuf,
    pub dir: PathBuf,
}

impl Proxy {
    /// Starts `pgtenant serve` with `config` (TOML; `listen` is added) and `env`.
    pub fn start(config: &str, env: &[(&str, &str)]) -> Proxy {
        let dir = tempdir();
        let port = free_port();
        let cfg_path = dir.join("pgtenant.toml");
        std::fs::write(
            &cfg_path,
            format!("listen = \"127.0.0.1:{port}\"\n{config}"),
        )
        .unwrap();
        let log = dir.join("pgtenant.log");
        let logf = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgtenant"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg_path)
            .env("RUST_LOG", "pgtenant=debug,info")
            .stdout(Stdio::null())
            .stderr(logf);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn pgtenant");
        let mut p = Proxy {
            port,
            child,
            log,
            dir,
        };
        p.wait_ready();
        p
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pgtenant exited with {status}:\n{}", self.log_text());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("pgtenant did not start:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A libpq connection string for `user`/`password` to `db` through the proxy.
    pub fn conninfo(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} sslmode=disable",
            self.port
        )
    }

    /// A tokio-postgres client through the proxy, its connection driven
    /// by a spawned task (call inside a runtime).
    pub async fn client(&self, user: &str, password: &str, db: &str) -> tokio_postgres::Client {
        let (c, conn) =
            tokio_postgres::connect(&self.conninfo(user, password, db), tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("connect through pgtenant: {e}\n{}", self.log_text()));
        tokio::spawn(conn);
        c
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{db}?sslmode=disable",
            urlenc(user),
            urlenc(password),
            self.port
        )
    }

    /// psql through the proxy: (success, stdout, stderr).
    pub fn psql(&self, user: &str, password: &str, db: &str, sql: &str) -> (bool, String, String) {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-v",
                "VERBOSITY=verbose",
            ])
            .arg(self.conninfo(user, password, db))
            .args(["-c", sql])
            .output()
            .expect("psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Sends SIGTERM and waits.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

pub fn urlenc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The app DB schema used by the tests: users with verifiers and allowed
/// tenants, plus the demo tables. `auth_query()` reads it.
pub const APP_SCHEMA: &str = "
CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE NOT NULL, password_hash text NOT NULL, is_service_account boolean NOT NULL DEFAULT false);
CREATE TABLE tenant_users (user_id int REFERENCES users(id), tenant_id text NOT NULL, PRIMARY KEY (user_id, tenant_id));
CREATE TABLE audit_log (id bigserial PRIMARY KEY, actor text, action text, tenant_id text, details jsonb, created_at timestamptz DEFAULT now());
";

pub fn auth_query() -> &'static str {
    "SELECT password_hash AS password, CASE WHEN is_service_account THEN NULL ELSE ARRAY(SELECT tenant_id FROM tenant_users tu WHERE tu.user_id = users.id) END AS tenants FROM users WHERE email = $1"
}

/// Inserts a user with `verifier` and allowed tenants (`None` = service account).
pub fn add_user(app: &Cluster, db: &str, email: &str, verifier: &str, tenants: Option<&[&str]>) {
    let service = tenants.is_none();
    app.psql(
        db,
        &format!(
            "INSERT INTO users (email, password_hash, is_service_account) VALUES ('{email}', '{}', {service})",
            verifier.replace('\'', "''")
        ),
    );
    for t in tenants.unwrap_or(&[]) {
        app.psql(
            db,
            &format!(
                "INSERT INTO tenant_users SELECT id, '{t}' FROM users WHERE email = '{email}'"
            ),
        );
    }
}

pub fn scram(pw: &str) -> String {
    postgres_protocol::password::scram_sha_256(pw.as_bytes())
}

/// The seeds' layout on real clusters: an app DB with the tenants registry,
/// a shared data DB holding tenants `acme` and `globex`, and a dedicated data
/// DB for `initech`; tenants registered with encrypted credentials through
/// the `pgtenant tenant add` CLI.
pub struct Fleet {
    pub app: Cluster,
    pub shared: Cluster,
    pub dedicated: Cluster,
    pub key: String,
}

pub const DATA_ROLE_PW: &str = "data-role-pw-7";

/// Business tables in every data DB; RLS on accounts/invoices/tenant_settings
/// keyed on app.tenant_id, none on contacts (to test refusals).
pub const TENANT_SCHEMA: &str = "
CREATE ROLE pgtenant_data LOGIN PASSWORD 'data-role-pw-7';
CREATE TABLE accounts (id serial PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL);
CREATE TABLE contacts (id serial PRIMARY KEY, tenant_id text NOT NULL, account_id int, email text);
CREATE TABLE invoices (id serial PRIMARY KEY, tenant_id text NOT NULL, account_id int, amount numeric);
CREATE TABLE tenant_settings (tenant_id text PRIMARY KEY, settings jsonb NOT NULL DEFAULT '{}');
CREATE TABLE \"Event Dates\" (id serial PRIMARY KEY, tenant_id text NOT NULL, day date);
DO $$DECLARE t text; BEGIN
  FOREACH t IN ARRAY ARRAY['accounts','invoices','tenant_settings','\"Event Dates\"'] LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY tenant_isolation ON %s USING (tenant_id = current_setting(''app.tenant_id'', true)) WITH CHECK (tenant_id = current_setting(''app.tenant_id'', true))', t);
  END LOOP;
END$$;
GRANT ALL ON ALL TABLES IN SCHEMA public TO pgtenant_data;
GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO pgtenant_data;
";

impl Fleet {
    pub fn start() -> Fleet {
        let app = Cluster::start();
        app.createdb("app");
        app.psql("app", APP_SCHEMA);
        // The migration as one multi-statement query, as the registry tests run it.
        app.psql("app", include_str!("../../deploy/sql/app_db.sql"));
        let shared = Cluster::start();
        shared.createdb("shared");
        shared.psql("shared", TENANT_SCHEMA);
        let dedicated = Cluster::start();
        dedicated.createdb("dedicated");
        dedicated.psql("dedicated", TENANT_SCHEMA);
        let key = "7f".repeat(32);
        let f = Fleet {
            app,
            shared,
            dedicated,
            key,
        };
        f.tenant_cli(&[
            "add",
            "--id",
            "acme",
            "--name",
            "Acme",
            "--subdomain",
            "acme",
            "--url",
            &f.shared.url_as("pgtenant_data", DATA_ROLE_PW, "shared"),
        ]);
        f.tenant_cli(&[
            "add",
            "--id",
            "globex",
            "--name",
            "Globex",
            "--subdomain",
            "globex",
            "--url",
            &f.shared.url_as("pgtenant_data", DATA_ROLE_PW, "shared"),
        ]);
        f.tenant_cli(&[
            "add",
            "--id",
            "initech",
            "--name",
            "Initech",
            "--subdomain",
            "initech",
            "--url",
            &f.dedicated
                .url_as("pgtenant_data", DATA_ROLE_PW, "dedicated"),
        ]);
        f
    }

    /// Runs `pgtenant tenant ARGS` against the app DB; panics on failure.
    pub fn tenant_cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
            .arg("tenant")
            .args(args)
            .env("PGTENANT_APP_DB__URL", self.app.url("app"))
            .env("ENCRYPTION_KEY", &self.key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tenant {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// A proxy over the fleet with `extra` config appended.
    pub fn proxy(&self, extra: &str) -> Proxy {
        let config = format!(
            "[app_db]\nurl = \"{}\"\n[auth]\nquery = \"{}\"\nadmin_users = [\"admin@example.com\"]\n{extra}",
            self.app.url("app"),
            auth_query()
        );
        Proxy::start(&config, &[("ENCRYPTION_KEY", &self.key)])
    }
}

/// Polls `cond` every few milliseconds until it holds (true) or `limit`
/// passes (false): for state that settles asynchronously.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        pgtenant::clock::sleep(Duration::from_millis(5)).await;
    }
}

/// GET over plain HTTP/1.1: (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// The app DB alone, routing off: the test schema, user alice@example.com
/// with password `pw`, a table `items` (rows 1 'one', 2 'two') and a schema
/// `leaked` whose `items` shadows it (row 99 'LEAKED') when on the
/// search_path, a role that could leak, and a pgtenant in front with `extra`
/// appended to its configuration and `env` in its environment.
pub fn passthrough_with_items(pw: &str, extra: &str, env: &[(&str, &str)]) -> (Cluster, Proxy) {
    let app = Cluster::start();
    app.createdb("app");
    app.psql("app", APP_SCHEMA);
    add_user(&app, "app", "alice@example.com", &scram(pw), None);
    app.psql(
        "app",
        "CREATE TABLE items (id int PRIMARY KEY, name text); \
         INSERT INTO items VALUES (1, 'one'), (2, 'two'); \
         CREATE SCHEMA leaked; CREATE TABLE leaked.items (id int, name text); \
         INSERT INTO leaked.items VALUES (99, 'LEAKED'); \
         CREATE ROLE other_role; GRANT ALL ON ALL TABLES IN SCHEMA public TO other_role;",
    );
    let config = format!(
        "[app_db]\nurl = \"{}\"\n[auth]\nquery = \"{}\"\n[routing]\nenabled = false\n{extra}",
        app.url("app"),
        auth_query()
    );
    let proxy = Proxy::start(&config, env);
    (app, proxy)
}
