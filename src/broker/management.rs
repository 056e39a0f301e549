//! RabbitMQ's management HTTP API (the `rabbitmq_management` plugin), for the agents'
//! own users (contract section 7): users with their password hashes and tags, their
//! permissions and topic permissions, and closing a removed user's connections. Every
//! call is bounded by `RABBITMQ_TIMEOUT_S`; `http://` and `https://` endpoints work
//! (TLS through rustls: the system's roots plus `RABBITMQ_MANAGEMENT_CA_FILE`).
//!
//! Hyper's client (the one bollard uses too) rather than actix's `awc`: awc's client is
//! tied to the arbiter that made it (`!Send`), and the lifecycle's ports are `Send`.
//!
//! # Why not `rabbitmq_http_client` (issue 26, measured)
//! The RabbitMQ team's client (0.93.0, `async` + `rustls`, no default features) was put
//! behind this same [`Management`] in a scratch copy: every call here, the CA file (a
//! `reqwest` 0.13 client of our own with our rustls config), the timeout, and
//! [`Management::close_connections`]' 500 handling (`is_server_error`, then
//! `list_user_connections`) all fit. Kept ours, for what it costs and what it lacks:
//! - **It changes the whole process's allocator.** Its base64 dependency (`rbase64`
//!   2.0.3, used to encode password hashes) declares `#[global_allocator] static
//!   GLOBAL: MiMalloc`: linking the crate makes mimalloc, C built by `cc`, the allocator
//!   of every allocation in the manager (the built binary's `__rust_alloc` calls
//!   `MiMalloc::alloc`; without it, `__rdl_alloc`). No feature turns that off.
//! - **Every error captures and resolves a backtrace** (`backtrace::Backtrace::new()`).
//!   A failed call (a 400) took 2.3–2.5 s the first time and 1.3–2.0 ms after, against
//!   0.7–1.4 ms here, and the process grew from 8.6 MB to 295 MB resident (dev build,
//!   `examples/errcost.rs` of the scratch copies; the first error loads the debug info).
//!   `close_connections` meets such errors on purpose, within `RABBITMQ_TIMEOUT_S`.
//! - **It cannot say how a password is hashed.** `UserParams` has no
//!   `hashing_algorithm`; the broker would read our SHA-256 hashes with its own
//!   `password_hashing_module`, and on a SHA-512 broker no agent could log in.
//! - **It lacks what the halt issue needs.** Its connection listings (`Connection`,
//!   `UserConnection`) carry no publish counts or rates, and it offers no raw request:
//!   rates would need an HTTP client of ours beside it. Bulk user deletion, the one
//!   thing it has that we lack, is one `POST users/bulk-delete` through `call`.
//! - **Dependencies and build.** 31 more packages in the normal tree (264 → 295:
//!   `reqwest` 0.13, `tower`, `tower-http`, `ring` — a second crypto library beside
//!   aws-lc-rs, C and assembly — `backtrace` with `gimli`/`object`/`addr2line`,
//!   `rayon`, `mimalloc`, …; `cargo tree -e normal`). A clean `cargo build --lib`
//!   took 570 s of CPU against 508 s (+12 %; the added crates' units: 178 s in
//!   `cargo build --timings`), a rebuild after touching this file 7.3 s against 5.9 s;
//!   the stripped debug binary is 47.5 MB against 44.8 MB (+2.7 MB).
//!
//! How it was measured (scratch copies of this tree, not committed): `cargo add
//! rabbitmq_http_client --no-default-features --features async,rustls` and `reqwest`
//! 0.13 (`rustls-no-provider`); `cargo tree -e normal --prefix none | sort -u`; `/usr/bin/time
//! cargo build --lib --timings` in an empty target directory for each (on 2 cores shared
//! with other builds, load 5–11: CPU time is the figure, wall time is noise); `strip`
//! and `ls -l` on `target/debug/agent-manager`; `objdump -d` of `__rust_alloc`.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::credentials::RabbitGrants;
use crate::error::CredentialError;
use crate::redact;

/// Path segments keep RFC 3986's unreserved characters; everything else (the `/` of the
/// default vhost included) is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn segment(text: &str) -> String {
    utf8_percent_encode(text, SEGMENT).to_string()
}

