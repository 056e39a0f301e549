//! Each agent's own identity (contract section 7), as data: its user name, a fresh
//! password from the operating system's random source, the URLs that carry them into
//! the agent's environment, and exactly what its RabbitMQ and Redis users may do. Pure
//! but for the random bytes; the users themselves are made by a
//! [`crate::ports::CredentialIssuer`] (the real one is [`crate::identity`]).
//!
//! The password leaves the manager only inside the agent's environment: RabbitMQ is
//! given its salted SHA-256 (`rabbit_password_hashing_sha256`) and Redis its SHA-256
//! (`ACL SETUSER … #<hex>`), so neither service, its logs nor the management API ever
//! sees the password itself. [`Password`] prints as `***` and is wiped from memory when
//! dropped.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use crate::error::LoginError;

/// Every agent's users are named `agent-<agent_id>` (contract section 7).
pub const USER_PREFIX: &str = "agent-";

/// Random bytes in a password: 192 bits (the contract asks for at least 128).
pub const PASSWORD_BYTES: usize = 24;

/// The user name of agent `agent_id`, in RabbitMQ and in Redis.
pub fn user_name(agent_id: &str) -> String {
    format!("{USER_PREFIX}{agent_id}")
}

/// The agent a user name belongs to (`agent-a1` → `a1`).
pub fn agent_of_user(user: &str) -> Option<&str> {
    user.strip_prefix(USER_PREFIX).filter(|id| !id.is_empty())
}

fn random_bytes(n: usize) -> Result<Zeroizing<Vec<u8>>, LoginError> {
    let mut bytes = Zeroizing::new(vec![0u8; n]);
    getrandom::fill(&mut bytes).map_err(|e| LoginError::Random(e.to_string()))?;
    Ok(bytes)
}

/// A password: [`PASSWORD_BYTES`] bytes from the operating system's random source as
/// URL-safe base64 (no character needs escaping in a URL). Never printed; read it with
/// [`Password::expose`] only where it goes into the agent's environment.
pub struct Password(Zeroizing<String>);

impl Password {
    /// A fresh password from the operating system's random source.
    pub fn generate() -> Result<Password, LoginError> {
        let bytes = random_bytes(PASSWORD_BYTES)?;
        Ok(Password(Zeroizing::new(URL_SAFE_NO_PAD.encode(&*bytes))))
    }

    /// A password read back from where it was given (an agent's environment).
    pub fn recovered(text: &str) -> Password {
        Password(Zeroizing::new(text.to_string()))
    }

