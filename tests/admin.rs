//! Operations: the admin console (psql and the real PgBouncer exporter), the
//! metrics/health HTTP endpoints, and the deployment files (manifests,
//! dashboard) checked against a real /metrics scrape.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const PW: &str = "user-pw-1";
const ADMIN: &str = "admin@example.com";
const ADMIN_PW: &str = "admin-pw-9";

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Polls until `path` answers `want`; panics with the last answer otherwise.
fn wait_http(port: u16, path: &str, want: u16, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut last = String::new();
    while Instant::now() < deadline {
        match http_get(port, path) {
            Ok((code, body)) if code == want => return body,
            Ok((code, body)) => last = format!("{code}: {body}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{path} never answered {want}; last: {last}");
}

/// psql against the admin console with CSV output (header included).
fn console(p: &Proxy, sql: &str) -> (bool, String, String) {
    console_db(p, "pgtenant", sql)
}

fn console_db(p: &Proxy, db: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "--csv",
            "-v",
            "ON_ERROR_STOP=1",
            "-v",
            "VERBOSITY=verbose",
        ])
        .arg(p.conninfo(ADMIN, ADMIN_PW, db))
        .args(["-c", sql])
        .output()
        .expect("psql");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn header(csv: &str) -> Vec<String> {
    csv.lines()
        .next()
        .unwrap_or("")
        .split(',')
        .map(|c| c.trim_matches('"').to_string())
        .collect()
}

fn assert_columns(p: &Proxy, cmd: &str, cols: &[&str]) -> String {
    let (ok, out, err) = console(p, cmd);
    assert!(ok, "{cmd}: {err}\n{}", p.log_text());
    let h = header(&out);
    for c in cols {
        assert!(h.iter().any(|x| x == c), "{cmd}: no column {c} in {h:?}");
    }
    out
}

/// Kills the child on drop.
struct Reaper(Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Metric names queried by the dashboard and the alert rules.
fn queried_metrics() -> BTreeSet<String> {
    let mut text =
        std::fs::read_to_string(deploy("deploy/grafana/pgtenant-dashboard.json")).unwrap();
    text.push_str(&std::fs::read_to_string(deploy("deploy/prometheus/alerts.yml")).unwrap());
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("pgtenant_") {
        let start = i + pos;
        let boundary = start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b'-');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    // Not metric names: the dashboard's uid and file names.
    names.retain(|n| n != "pgtenant_" && !n.ends_with("_dashboard"));
    names
}

const SHIM: &str = r#"
import sys, psycopg2
_connect = psycopg2.connect
def connect(*args, **kwargs):
    # The exporter hard-codes database='pgbouncer'; pgtenant's console is 'pgtenant'.
    kwargs['database'] = 'pgtenant'
    return _connect(*args, **kwargs)
psycopg2.connect = connect
sys.argv = ['prometheus-pgbouncer-exporter'] + sys.argv[1:]
from prometheus_pgbouncer_exporter.cli import main
main()
"#;

#[test]
fn console_metrics_and_the_pgbouncer_exporter() {
    let f = Fleet::start();
    add_user(&f.app, "app", ADMIN, &scram(ADMIN_PW), None);
    add_user(&f.app, "app", "svc@example.com", &scram(PW), None);
    add_user(
        &f.app,
        "app",
        "ann@example.com",
        &scram(PW),
        Some(&["acme"]),
    );
    let mport = free_port();
    let p = f.proxy(&format!("[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"));
    wait_http(mport, "/healthz", 200, 10);
    // Ready once the app DB answers and the registry is loaded.
    let ready = wait_http(mport, "/readyz", 200, 20);
    assert!(ready.contains("registry: loaded (3 tenants)"), "{ready}");

    // Some traffic: a tenant statement, a backend error, a refusal.
    let (ok, out, err) = p.psql(
        "svc@example.com",
        PW,
        "app",
        "SELECT count(*) FROM accounts WHERE tenant_id = 'acme'",
    );
    assert!(ok, "{err}\n{}", p.log_text());
    assert_eq!(out, "0");
    let (ok, _, err) = p.psql("svc@example.com", PW, "app", "SELECT 1/0");
    assert!(!ok && err.contains("22012"), "{err}");
    let (ok, _, err) = p.psql(
        "ann@example.com",
        PW,
        "app",
        "SELECT * FROM accounts WHERE tenant_id = 'globex'",
    );
    assert!(!ok && err.contains("42501"), "{err}");

    // Only admin_users get the console: 42501 before authentication.
    let (ok, _, err) = p.psql("svc@example.com", PW, "pgtenant", "SHOW POOLS");
    assert!(
        !ok && err.contains("may not use the pgtenant admin console"),
        "{err}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(tokio_postgres::connect(
            &p.conninfo("svc@example.com", PW, "pgtenant"),
            tokio_postgres::NoTls,
        ))
        .err()
        .expect("a non-admin got the console");
    assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{e:?}");

    // PgBouncer's SHOW commands with PgBouncer's columns.
    let pools = assert_columns(
        &p,
        "SHOW POOLS",
        &[
            "database",
            "user",
            "cl_active",
            "cl_waiting",
            "sv_active",
            "sv_idle",
            "sv_used",
            "maxwait",
            "maxwait_us",
            "pool_mode",
        ],
    );
    assert!(pools.contains("/shared"), "{pools}");
    assert!(pools.contains("/app"), "{pools}");
    let stats = assert_columns(
        &p,
        "SHOW STATS;",
        &[
            "database",
            "total_xact_count",
            "total_query_count",
            "total_received",
            "total_sent",
            "total_xact_time",
            "total_query_time",
            "total_wait_time",
            "avg_xact_count",
            "avg_query_count",
            "avg_recv",
            "avg_sent",
            "avg_wait_time",
            "total_requests",
        ],
    );
    assert!(stats.contains("/shared"), "{stats}");
    assert_columns(
        &p,
        "show stats_totals",
        &[
            "database",
            "xact_count",
            "query_count",
            "bytes_received",
            "bytes_sent",
            "wait_time",
        ],
    );
    assert_columns(
        &p,
        "SHOW STATS_AVERAGES",
        &["database", "xact_count", "query_time"],
    );
    assert_columns(
        &p,
        "SHOW CLIENTS",
        &[
            "type",
            "user",
            "database",
            "state",
            "addr",
            "port",
            "connect_time",
            "tls",
        ],
    );
    assert_columns(
        &p,
        "SHOW SERVERS",
        &["type", "user", "database", "state", "addr", "port"],
    );
    assert_columns(
        &p,
        "SHOW DATABASES",
        &[
            "name",
            "host",
            "port",
            "database",
            "pool_size",
            "reserve_pool",
            "pool_mode",
            "paused",
        ],
    );
    let lists = assert_columns(&p, "SHOW LISTS", &["list", "items"]);
    assert!(lists.contains("used_clients"), "{lists}");
    assert_columns(&p, "SHOW USERS", &["name", "pool_mode"]);
    let cfg = assert_columns(
        &p,
        "SHOW CONFIG",
        &["key", "value", "default", "changeable"],
    );
    assert!(cfg.contains("app_db.url"), "{cfg}");
    assert!(
        !cfg.contains(SUPERUSER_PASSWORD),
        "SHOW CONFIG leaks the app DB password: {cfg}"
    );
    let version = assert_columns(&p, "SHOW VERSION", &["version"]);
    assert!(version.contains("pgtenant"), "{version}");

    // pgtenant's own: tenants (never secrets), routes, EXPLAIN ROUTE.
    let tenants = assert_columns(
        &p,
        "SHOW TENANTS",
        &[
            "id",
            "name",
            "status",
            "host",
            "database",
            "pool",
            "clients",
            "last_error",
        ],
    );
    for t in ["acme", "globex", "initech"] {
        assert!(tenants.contains(t), "{tenants}");
    }
    assert!(tenants.contains("pgtenant_data@"), "{tenants}");
    assert!(
        !tenants.contains(DATA_ROLE_PW),
        "SHOW TENANTS leaks the data role password"
    );
    assert!(!tenants.contains(&f.key), "SHOW TENANTS leaks the key");
    let routes = assert_columns(
        &p,
        "SHOW ROUTES",
        &["target", "pool", "tenants", "query_count"],
    );
    assert!(routes.contains("tenant (shared data source)"), "{routes}");
    assert!(routes.contains("\napp,"), "{routes}");
    let sql = "SELECT * FROM accounts WHERE tenant_id = 'acme'";
    let (ok, out, err) = console(&p, &format!("EXPLAIN ROUTE {sql};"));
    assert!(ok, "{err}");
    assert_eq!(header(&out), vec!["route"]);
    let cli = Command::new(env!("CARGO_BIN_EXE_pgtenant"))
        .args(["explain", sql])
        .env("PGTENANT_APP_DB__URL", f.app.url("app"))
        .env("ENCRYPTION_KEY", &f.key)
        .output()
        .unwrap();
    let cli = String::from_utf8_lossy(&cli.stdout).to_string();
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(!rows.is_empty() && out.contains("acme"), "{out}");
    assert_eq!(
        rows.len(),
        cli.lines().count(),
        "console:\n{out}\ncli:\n{cli}"
    );

    // Errors: unknown commands, extended protocol, unknown tenants, KILL.
    let (ok, _, err) = console(&p, "SHOW NONSENSE");
    assert!(
        !ok && err.contains("42601") && err.contains("SHOW POOLS"),
        "{err}"
    );
    let (ok, _, err) = console(&p, "DROP TABLE x");
    assert!(!ok && err.contains("42601"), "{err}");
    let (ok, _, err) = console(&p, "PAUSE nosuchtenant");
    assert!(!ok && err.contains("3D000"), "{err}");
    let (ok, _, err) = console(&p, "KILL nosuchtenant");
    assert!(!ok && err.contains("3D000"), "{err}");
    let (ok, _, err) = console(&p, "PAUSE acme");
    assert!(ok, "{err}");
    let (ok, out, _) = console(&p, "SHOW TENANTS");
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with("acme,") && l.contains(",yes,")),
        "{out}"
    );
    let (ok, _, err) = console(&p, "RESUME acme");
    assert!(ok, "{err}");
    let (ok, out, err) = console(&p, "SHOW VERSION; SHOW LISTS");
    assert!(ok && out.contains("dns_pending"), "{out}{err}");
    let (ok, _, err) = console(&p, "RELOAD");
    assert!(ok, "{err}");
    assert!(
        err.contains("reloaded from") && err.contains("pgtenant.toml"),
        "{err}"
    );
    // Extended protocol is refused, not hung.
    rt.block_on(async {
        let c = p.client(ADMIN, ADMIN_PW, "pgtenant").await;
        let e = c.query("SHOW POOLS", &[]).await.unwrap_err();
        assert_eq!(e.code().map(|c| c.code()), Some("0A000"), "{e:?}");
        let rows = c.simple_query("SHOW VERSION").await.unwrap();
        assert!(rows.len() >= 2);
    });

    // /metrics: pool, registry, parser values at scrape time; the dashboard's metrics.
    let (code, metrics) = http_get(mport, "/metrics").unwrap();
    assert_eq!(code, 200);
    for m in [
        "pgtenant_registry_tenants{status=\"active\"} 3",
        "pgtenant_registry_loaded 1",
        "pgtenant_pool_queries_total{pool=\"pgtenant_data@",
        "pgtenant_pool_server_connections{pool=",
        "pgtenant_pool_size{mode=\"transaction\",pool=",
        "pgtenant_auth_attempts_total{method=\"scram-sha-256\",result=\"success\"}",
        "pgtenant_refused_statements_total{sqlstate=\"42501\"}",
        "pgtenant_backend_errors_total{class=\"22\"}",
        "pgtenant_parse_cache_misses_total ",
    ] {
        assert!(metrics.contains(m), "no {m} in\n{metrics}");
    }
    assert!(!metrics.contains(DATA_ROLE_PW) && !metrics.contains(SUPERUSER_PASSWORD));
    let missing: Vec<String> = queried_metrics()
        .into_iter()
        .filter(|m| !metrics.contains(&format!("# TYPE {m} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard/alerts query metrics absent from /metrics: {missing:?}\n{metrics}"
    );
    assert!(queried_metrics().len() >= 20, "{:?}", queried_metrics());

    // The real prometheus-pgbouncer-exporter against the console.
    let eport = free_port();
    let (direct, _, _) = console_db(&p, "pgbouncer", "SHOW VERSION");
    let mut cmd = if direct {
        Command::new("/usr/bin/prometheus-pgbouncer-exporter")
    } else {
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-c", SHIM]);
        c
    };
    cmd.args(["--host", "127.0.0.1", "--port", &eport.to_string()])
        .args([
            "--pgbouncer-host",
            "127.0.0.1",
            "--pgbouncer-port",
            &p.port.to_string(),
        ])
        .args(["--pgbouncer-user", ADMIN])
        .env("PGPASSWORD", ADMIN_PW)
        .env("PGSSLMODE", "disable")
        .env_remove("CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut exporter = Reaper(cmd.spawn().expect("prometheus-pgbouncer-exporter"));
    let deadline = Instant::now() + Duration::from_secs(20);
    let scraped = loop {
        if let Ok(Some(status)) = exporter.0.try_wait() {
            let mut err = String::new();
            exporter
                .0
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .ok();
            panic!("exporter exited with {status}: {err}\n{}", p.log_text());
        }
        if let Ok((200, body)) = http_get(eport, "/metrics") {
            if body.contains("pgbouncer_") {
                break body;
            }
        }
        assert!(Instant::now() < deadline, "exporter never served /metrics");
        std::thread::sleep(Duration::from_millis(200));
    };
    for m in [
        "pgbouncer_active_clients{database=\"",
        "pgbouncer_waiting_clients{database=\"",
        "pgbouncer_requests_total{database=\"",
        "pgbouncer_received_bytes_total{database=\"",
        "pgbouncer_query_microseconds_total{database=\"",
        "pgbouncer_pool_size{database=\"",
        "pgbouncer_reserve_pool{database=\"",
        "pgbouncer_databases ",
        "pgbouncer_used_servers ",
    ] {
        assert!(scraped.contains(m), "exporter output lacks {m}:\n{scraped}");
    }
    assert!(scraped.contains("/shared"), "{scraped}");
    // A second scrape on the same console connection works too.
    let (code, _) = http_get(eport, "/metrics").unwrap();
    assert_eq!(code, 200);
    drop(exporter);

    // SHUTDOWN: readiness fails at once, sessions drain, the process exits.
    let mut sleeper = Reaper(
        Command::new("psql")
            .arg(p.conninfo("svc@example.com", PW, "app"))
            .args(["-X", "-c", "SELECT pg_sleep(3)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(700));
    let (_, _, err) = console(&p, "SHUTDOWN");
    assert!(!err.contains("ERROR"), "{err}");
    let body = wait_http(mport, "/readyz", 503, 5);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(http_get(mport, "/healthz").unwrap().0, 200);
    let status = sleeper.0.wait().unwrap();
    assert!(status.success(), "the running query was cut by SHUTDOWN");
    let mut p = p;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(st)) = p.child.try_wait() {
            assert!(st.success(), "{st}\n{}", p.log_text());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no exit after SHUTDOWN:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readiness_fails_without_the_app_db() {
    let mport = free_port();
    let dead = free_port();
    let p = Proxy::start(
        &format!(
            "[app_db]\nurl = \"postgres://postgres:pw@127.0.0.1:{dead}/app\"\n[metrics]\nlisten = \"127.0.0.1:{mport}\"\n"
        ),
        &[],
    );
    assert_eq!(wait_http(mport, "/healthz", 200, 10), "ok\n");
    let (code, body) = http_get(mport, "/readyz").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("app_db: unreachable"), "{body}");
    assert!(body.contains("no ENCRYPTION_KEY"), "{body}");
    let (code, body) = http_get(mport, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("pgtenant_build_info{version="), "{body}");
    assert!(body.contains("pgtenant_registry_loaded 0"), "{body}");
    assert_eq!(http_get(mport, "/nope").unwrap().0, 404);
    // Junk never takes the endpoint down.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mport)).unwrap();
    s.write_all(b"\x00\x01garbage\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert_eq!(http_get(mport, "/healthz").unwrap().0, 200);
    drop(p);
}

/// YAML documents as JSON, through PyYAML (no YAML crate in the build).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import sys, yaml, json; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .expect("python3 with PyYAML");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn load_config_text(toml: &str) -> pgtenant::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgtenant.toml");
    std::fs::write(&path, toml).unwrap();
    pgtenant::config::Config::load(Some(&path)).unwrap_or_else(|e| panic!("{e}:\n{toml}"))
}

#[test]
fn deployment_files_are_consistent() {
    let k8s = deploy("deploy/kubernetes");
    let mut objects: Vec<Value> = Vec::new();
    let kustomization = yaml_docs(&k8s.join("kustomization.yaml"));
    for r in kustomization[0]["resources"].as_array().unwrap() {
        let docs = yaml_docs(&k8s.join(r.as_str().unwrap()));
        assert!(!docs.is_empty(), "{r}");
        objects.extend(docs);
    }
    let find = |kind: &str| -> Value {
        objects
            .iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
            .clone()
    };
    for o in &objects {
        assert!(
            o["apiVersion"].is_string() && o["metadata"]["name"].is_string(),
            "{o}"
        );
    }

    let config_map = find("ConfigMap");
    let config = load_config_text(config_map["data"]["pgtenant.toml"].as_str().unwrap());
    assert_eq!(config.metrics.listen.as_deref(), Some("0.0.0.0:9187"));
    assert!(config.listen.ends_with(":6432"));
    load_config_text(&std::fs::read_to_string(deploy("deploy/pgtenant.example.toml")).unwrap());

    let dep = find("Deployment");
    let spec = &dep["spec"];
    assert!(spec["replicas"].as_i64().unwrap() >= 2);
    let labels = &spec["selector"]["matchLabels"];
    assert_eq!(&spec["template"]["metadata"]["labels"], labels);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let c = &pod["containers"][0];
    let ports: Vec<(String, i64)> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_i64().unwrap(),
            )
        })
        .collect();
    assert!(ports.contains(&("postgres".into(), 6432)));
    assert!(ports.contains(&("metrics".into(), 9187)));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "metrics");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .unwrap();
    assert_eq!(pre_stop[0], "sleep");
    let sleep: u64 = pre_stop[1].as_str().unwrap().parse().unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        grace > sleep + config.shutdown_timeout_secs,
        "grace {grace} must exceed preStop {sleep} + drain {}",
        config.shutdown_timeout_secs
    );
    let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
    let secret = find("Secret");
    let secret_name = secret["metadata"]["name"].as_str().unwrap();
    for key in ["ENCRYPTION_KEY", "APP_DB_PASSWORD"] {
        let e = env
            .iter()
            .find(|e| e["name"] == key)
            .unwrap_or_else(|| panic!("no env {key}"));
        assert_eq!(e["valueFrom"]["secretKeyRef"]["name"], secret_name);
        assert!(
            secret["stringData"][e["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap()]
                .is_string()
        );
    }
    let url = env
        .iter()
        .find(|e| e["name"] == "PGTENANT_APP_DB__URL")
        .unwrap();
    assert!(url["value"]
        .as_str()
        .unwrap()
        .contains("$(APP_DB_PASSWORD)"));
    let url_pos = env
        .iter()
        .position(|e| e["name"] == "PGTENANT_APP_DB__URL")
        .unwrap();
    let pw_pos = env
        .iter()
        .position(|e| e["name"] == "APP_DB_PASSWORD")
        .unwrap();
    assert!(
        pw_pos < url_pos,
        "$(APP_DB_PASSWORD) must be defined before use"
    );
    let cfg_env = env.iter().find(|e| e["name"] == "PGTENANT_CONFIG").unwrap();
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(
        cfg_env["value"].as_str().unwrap(),
        format!("{mount}/pgtenant.toml")
    );
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"],
        config_map["metadata"]["name"]
    );

    let svc = find("Service");
    assert_eq!(&svc["spec"]["selector"], labels);
    let svc_ports: Vec<&str> = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(svc_ports.contains(&"postgres") && svc_ports.contains(&"metrics"));
    let pdb = find("PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    assert!(pdb["spec"]["minAvailable"].as_i64().unwrap() < spec["replicas"].as_i64().unwrap());
    let hpa = find("HorizontalPodAutoscaler");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        dep["metadata"]["name"]
    );
    assert!(hpa["spec"]["minReplicas"].as_i64().unwrap() >= 2);
    let sm = find("ServiceMonitor");
    assert_eq!(
        &sm["spec"]["selector"]["matchLabels"],
        &svc["metadata"]["labels"]
    );
    assert_eq!(sm["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(sm["spec"]["endpoints"][0]["path"], "/metrics");

    let prom = yaml_docs(&deploy("deploy/prometheus/prometheus.yml"));
    assert!(!prom[0]["scrape_configs"].as_array().unwrap().is_empty());
    let alerts = yaml_docs(&deploy("deploy/prometheus/alerts.yml"));
    assert!(alerts[0]["groups"][0]["rules"].as_array().unwrap().len() >= 3);

    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("deploy/grafana/pgtenant-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dash["uid"].is_string() && dash["title"].is_string());
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = 0;
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "duplicate panel id"
        );
        assert!(panel["gridPos"]["w"].as_i64().unwrap() <= 24);
        if panel["type"] != "row" {
            for t in panel["targets"].as_array().unwrap() {
                let e = t["expr"].as_str().unwrap();
                assert_eq!(e.matches('(').count(), e.matches(')').count(), "{e}");
                assert!(e.contains("pgtenant_"), "{e}");
                exprs += 1;
            }
        }
    }
    assert!(exprs >= 15);

    let unit = std::fs::read_to_string(deploy("deploy/systemd/pgtenant.service")).unwrap();
    for needle in [
        "ExecStart=/usr/local/bin/pgtenant serve",
        "PGTENANT_CONFIG=",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "User=pgtenant",
    ] {
        assert!(unit.contains(needle), "unit lacks {needle}");
    }
    let docker = std::fs::read_to_string(deploy("Dockerfile")).unwrap();
    for needle in [
        "FROM rust:1-bookworm AS builder",
        "libclang-dev",
        "FROM debian:bookworm-slim",
        "USER 10001",
        "EXPOSE 6432 9187",
        "HEALTHCHECK",
        "/healthz",
        "PGTENANT_CONFIG=/etc/pgtenant/pgtenant.toml",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle}");
    }
    // Every COPY source exists.
    for line in docker
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(deploy(src).exists(), "COPY source {src} missing");
        }
    }
    // Path dependencies (the patched pg_query) are in the build context.
    let manifest = std::fs::read_to_string(deploy("Cargo.toml")).unwrap();
    for dir in manifest
        .lines()
        .filter_map(|l| l.split("path = \"").nth(1)?.split('"').next())
    {
        let top = dir.split('/').next().unwrap();
        assert!(
            docker.contains(&format!("COPY {top} ")),
            "Dockerfile does not COPY {top} (path dependency {dir})"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_ends_a_tenants_sessions_and_pause_holds_new_work() {
    let f = Fleet::start();
    add_user(&f.app, "app", ADMIN, &scram(ADMIN_PW), None);
    add_user(&f.app, "app", "svc@example.com", &scram(PW), None);
    let p = f.proxy("");
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    let connect = || p.client("svc@example.com", PW, "app");
    let initech = connect().await;
    let acme = connect().await;
    initech
        .query("SELECT 1 FROM accounts WHERE tenant_id = 'initech'", &[])
        .await
        .unwrap();
    acme.query("SELECT 1 FROM accounts WHERE tenant_id = 'acme'", &[])
        .await
        .unwrap();

    // Idle past the pool's upkeep tick (2 s), which asks every session
    // for the connection it kept: that wake must not use up the one a
    // KILL needs.
    pgtenant::clock::sleep(Duration::from_millis(2500)).await;
    let (ok, out, err) = console(&p, "KILL initech");
    assert!(ok, "{err}");
    assert!(err.is_empty() || !err.contains("ERROR"), "{err}");
    let _ = out;
    // Ended at once, not at its next statement: the socket closes while the
    // client sends nothing.
    let killed = std::time::Instant::now();
    while !initech.is_closed() && killed.elapsed() < Duration::from_secs(3) {
        pgtenant::clock::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        initech.is_closed(),
        "an idle killed session is closed at once"
    );
    assert!(!acme.is_closed());
    let e = initech.query("SELECT 1", &[]).await.unwrap_err();
    assert!(
        e.code().map(|c| c.code()) == Some("57P01") || e.is_closed(),
        "initech's session was ended: {e:?}"
    );
    acme.query("SELECT 1 FROM accounts WHERE tenant_id = 'acme'", &[])
        .await
        .unwrap();

    // PAUSE acme: new acme work waits until RESUME; other tenants run.
    let (ok, _, err) = console(&p, "PAUSE acme");
    assert!(ok, "{err}");
    let waiter = tokio::spawn(async move {
        let t = std::time::Instant::now();
        acme.query("SELECT 1 FROM accounts WHERE tenant_id = 'acme'", &[])
            .await
            .unwrap();
        t.elapsed()
    });
    let other = connect().await;
    other
        .query("SELECT 1 FROM accounts WHERE tenant_id = 'initech'", &[])
        .await
        .unwrap();
    pgtenant::clock::sleep(Duration::from_millis(800)).await;
    assert!(!waiter.is_finished(), "paused tenant's statement must wait");
    let (ok, _, err) = console(&p, "RESUME acme");
    assert!(ok, "{err}");
    let waited = pgtenant::clock::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap();
    assert!(waited >= Duration::from_millis(700), "{waited:?}");
}

/// KILL reaches a session that waits for a connection (held by a PAUSE
/// here, as in a full pool's queue): it ends at once with 57P01, even on
/// its first statement, instead of running that statement once the wait is
/// over.
#[tokio::test(flavor = "multi_thread")]
async fn kill_ends_a_session_waiting_for_a_connection() {
    let f = Fleet::start();
    add_user(&f.app, "app", ADMIN, &scram(ADMIN_PW), None);
    add_user(&f.app, "app", "svc@example.com", &scram(PW), None);
    let p = f.proxy("");
    let c = p.client("svc@example.com", PW, "app").await;
    let (ok, _, err) = console(&p, "PAUSE acme");
    assert!(ok, "{err}");
    let waiter = tokio::spawn(async move {
        c.query("SELECT 1 FROM accounts WHERE tenant_id = 'acme'", &[])
            .await
    });
    pgtenant::clock::sleep(Duration::from_millis(500)).await;
    assert!(!waiter.is_finished(), "a paused tenant's statement waits");
    let (ok, _, err) = console(&p, "KILL acme");
    assert!(ok, "{err}");
    let ended = pgtenant::clock::timeout(Duration::from_secs(3), waiter).await;
    let (ok, _, err) = console(&p, "RESUME acme");
    assert!(ok, "{err}");
    let e = ended
        .expect("the KILL ends the wait")
        .unwrap()
        .expect_err("the killed statement never runs");
    assert_eq!(e.code().map(|c| c.code()), Some("57P01"), "{e:?}");
}