/// The hashing RabbitMQ is told the password hashes use.
const HASHING: &str = "rabbit_password_hashing_sha256";

/// A user as `GET /api/users` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedUser {
    pub name: String,
    /// A list since RabbitMQ 3.9, a comma-separated string before.
    #[serde(default)]
    tags: Value,
}

impl ListedUser {
    pub fn has_tag(&self, tag: &str) -> bool {
        match &self.tags {
            Value::Array(tags) => tags.iter().any(|t| t.as_str() == Some(tag)),
            Value::String(tags) => tags.split(',').any(|t| t.trim() == tag),
            _ => false,
        }
    }
}

/// A topic permission as `GET /api/vhosts/<vhost>/topic-permissions` lists it.
#[derive(Debug, Clone, Deserialize)]
pub struct TopicPermission {
    pub user: String,
    pub exchange: String,
}

/// One channel's publish counter, as `GET /api/channels` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelPublishes {
    pub name: String,
    pub user: String,
    /// `None` when the listing has no statistics for the channel (yet).
    pub published: Option<u64>,
}

/// A client of one broker's management API.
#[derive(Clone)]
pub struct Management {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// `scheme://host:port[/path]`, without credentials or a trailing `/`.
    base: String,
    /// `Basic …` of the management URL's user and password.
    authorization: Arc<Zeroizing<String>>,
    timeout: Duration,
}

impl Management {
    /// The installation's management API, as `RABBITMQ_MANAGEMENT_URL` (or the broker
    /// URL) and its CA setting say, bounded by the RabbitMQ timeout.
    pub fn for_config(cfg: &crate::config::RabbitConfig) -> Result<Management, CredentialError> {
        Management::new(
            &cfg.management_url(),
            cfg.management_ca_file(),
            Duration::from_secs(cfg.timeout_s),
        )
    }