    /// The password itself: for the agent's environment only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The form Redis keeps (`ACL SETUSER … #<this>`): SHA-256, lower-case hex.
    pub fn redis_hash(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The form RabbitMQ keeps with `rabbit_password_hashing_sha256`: base64 of a
    /// random 4-byte salt followed by SHA-256(salt ‖ password).
    pub fn rabbitmq_hash(&self) -> Result<String, LoginError> {
        let salt = random_bytes(4)?;
        Ok(Self::rabbitmq_hash_with(&salt, &self.0))
    }

    fn rabbitmq_hash_with(salt: &[u8], password: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update(password.as_bytes());
        let mut salted = salt.to_vec();
        salted.extend_from_slice(&hasher.finalize());
        STANDARD.encode(salted)
    }
}

impl PartialEq for Password {
    fn eq(&self, other: &Password) -> bool {
        // Equal length passwords compared without an early exit.
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// One issue of an agent's login: the password both its users get, and a random serial
/// that names this issue (folded into the container's recreate hash, so a container
/// made with an earlier password is never taken for one made with this one).
#[derive(Debug)]
pub struct AgentLogin {
    pub user: String,
    pub password: Password,
    /// Random, unrelated to the password.
    pub serial: String,
}

impl AgentLogin {
    /// A new login for `agent_id`, with a fresh password.
    pub fn fresh(agent_id: &str) -> Result<AgentLogin, LoginError> {
        let serial = hex::encode(&*random_bytes(8)?);
        Ok(AgentLogin {
            user: user_name(agent_id),
            password: Password::generate()?,
            serial,
        })
    }
}

/// The agent's URLs: the agents' RabbitMQ and Redis URLs with the agent's own user and
/// password instead of any they carried.
pub struct AgentUrls {
    pub rabbitmq: String,
    pub redis: String,
}

impl fmt::Debug for AgentUrls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentUrls")
            .field("rabbitmq", &crate::redact::url(&self.rabbitmq))
            .field("redis", &crate::redact::url(&self.redis))
            .finish()
    }
}

impl AgentUrls {
    /// `rabbitmq_base` and `redis_base` (host, port, vhost or database, query) with
    /// `login`'s user and password.
    pub fn new(
        rabbitmq_base: &str,
        redis_base: &str,
        login: &AgentLogin,
    ) -> Result<AgentUrls, LoginError> {
        Ok(AgentUrls {
            rabbitmq: url_with_login(rabbitmq_base, &login.user, &login.password)?,
            redis: url_with_login(redis_base, &login.user, &login.password)?,
        })
    }
}

/// `base` with `user` and `password` as its credentials (percent-encoded as needed).
pub fn url_with_login(base: &str, user: &str, password: &Password) -> Result<String, LoginError> {
    let bad = |message: &str| LoginError::Url {
        url: crate::redact::url(base),
        message: message.to_string(),
    };
    let mut url = url::Url::parse(base).map_err(|e| bad(&e.to_string()))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    url.set_username(user)
        .map_err(|()| bad("it cannot carry a user"))?;
    url.set_password(Some(password.expose()))
        .map_err(|()| bad("it cannot carry a password"))?;
    Ok(url.to_string())
}

/// Whether `base` can carry an agent's login (a URL with a host): checked at start.
pub fn can_carry_login(base: &str) -> bool {
    url::Url::parse(base).is_ok_and(|u| u.host_str().is_some_and(|h| !h.is_empty()))
}

/// The user and password a URL carries (percent-decoded), if it carries both.
pub fn login_of_url(url: &str) -> Option<(String, Password)> {
    let url = url::Url::parse(url).ok()?;
    let password = url.password()?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|c| c.into_owned())
    };
    Some((
        decode(url.username())?,
        Password::recovered(&decode(password)?),
    ))
}

/// The password of `agent_id`'s own login in an agent's `RABBITMQ_URL` and `REDIS_URL`:
/// `None` unless both carry user `agent-<agent_id>` and the same password (a container
/// made in `shared` mode, or by a version without per-agent credentials, has none).
pub fn own_password(agent_id: &str, rabbitmq_url: &str, redis_url: &str) -> Option<Password> {
    let user = user_name(agent_id);
    let (mq_user, mq_password) = login_of_url(rabbitmq_url)?;
    let (redis_user, redis_password) = login_of_url(redis_url)?;
    (mq_user == user && redis_user == user && mq_password == redis_password).then_some(mq_password)
}

/// What an agent's RabbitMQ user may do, in the vhost of its URL (contract section 7):
/// regular expressions as RabbitMQ's permissions and topic permissions take them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RabbitGrants {
    pub vhost: String,
    /// Queues and exchanges it may declare and delete: its own queues.
    pub configure: String,
    /// What it may publish to and bind its queues from: its queues and the exchange.
    pub write: String,
    /// What it may consume from and bind: its queues and the exchange.
    pub read: String,
    /// The exchange the topic permissions apply to.
    pub exchange: String,
    /// Routing keys it may publish with on the exchange.
    pub topic_write: String,
    /// Routing keys it may bind with on the exchange.
    pub topic_read: String,
}

impl RabbitGrants {
    /// The grants of `agent_id` in `vhost` on `exchange`.
    pub fn of(agent_id: &str, vhost: &str, exchange: &str) -> RabbitGrants {
        // The `:` after the id: agent `a1` gets nothing of agent `a1x`.
        let own = format!("^agent:{}:", regex::escape(agent_id));
        let own_or_exchange = format!(
            "^(agent:{}:.*|{})$",
            regex::escape(agent_id),
            regex::escape(exchange)
        );
        RabbitGrants {
            vhost: vhost.to_string(),
            configure: own.clone(),
            write: own_or_exchange.clone(),
            read: own_or_exchange,
            exchange: exchange.to_string(),
            topic_write: own.clone(),
            topic_read: own,
        }
    }
}

