//! TLS that the docs promise, against real servers with certificates made here by
//! `openssl`: `rediss://` (a `redis-server --tls-port`, with and without client
//! certificates; a whole manager and its agent's own login over it), an `https://`
//! management API trusted through `RABBITMQ_MANAGEMENT_CA_FILE` (the broker's own API
//! behind a TLS front made here), and a Docker host on `tcp://` with
//! `DOCKER_TLS_VERIFY` (a second dockerd listening with `--tlsverify`, its own data
//! root, exec root and pid file, started and stopped here).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use agent_manager::config::DockerConfig;
use agent_manager::runtime::engine::connect_docker;
use agent_manager::store::Store;
use common::TestEnv;

/// A directory of its own, removed in Drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        // Short: containerd's socket under a dockerd's exec root must fit 108 bytes.
        let dir = PathBuf::from(format!(
            "/tmp/am-{tag}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (scripts/services.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`<ca>.pem`, `<ca>.key`) in `dir`.
fn make_ca(dir: &Path, ca: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.pem"),
        ],
    );
}

/// A certificate `<name>.pem` with key `<name>.key`, signed by CA `ca`, for 127.0.0.1
/// and localhost, usable as `usage` (`serverAuth` or `clientAuth`).
fn make_cert(dir: &Path, ca: &str, name: &str, usage: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\n\
             basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        ),
    )
    .expect("extensions");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A process of the test's, killed (and waited for) in Drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A redis-server speaking only TLS on a port of its own; `clients` is its
/// `tls-auth-clients` (`yes`, `no`, `optional`).
fn redis_tls(dir: &TempDir, clients: &str) -> (Server, u16) {
    let port = common::free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--tls-port")
        .arg(port.to_string())
        .arg("--tls-cert-file")
        .arg(dir.str("server.pem"))
        .arg("--tls-key-file")
        .arg(dir.str("server.key"))
        .arg("--tls-ca-cert-file")
        .arg(dir.str("ca.pem"))
        .args(["--tls-auth-clients", clients])
        .arg("--dir")
        .arg(dir.0.display().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let server = Server(child);
    let until = Instant::now() + Duration::from_secs(15);
    while !port_open(port) {
        assert!(
            Instant::now() < until,
            "redis-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (server, port)
}

fn pki(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    make_ca(&dir.0, "ca");
    make_cert(&dir.0, "ca", "server", "serverAuth");
    make_cert(&dir.0, "ca", "client", "clientAuth");
    // A client certificate the servers do not trust.
    make_ca(&dir.0, "rogue-ca");
    make_cert(&dir.0, "rogue-ca", "rogue", "clientAuth");
    dir
}

fn config_with(vars: &[(&str, String)]) -> agent_manager::Config {
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    common::test_config("tls", &vars)
}

async fn redis_ping(config: &agent_manager::Config) -> Result<(), String> {
    let store = Store::connect(&config.redis)
        .await
        .map_err(|e| e.to_string())?;
    store.ping().await.map_err(|e| e.to_string())
}

#[actix_rt::test]
async fn rediss_urls_work_with_the_configured_ca_and_client_certificate() {
    let dir = pki("rtls");
    let (_strict, strict_port) = redis_tls(&dir, "yes");
    let url = format!("rediss://127.0.0.1:{strict_port}/0");
    let full = config_with(&[
        ("REDIS_URL", url.clone()),
        ("REDIS_TLS_CA_FILE", dir.str("ca.pem")),
        ("REDIS_TLS_CERT_FILE", dir.str("client.pem")),
        ("REDIS_TLS_KEY_FILE", dir.str("client.key")),
        ("REDIS_TIMEOUT_MS", "3000".into()),
    ]);
    redis_ping(&full)
        .await
        .expect("TLS with the CA and a client certificate");
    // Without a client certificate the server refuses; with one it does not trust too;
    // without the CA the client refuses the server; plain text gets nowhere.
    let mut no_client = full.clone();
    no_client.redis.tls_cert_file.clear();
    no_client.redis.tls_key_file.clear();
    assert!(
        redis_ping(&no_client).await.is_err(),
        "no client certificate"
    );
    let mut rogue = full.clone();
    rogue.redis.tls_cert_file = dir.str("rogue.pem");
    rogue.redis.tls_key_file = dir.str("rogue.key");
    assert!(
        redis_ping(&rogue).await.is_err(),
        "an untrusted client certificate"
    );
    let mut no_ca = full.clone();
    no_ca.redis.tls_ca_file.clear();
    let e = redis_ping(&no_ca).await.expect_err("an unknown CA");
    assert!(!e.is_empty());
    let mut plain = full.clone();
    plain.redis.url = format!("redis://127.0.0.1:{strict_port}/0");
    assert!(
        redis_ping(&plain).await.is_err(),
        "plain text to a TLS port"
    );
}

#[actix_rt::test]
async fn a_manager_and_its_agents_run_over_rediss() {
    let dir = pki("rmgr");
    let (_server, port) = redis_tls(&dir, "optional");
    let url = format!("rediss://127.0.0.1:{port}/0");
    let ca = dir.str("ca.pem");
    let env = TestEnv::start(&[
        ("REDIS_URL", url.as_str()),
        ("REDIS_TLS_CA_FILE", ca.as_str()),
        // The agents get the manager's own (TLS) Redis, not the tests' gateway one.
        ("AGENT_REDIS_URL", ""),
    ])
    .await;
    let id = env.agent_id("tls");
    env.create_running(&id).await;
    // The record is in the TLS Redis, and the agent's own login works there over TLS.
    let c = env.inspect(&id).await.expect("container");
    let vars = c.config.and_then(|c| c.env).unwrap_or_default();
    let agent_url = vars
        .iter()
        .find_map(|kv| kv.strip_prefix("REDIS_URL="))
        .expect("REDIS_URL")
        .to_string();
    assert!(agent_url.starts_with(&format!("rediss://agent-{id}:")));
    assert!(agent_url.ends_with(&format!("@127.0.0.1:{port}/0")));
    let mut as_agent = env.config.redis.clone();
    as_agent.url = agent_url;
    let client = agent_manager::store::client(&as_agent).expect("a TLS client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("the agent logs in over TLS");
    let record: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(env.key(&format!("agent:{id}")))
        .query_async(&mut conn)
        .await
        .expect("its record");
    assert_eq!(record["status"], "running");
    let refused: redis::RedisResult<Vec<String>> =
        redis::cmd("KEYS").arg("*").query_async(&mut conn).await;
    assert!(
        matches!(&refused, Err(e) if e.to_string().to_lowercase().contains("noperm")),
        "{refused:?}"
    );
    env.finish().await;
}

/// An `https://127.0.0.1:<port>` front of the management API at `backend`
/// (`host:port`), with `dir`'s server certificate (signed by its `ca`); it serves while
/// the test's runtime runs.
async fn https_front(dir: &TempDir, backend: String) -> u16 {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(dir.path("server.pem"))
        .expect("server.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("the server certificate");
    let key = PrivateKeyDer::from_pem_file(dir.path("server.key")).expect("server.key");
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("the server's certificate and key");
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("its address").port();
    actix_rt::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, backend) = (acceptor.clone(), backend.clone());
            actix_rt::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut api) = tokio::net::TcpStream::connect(backend.as_str()).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut api).await;
                }
            });
        }
    });
    port
}