    /// A client of the API at `url` (`http[s]://user:password@host:port[/path]`); with
    /// `ca_file`, an `https` endpoint's certificate may also be signed by that CA.
    pub fn new(
        url: &str,
        ca_file: Option<&str>,
        timeout: Duration,
    ) -> Result<Management, CredentialError> {
        let bad = |message: String| CredentialError::Management {
            op: "configure",
            status: None,
            message: format!("{}: {message}", redact::url(url)),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(bad("not an http:// or https:// URL with a host".into()));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let userinfo = Zeroizing::new(format!(
            "{}:{}",
            decode(parsed.username()),
            decode(parsed.password().unwrap_or(""))
        ));
        let authorization = Zeroizing::new(format!("Basic {}", STANDARD.encode(&*userinfo)));
        let mut base = parsed.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        base.set_query(None);
        base.set_fragment(None);
        let base = base.as_str().trim_end_matches('/').to_string();

        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| bad(format!("CA file {path}: {e}")))?;
            let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(format!("CA file {path}: {e}")))?;
            roots.add_parsable_certificates(certs);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Management {
            client,
            base,
            authorization: Arc::new(authorization),
            timeout,
        })
    }

    /// The endpoint, without credentials (for messages).
    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// One call: its status and body. Transport failures, timeouts and answers other
    /// than 2xx (and 404 where `missing_ok`) are errors.
    async fn call(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Value>,
        missing_ok: bool,
    ) -> Result<Bytes, CredentialError> {
        let failed = |status: Option<u16>, message: String| CredentialError::Management {
            op,
            status,
            message,
        };
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("{}/api/{path}", self.base))
            .header(hyper::header::AUTHORIZATION, self.authorization.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| failed(None, e.to_string()))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|source| {
                CredentialError::ManagementUnreachable {
                    op,
                    endpoint: self.base.clone(),
                    source,
                }
            })?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| failed(Some(status.as_u16()), e.to_string()))?
                .to_bytes();
            Ok::<_, CredentialError>((status, body))
        };
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| CredentialError::ManagementTimeout {
                op,
                after_s: self.timeout.as_secs(),
            })??;
        if status.is_success() || (missing_ok && status == StatusCode::NOT_FOUND) {
            return Ok(body);
        }
        // The API says why in `reason`; the body never holds a password (only hashes
        // are sent).
        let reason = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
        Err(failed(
            Some(status.as_u16()),
            format!("{} answered {status}: {reason}", self.base),
        ))
    }

    /// Makes user `user`, or replaces its password and tags.
    pub async fn put_user(
        &self,
        user: &str,
        password_hash: &str,
        tags: &str,
    ) -> Result<(), CredentialError> {
        let body =
            json!({"password_hash": password_hash, "hashing_algorithm": HASHING, "tags": tags});
        self.call(
            "put user",
            Method::PUT,
            &format!("users/{}", segment(user)),
            Some(body),
            false,
        )
        .await
        .map(|_| ())
    }

    /// Sets `user`'s configure, write and read permissions in the grants' vhost.
    pub async fn put_permissions(
        &self,
        user: &str,
        grants: &RabbitGrants,
    ) -> Result<(), CredentialError> {
        let body =
            json!({"configure": grants.configure, "write": grants.write, "read": grants.read});
        let path = format!("permissions/{}/{}", segment(&grants.vhost), segment(user));
        self.call("put permissions", Method::PUT, &path, Some(body), false)
            .await
            .map(|_| ())
    }

    /// Sets `user`'s topic permissions on the grants' exchange.
    pub async fn put_topic_permissions(
        &self,
        user: &str,
        grants: &RabbitGrants,
    ) -> Result<(), CredentialError> {
        let body = json!({
            "exchange": grants.exchange,
            "write": grants.topic_write,
            "read": grants.topic_read,
        });
        let path = format!(
            "topic-permissions/{}/{}",
            segment(&grants.vhost),
            segment(user)
        );
        self.call(
            "put topic permissions",
            Method::PUT,
            &path,
            Some(body),
            false,
        )
        .await
        .map(|_| ())
    }

    /// Removes `user` with its permissions; a missing user is fine.
    pub async fn delete_user(&self, user: &str) -> Result<(), CredentialError> {
        self.call(
            "delete user",
            Method::DELETE,
            &format!("users/{}", segment(user)),
            None,
            true,
        )
        .await
        .map(|_| ())
    }

    /// Closes every connection `user` holds (a removed user's open connections are not
    /// always closed by the removal itself).
    ///
    /// A connection that is already closing counts as closed: RabbitMQ closes a deleted
    /// user's connections by itself, and a close sent meanwhile can meet one on its way
    /// out and answer 500 (`{shutdown,"Closed via management plugin"}` in its log). After
    /// a failed close the user's connections are listed again: none left is success;
    /// otherwise the close is sent again after a short pause, within the call timeout.
    pub async fn close_connections(&self, user: &str) -> Result<(), CredentialError> {
        let path = format!("connections/username/{}", segment(user));
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(50);
        loop {
            let failed = match self
                .call("close connections", Method::DELETE, &path, None, true)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.is_server_error() => e,
                Err(e) => return Err(e),
            };
            if self.open_connections(user).await? == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(failed);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(800));
        }
    }

    /// The connections whose client-given name starts with `prefix`: (the broker's
    /// name of the connection, the client-given one).
    pub async fn connections_named(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, CredentialError> {
        let body = self
            .call(
                "list connections",
                Method::GET,
                "connections?columns=name,user_provided_name",
                None,
                true,
            )
            .await?;
        if body.is_empty() {
            return Ok(Vec::new());
        }
        let listed = decoded::<Vec<Value>>("list connections", &body)?;
        Ok(listed
            .iter()
            .filter_map(|c| {
                let given = c["user_provided_name"].as_str()?;
                let name = c["name"].as_str()?;
                given
                    .starts_with(prefix)
                    .then(|| (name.to_string(), given.to_string()))
            })
            .collect())
    }

    /// Closes the connection the broker calls `name`; one already gone is closed.
    pub async fn close_connection(&self, name: &str) -> Result<(), CredentialError> {
        let path = format!("connections/{}", segment(name));
        self.call("close connection", Method::DELETE, &path, None, true)
            .await
            .map(|_| ())
    }

    /// How many connections `user` holds now, as the broker tracks them.
    pub async fn open_connections(&self, user: &str) -> Result<usize, CredentialError> {
        let path = format!("connections/username/{}", segment(user));
        let body = self
            .call("list connections", Method::GET, &path, None, true)
            .await?;
        if body.is_empty() {
            return Ok(0);
        }
        decoded::<Vec<Value>>("list connections", &body).map(|c| c.len())
    }

    /// Declares the durable queue `queue` in `vhost` (no arguments: as a client that
    /// declares it with `durable` alone); an existing equal queue is fine.
    pub async fn put_queue(&self, vhost: &str, queue: &str) -> Result<(), CredentialError> {
        let body = json!({"durable": true, "auto_delete": false, "arguments": {}});
        let path = format!("queues/{}/{}", segment(vhost), segment(queue));
        self.call("put queue", Method::PUT, &path, Some(body), false)
            .await
            .map(|_| ())
    }

    /// Binds `queue` to `exchange` with `routing_key` (binding twice is one binding).
    pub async fn bind_queue(
        &self,
        vhost: &str,
        exchange: &str,
        queue: &str,
        routing_key: &str,
    ) -> Result<(), CredentialError> {
        let body = json!({"routing_key": routing_key, "arguments": {}});
        let path = format!(
            "bindings/{}/e/{}/q/{}",
            segment(vhost),
            segment(exchange),
            segment(queue)
        );
        self.call("bind queue", Method::POST, &path, Some(body), false)
            .await
            .map(|_| ())
    }

    /// Removes `queue` with the messages in it; a missing queue is fine.
    pub async fn delete_queue(&self, vhost: &str, queue: &str) -> Result<(), CredentialError> {
        let path = format!("queues/{}/{}", segment(vhost), segment(queue));
        self.call("delete queue", Method::DELETE, &path, None, true)
            .await
            .map(|_| ())
    }

    /// Removes every user of `users` in one call (`POST /api/users/bulk-delete`): the
    /// broker closes their open connections itself. Users that do not exist are fine.
    pub async fn bulk_delete_users(&self, users: &[String]) -> Result<(), CredentialError> {
        if users.is_empty() {
            return Ok(());
        }
        self.call(
            "delete users",
            Method::POST,
            "users/bulk-delete",
            Some(json!({ "users": users })),
            true,
        )
        .await
        .map(|_| ())
    }

    /// Sets the global runtime parameter `name` to `value` (kept by the broker, across
    /// its restarts).
    pub async fn put_global_parameter(
        &self,
        name: &str,
        value: &Value,
    ) -> Result<(), CredentialError> {
        let body = json!({"name": name, "value": value});
        self.call(
            "put global parameter",
            Method::PUT,
            &format!("global-parameters/{}", segment(name)),
            Some(body),
            false,
        )
        .await
        .map(|_| ())
    }

    /// Removes the global runtime parameter `name`; a missing one is fine.
    pub async fn delete_global_parameter(&self, name: &str) -> Result<(), CredentialError> {
        self.call(
            "delete global parameter",
            Method::DELETE,
            &format!("global-parameters/{}", segment(name)),
            None,
            true,
        )
        .await
        .map(|_| ())
    }

    /// Every global runtime parameter whose name begins with `prefix`: (name, value).
    pub async fn global_parameters(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, Value)>, CredentialError> {
        let body = self
            .call(
                "list global parameters",
                Method::GET,
                "global-parameters",
                None,
                false,
            )
            .await?;
        #[derive(Deserialize)]
        struct Parameter {
            name: String,
            #[serde(default)]
            value: Value,
        }
        let all: Vec<Parameter> =
            serde_json::from_slice(&body).map_err(|e| CredentialError::Management {
                op: "list global parameters",
                status: None,
                message: format!("unexpected answer: {e}"),
            })?;
        Ok(all
            .into_iter()
            .filter(|p| p.name.starts_with(prefix))
            .map(|p| (p.name, p.value))
            .collect())
    }

    /// Every channel's name, user and publish counter (`GET /api/channels`, only those
    /// columns): what the automatic halt watches. The broker refreshes them every
    /// `collect_statistics_interval` (later under load); a channel it has no statistics
    /// for yet is listed without them.
    pub async fn channel_publish_counts(&self) -> Result<Vec<ChannelPublishes>, CredentialError> {
        let body = self
            .call(
                "list channels",
                Method::GET,
                "channels?columns=name,user,message_stats.publish",
                None,
                false,
            )
            .await?;
        channels_from(&body)
    }

    /// Every user's name and tags.
    pub async fn users(&self) -> Result<Vec<ListedUser>, CredentialError> {
        let body = self
            .call(
                "list users",
                Method::GET,
                "users?columns=name,tags",
                None,
                false,
            )
            .await?;
        decoded("list users", &body)
    }

    /// Every topic permission in `vhost`.
    pub async fn topic_permissions(
        &self,
        vhost: &str,
    ) -> Result<Vec<TopicPermission>, CredentialError> {
        let path = format!("vhosts/{}/topic-permissions", segment(vhost));
        let body = self
            .call("list topic permissions", Method::GET, &path, None, false)
            .await?;
        decoded("list topic permissions", &body)
    }
}