/// A glob pattern matching `text` literally (Redis ACL key and channel patterns, and
/// SCAN's MATCH: the same glob syntax).
pub fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The read-only key pattern of the agent's record in Redis ACL rules: the mark that a
/// Redis user belongs to this manager's key prefix.
pub fn redis_record_pattern(agent_id: &str, prefix: &str) -> String {
    format!("%R~{}agent:{agent_id}", glob_escape(prefix))
}

/// Commands an agent's Redis user may not run beyond `-@dangerous -@admin`: listing
/// the keyspace, counting it, switching or swapping databases, wiping, listing other
/// clients' channels, changing server-wide functions, killing others' scripts.
pub const REDIS_DENIED: &[&str] = &[
    "-keys",
    "-scan",
    "-randomkey",
    "-dbsize",
    "-select",
    "-swapdb",
    "-move",
    "-flushall",
    "-flushdb",
    "-pubsub",
    "-function",
    "-script|kill",
];

/// The `ACL SETUSER agent-<id> …` rules (after the user name) of `agent_id` under key
/// prefix `prefix`, logging in with the password whose hash is `password_hash` (see
/// [`Password::redis_hash`]); `db` is the database of the agent's URL (`SELECT` of that
/// one database is allowed when it is not 0).
pub fn redis_rules(agent_id: &str, prefix: &str, db: i64, password_hash: &str) -> Vec<String> {
    let own = format!("{}agent:{agent_id}", glob_escape(prefix));
    let mut rules = vec![
        "reset".to_string(),
        "on".to_string(),
        format!("#{password_hash}"),
        redis_record_pattern(agent_id, prefix),
        format!("%R~{own}:events"),
        format!("~{own}:data:*"),
        format!("&{own}:*"),
        "+@all".to_string(),
        "-@dangerous".to_string(),
        "-@admin".to_string(),
    ];
    rules.extend(REDIS_DENIED.iter().map(|r| r.to_string()));
    if db != 0 {
        rules.push(format!("+select|{db}"));
    }
    rules
}

/// The database a Redis URL names (its path), 0 when it names none.
pub fn redis_db(url: &str) -> i64 {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.path().trim_start_matches('/').parse().ok())
        .unwrap_or(0)
}