#[actix_rt::test]
async fn an_https_management_api_is_trusted_through_its_ca_file() {
    use agent_manager::broker::management::Management;
    let dir = pki("mtls");
    let config = config_with(&[]);
    let plain = url::Url::parse(&config.rabbitmq.management_url()).expect("its URL");
    let backend = format!(
        "{}:{}",
        plain.host_str().expect("a host"),
        plain.port_or_known_default().expect("a port")
    );
    let port = https_front(&dir, backend).await;
    let mut https = plain.clone();
    https.set_scheme("https").expect("https");
    https.set_port(Some(port)).expect("the front's port");
    let timeout = Duration::from_secs(10);
    let trusting = Management::new(https.as_str(), Some(&dir.str("ca.pem")), timeout)
        .expect("a client with the CA file");
    assert_eq!(trusting.endpoint(), format!("https://127.0.0.1:{port}"));
    let users = trusting
        .users()
        .await
        .expect("the API over https, its certificate's CA trusted");
    assert!(
        users.iter().any(|u| u.name == plain.username()),
        "{users:?}"
    );
    // Without the CA file the certificate is not accepted, and the error says so (so
    // that `check` can name RABBITMQ_MANAGEMENT_CA_FILE), without the password.
    let doubting = Management::new(https.as_str(), None, timeout).expect("a client");
    let e = doubting
        .users()
        .await
        .expect_err("a certificate of an unknown CA");
    let text = e.to_string();
    assert!(
        text.contains("invalid peer certificate") && text.contains("UnknownIssuer"),
        "{text}"
    );
    let password = plain.password().expect("a password");
    assert!(!text.contains(&format!(":{password}@")), "{text}");
    // A CA file that cannot be read is refused when the client is made.
    let missing = Management::new(https.as_str(), Some(&dir.str("absent.pem")), timeout)
        .err()
        .expect("an unreadable CA file");
    assert!(missing.to_string().contains("absent.pem"), "{missing}");
}

/// A bridge of the TLS dockerd's own. Not `--bridge=none`: a dockerd started with it
/// deletes the host's `docker0` (it shares the host's network namespace), and the
/// host's daemon then fails every build and `--network bridge` container until it is
/// restarted (seen when the suite ran twice in a row: tests/cluster.rs's image build).
struct OwnBridge(String);