/// The JSON answer of `op` as a `T`.
fn decoded<T: serde::de::DeserializeOwned>(
    op: &'static str,
    body: &[u8],
) -> Result<T, CredentialError> {
    serde_json::from_slice(body).map_err(|e| CredentialError::Management {
        op,
        status: None,
        message: format!("unexpected answer: {e}"),
    })
}

/// The channels of a `GET /api/channels?columns=name,user,message_stats.publish` answer.
fn channels_from(body: &[u8]) -> Result<Vec<ChannelPublishes>, CredentialError> {
    #[derive(Deserialize)]
    struct Listed {
        name: String,
        #[serde(default)]
        user: String,
        /// An object once the channel has statistics; `[]` (an empty Erlang property
        /// list) or absent before.
        #[serde(default)]
        message_stats: Value,
    }
    let listed: Vec<Listed> =
        serde_json::from_slice(body).map_err(|e| CredentialError::Management {
            op: "list channels",
            status: None,
            message: format!("unexpected answer: {e}"),
        })?;
    Ok(listed
        .into_iter()
        .map(|c| {
            let stats = c.message_stats.as_object();
            ChannelPublishes {
                name: c.name,
                user: c.user,
                published: stats.map(|s| s.get("publish").and_then(Value::as_u64).unwrap_or(0)),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_as_path_segments() {
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("agent-a.1_x"), "agent-a.1_x");
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn tags_are_read_in_either_form() {
        let new: ListedUser =
            serde_json::from_value(json!({"name": "u", "tags": ["a", "b"]})).unwrap();
        let old: ListedUser = serde_json::from_value(json!({"name": "u", "tags": "a, b"})).unwrap();
        let none: ListedUser = serde_json::from_value(json!({"name": "u"})).unwrap();
        assert!(new.has_tag("b") && old.has_tag("b"));
        assert!(!new.has_tag("c") && !none.has_tag("a"));
    }

    #[test]
    fn the_endpoint_keeps_no_credentials() {
        let m = Management::new(
            "http://admin:s3cret@127.0.0.1:15672/rabbit/",
            None,
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(m.endpoint(), "http://127.0.0.1:15672/rabbit");
        assert_eq!(
            m.authorization.as_str(),
            format!("Basic {}", STANDARD.encode("admin:s3cret"))
        );
        assert!(Management::new("amqp://h", None, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn channels_with_and_without_statistics() {
        let body = br#"[{"message_stats":{"publish":7,"publish_details":{"rate":2.5}},"name":"a (1)","user":"agent-x"},{"name":"a (2)","user":"agent-x"},{"message_stats":[],"name":"b (1)","user":"guest"},{"message_stats":{"publish":3},"name":"c (1)","user":"u"}]"#;
        let got = channels_from(body).expect("parsed");
        let seen: Vec<Option<u64>> = got.iter().map(|c| c.published).collect();
        assert_eq!(seen, vec![Some(7), None, None, Some(3)]);
        assert_eq!(got[0].user, "agent-x");
        assert!(channels_from(b"{}").is_err());
    }
}