/// Which agents have users made by this manager, as the services report them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoginCensus {
    /// Agents with a user of this manager in RabbitMQ or Redis (complete or not).
    pub owned: HashSet<String>,
    /// Agents whose users exist in both services with their permissions: their
    /// password logs in wherever section 7 says.
    pub complete: HashSet<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(id: &str) -> AgentLogin {
        AgentLogin::fresh(id).expect("random")
    }

    #[test]
    fn passwords_are_long_random_and_never_printed() {
        let a = Password::generate().unwrap();
        let b = Password::generate().unwrap();
        assert_eq!(a.expose().len(), 32, "24 bytes as unpadded base64");
        assert!(a != b, "fresh each time");
        assert!(a
            .expose()
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(format!("{a:?}"), "Password(***)");
        let l = login("a1");
        assert!(!format!("{l:?}").contains(l.password.expose()));
        assert_eq!(l.user, "agent-a1");
        assert_ne!(l.serial, login("a1").serial);
    }

    #[test]
    fn the_services_get_hashes_not_the_password() {
        let p = Password::recovered("secret");
        // sha256("secret")
        assert_eq!(
            p.redis_hash(),
            "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"
        );
        // RabbitMQ's form: base64(salt ‖ SHA-256(salt ‖ password)).
        let salt = [0x90, 0x8d, 0xc6, 0x0a];
        let decoded = STANDARD
            .decode(Password::rabbitmq_hash_with(&salt, "test12"))
            .unwrap();
        assert_eq!(decoded[..4], salt);
        let mut expected = Sha256::new();
        expected.update(salt);
        expected.update(b"test12");
        assert_eq!(decoded[4..], expected.finalize()[..]);
        let h = p.rabbitmq_hash().unwrap();
        assert!(!h.contains("secret"));
        assert_ne!(h, p.rabbitmq_hash().unwrap(), "salted");
    }

    #[test]
    fn urls_carry_the_agents_own_login() {
        let l = login("a1");
        let urls = AgentUrls::new(
            "amqp://guest:guest@127.0.0.1:5672/%2f?frame_max=8192",
            "redis://:manager@127.0.0.1:6379/2",
            &l,
        )
        .unwrap();
        let pw = l.password.expose();
        assert_eq!(
            urls.rabbitmq,
            format!("amqp://agent-a1:{pw}@127.0.0.1:5672/%2f?frame_max=8192")
        );
        assert_eq!(
            urls.redis,
            format!("redis://agent-a1:{pw}@127.0.0.1:6379/2")
        );
        assert!(!format!("{urls:?}").contains(pw));
        let back = own_password("a1", &urls.rabbitmq, &urls.redis).expect("own");
        assert!(back == l.password);
        assert!(own_password("a2", &urls.rabbitmq, &urls.redis).is_none());
        assert!(own_password(
            "a1",
            "amqp://guest:guest@127.0.0.1:5672/%2f",
            "redis://127.0.0.1:6379/0"
        )
        .is_none());
        let tls = url_with_login("rediss://r.example:6380/0", "agent-a1", &l.password).unwrap();
        assert!(tls.starts_with("rediss://agent-a1:"));
        assert!(url_with_login("redis+unix:///tmp/r.sock", "agent-a1", &l.password).is_err());
        assert!(!can_carry_login("unix:///tmp/r.sock"));
        assert!(can_carry_login("amqps://mq.example/%2f"));
        assert_eq!(redis_db("redis://h:1/3"), 3);
        assert_eq!(redis_db("redis://h:1"), 0);
    }

    #[test]
    fn rabbitmq_grants_are_section_7() {
        let g = RabbitGrants::of("agentx.1", "/", "autogen");
        assert_eq!(g.configure, r"^agent:agentx\.1:");
        assert_eq!(g.write, r"^(agent:agentx\.1:.*|autogen)$");
        assert_eq!(g.read, g.write);
        assert_eq!(g.topic_write, r"^agent:agentx\.1:");
        assert_eq!(g.topic_read, g.topic_write);
        let re = regex::Regex::new(&g.topic_write).unwrap();
        assert!(re.is_match("agent:agentx.1:result"));
        for key in [
            "agent:agentx.1x:result",
            "agent:agentxx1:r",
            "agent.delete",
            "agent.health",
        ] {
            assert!(!re.is_match(key), "{key}");
        }
        let write = regex::Regex::new(&g.write).unwrap();
        assert!(write.is_match("autogen") && write.is_match("agent:agentx.1:inbox"));
        for name in [
            "agent-manager.commands",
            "autogen.dlx",
            "amq.default",
            "agent:other:inbox",
        ] {
            assert!(!write.is_match(name), "{name}");
        }
        let g = RabbitGrants::of("a", "/", "autogen.test-1");
        assert_eq!(g.write, r"^(agent:a:.*|autogen\.test\-1)$");
    }

    #[test]
    fn redis_rules_are_section_7() {
        let rules = redis_rules("a1", "", 0, "abc");
        let text = rules.join(" ");
        assert!(text.starts_with("reset on #abc %R~agent:a1 %R~agent:a1:events ~agent:a1:data:* &agent:a1:* +@all -@dangerous -@admin"), "{text}");
        for denied in ["-keys", "-scan", "-flushall", "-flushdb", "-select"] {
            assert!(rules.iter().any(|r| r == denied), "{denied}");
        }
        assert!(!text.contains("+select"));
        let prefixed = redis_rules("a1", "t[1]:", 3, "abc").join(" ");
        assert!(prefixed.contains(r"%R~t\[1\]:agent:a1 "), "{prefixed}");
        assert!(prefixed.contains(r"~t\[1\]:agent:a1:data:*"));
        assert!(prefixed.ends_with("+select|3"));
        assert_eq!(redis_record_pattern("a1", "p:"), "%R~p:agent:a1");
        assert_eq!(agent_of_user("agent-a1"), Some("a1"));
        assert_eq!(agent_of_user("agent-"), None);
        assert_eq!(agent_of_user("guest"), None);
    }
}