impl OwnBridge {
    fn make(port: u16) -> OwnBridge {
        let name = format!("amtls{port}");
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["link", "add", &name, "type", "bridge"]);
        let addr = format!("10.254.{}.1/24", port % 250);
        ip(&["addr", "add", &addr, "dev", &name]);
        OwnBridge(name)
    }
}

impl Drop for OwnBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// A dockerd of the test's own, listening only on `tcp://127.0.0.1:<port>` with
/// `--tlsverify` (a bridge of its own, no iptables, nothing shared with the host's
/// daemon).
fn dockerd_tls(dir: &TempDir) -> (Server, u16, OwnBridge) {
    let port = common::free_port();
    let bridge = OwnBridge::make(port);
    std::fs::write(dir.path("daemon.json"), "{}").expect("daemon.json");
    let log = std::fs::File::create(dir.path("dockerd.log")).expect("log");
    let child = Command::new("dockerd")
        .arg("--config-file")
        .arg(dir.str("daemon.json"))
        .arg("--data-root")
        .arg(dir.str("data"))
        .arg("--exec-root")
        .arg(dir.str("exec"))
        .arg("--pidfile")
        .arg(dir.str("docker.pid"))
        .arg("-H")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--tlsverify")
        .arg("--tlscacert")
        .arg(dir.str("ca.pem"))
        .arg("--tlscert")
        .arg(dir.str("server.pem"))
        .arg("--tlskey")
        .arg(dir.str("server.key"))
        .arg(format!("--bridge={}", bridge.0))
        .args(["--iptables=false", "--ip-masq=false"])
        .args(["--storage-driver=vfs", "--log-level=warn"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dockerd");
    (Server(child), port, bridge)
}

/// The client certificates as Docker names them, in a directory of their own.
fn docker_cert_dir(dir: &TempDir, name: &str, cert: &str) -> String {
    let certs = dir.path(name);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(dir.path("ca.pem"), certs.join("ca.pem")).unwrap();
    std::fs::copy(dir.path(&format!("{cert}.pem")), certs.join("cert.pem")).unwrap();
    std::fs::copy(dir.path(&format!("{cert}.key")), certs.join("key.pem")).unwrap();
    certs.display().to_string()
}

#[actix_rt::test]
async fn a_tcp_docker_host_is_spoken_to_with_tls_client_certificates() {
    let dir = pki("dtls");
    let good = docker_cert_dir(&dir, "good", "client");
    let rogue = docker_cert_dir(&dir, "rogue-certs", "rogue");
    let (daemon, port, _bridge) = dockerd_tls(&dir);
    let host = format!("tcp://127.0.0.1:{port}");
    let docker = |tls_verify: bool, cert_path: &str| DockerConfig {
        tls_verify,
        cert_path: cert_path.to_string(),
        ..common::test_config("dtls", &[("DOCKER_HOST", host.as_str())]).docker
    };
    // Up when it answers over TLS with our client certificate.
    let client = connect_docker(&docker(true, &good), 10).expect("a TLS client");
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), client.version()).await {
            Ok(Ok(v)) => {
                assert!(v.version.is_some());
                break;
            }
            other => {
                let log = std::fs::read_to_string(dir.path("dockerd.log")).unwrap_or_default();
                assert!(
                    Instant::now() < until,
                    "the TLS dockerd did not answer: {other:?}\n{log}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    client
        .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
        .await
        .expect("a call over TLS");
    // Plain HTTP, a client certificate it does not trust: refused.
    let plain = connect_docker(&docker(false, &good), 10).expect("a plain client");
    let answer = tokio::time::timeout(Duration::from_secs(10), plain.ping()).await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "plain HTTP to a --tlsverify daemon"
    );
    let untrusted = connect_docker(&docker(true, &rogue), 10).expect("a client");
    let answer = tokio::time::timeout(Duration::from_secs(10), untrusted.ping()).await;
    assert!(
        !matches!(answer, Ok(Ok(_))),
        "an untrusted client certificate"
    );
    // The operator's check, configured as Docker's own CLI is.
    let bin = env!("CARGO_BIN_EXE_agent-manager");
    let mut cmd = Command::new(bin);
    cmd.args(["check", "--services-only", "-o", "json"])
        .env_remove("AGENT_MANAGER_CONFIG")
        .env("DOCKER_HOST", &host)
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", &good);
    let out = tokio::task::spawn_blocking(move || {
        common::run_bounded(cmd, Duration::from_secs(60), "agent-manager check")
    })
    .await
    .expect("check");
    let checks: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", out.stdout, out.stderr));
    let docker_check = checks
        .as_array()
        .and_then(|a| a.iter().find(|c| c["check"] == "docker"))
        .expect("a docker check");
    assert_eq!(docker_check["status"], "ok", "{checks}");
    drop(daemon);
}
