//! The security rules the manager enforces, in one place (docs/SECURITY.md explains
//! them): which capabilities an operator may add back, which extra security options and
//! host mounts the configuration may name, which user agents run as, and the name of a
//! customer's own network. Pure functions: config validation and the container spec call
//! them; unit tests cover each rule. What an image reference must look like and which
//! ones the allowlist admits are rules of the contract's `image` field:
//! [`crate::protocol::image`].

use std::path::{Component, Path};

use thiserror::Error;
use uuid::Uuid;

use crate::protocol::valid_agent_id;

/// The capabilities `agents.cap_add` may name: Docker's default set, which Docker itself
/// considers safe to grant. Everything else (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, ...) breaks
/// the container boundary and is refused. Containers start with `cap_drop: ALL`, so a
/// capability is only present when an operator lists it here.
pub const ADDABLE_CAPABILITIES: [&str; 14] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// The security option every agent container gets (CIS 5.25).
pub const NO_NEW_PRIVILEGES: &str = "no-new-privileges:true";

/// Host paths that are never mounted into an agent, nor any path below or above them:
/// the Docker and containerd sockets and state (root on the host), kernel interfaces,
/// host configuration and credentials (CIS 5.5, 5.31).
pub const FORBIDDEN_HOST_PATHS: [&str; 12] = [
    "/proc",
    "/sys",
    "/dev",
    "/etc",
    "/run",
    "/var/run",
    "/boot",
    "/root",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/lib/rabbitmq",
];

/// Paths inside the container a module mount may not shadow (nor sit below or above):
/// the system's own files, kernel interfaces and the writable `/tmp`.
pub const PROTECTED_TARGETS: [&str; 14] = [
    "/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
    "/usr", "/run", "/var/run", "/tmp",
];

/// Why a setting breaks a security rule. Configuration validation reports it under the
/// setting's name, so each message names the value and the rule, for a person.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SecurityRuleError {
    /// `agents.cap_add`: not one of [`ADDABLE_CAPABILITIES`].
    #[error("capability '{0}' may not be added; allowed: {allowed}", allowed = ADDABLE_CAPABILITIES.join(", "))]
    Capability(String),
    /// `agents.security_opt`: an option is one word.
    #[error("'{0}' must be one word without spaces or control characters")]
    OptionNotOneWord(String),
    /// `agents.security_opt`: would switch confinement off.
    #[error("'{0}' would switch confinement off (seccomp, AppArmor, SELinux and system paths always stay confined)")]
    Unconfined(String),
    /// `agents.security_opt`: seccomp profiles are Docker's default, always.
    #[error(
        "'{0}': custom seccomp profiles are not supported; Docker's default profile always applies"
    )]
    Seccomp(String),
    /// `agents.security_opt`: `no-new-privileges` is always on.
    #[error("'{0}': no-new-privileges is always set and cannot be configured")]
    NoNewPrivileges(String),
    /// `agents.security_opt`: neither an AppArmor profile nor an SELinux label.
    #[error("'{0}' is not an allowed security option: use apparmor=<profile> or label=<user|role|type|level>:<value>")]
    OptionNotAllowed(String),
    /// `agents.user`: root, by UID or GID.
    #[error("'{0}' is root; agents never run as root")]
    Root(String),
    /// `agents.user`: a name, or not a number.
    #[error(
        "'{0}' must be a numeric UID or UID:GID (e.g. 65534:65534), or empty for the image's user"
    )]
    UserNotNumeric(String),
    /// `agents.module_mounts`: not `host:container`.
    #[error("'{0}' must be /host/path:/container/path")]
    MountShape(String),
    /// `agents.module_mounts`: a host path that is relative or has `.`/`..`.
    #[error("'{0}': the host path must be absolute, without '.' or '..'")]
    MountHostPath(String),
    /// `agents.module_mounts`: a container path that is relative or has `.`/`..`.
    #[error("'{0}': the container path must be absolute, without '.' or '..'")]
    MountContainerPath(String),
    /// `agents.module_mounts`: a socket, `/` or one of [`FORBIDDEN_HOST_PATHS`].
    #[error("'{0}' would expose the host (sockets, /, {forbidden}); refused", forbidden = FORBIDDEN_HOST_PATHS.join(", "))]
    ExposesHost(String),
    /// `agents.module_mounts`: a symbolic link to what [`SecurityRuleError::ExposesHost`]
    /// refuses.
    #[error("'{mount}': the host path resolves to {real}, which would expose the host; refused")]
    ResolvesToHost { mount: String, real: String },
    /// `agents.module_mounts`: over `/` or one of [`PROTECTED_TARGETS`].
    #[error("'{0}': the container path would shadow a system path ({protected}); refused", protected = PROTECTED_TARGETS.join(", "))]
    ShadowsSystemPath(String),
}

/// `cap` as Docker wants it (upper case, no `CAP_` prefix), if it may be added.
pub fn addable_capability(cap: &str) -> Result<String, SecurityRuleError> {
    let upper = cap.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("CAP_").unwrap_or(&upper);
    if ADDABLE_CAPABILITIES.contains(&name) {
        Ok(name.to_string())
    } else {
        Err(SecurityRuleError::Capability(cap.to_string()))
    }
}

/// Checks one extra security option from the configuration. AppArmor profiles and SELinux
/// labels may be chosen; nothing may switch confinement off (`unconfined`,
/// `label=disable`, `systempaths=unconfined`), and `no-new-privileges` and seccomp are not
/// configurable: the first is always on and Docker's default seccomp profile always
/// applies.
pub fn check_security_opt(opt: &str) -> Result<(), SecurityRuleError> {
    if opt.is_empty() || opt.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(SecurityRuleError::OptionNotOneWord(opt.to_string()));
    }
    let lower = opt.to_ascii_lowercase();
    if lower.contains("unconfined") || lower.contains("disable") {
        return Err(SecurityRuleError::Unconfined(opt.to_string()));
    }
    // Docker accepts both `key=value` and the older `key:value`.
    let (key, value) = opt
        .split_once('=')
        .or_else(|| opt.split_once(':'))
        .unwrap_or((opt, ""));
    match key.to_ascii_lowercase().as_str() {
        "apparmor" if !value.is_empty() => Ok(()),
        "label"
            if ["user:", "role:", "type:", "level:"]
                .iter()
                .any(|p| value.starts_with(p) && value.len() > p.len()) =>
        {
            Ok(())
        }
        "seccomp" => Err(SecurityRuleError::Seccomp(opt.to_string())),
        "no-new-privileges" => Err(SecurityRuleError::NoNewPrivileges(opt.to_string())),
        _ => Err(SecurityRuleError::OptionNotAllowed(opt.to_string())),
    }
}

/// The security options of an agent container: `no-new-privileges` and the configured
/// extras (already checked by [`check_security_opt`]).
pub fn security_opts(extra: &[String]) -> Vec<String> {
    std::iter::once(NO_NEW_PRIVILEGES.to_string())
        .chain(extra.iter().cloned())
        .collect()
}

/// Checks `agents.user`: empty (the image's own user), or a numeric `UID` or `UID:GID`
/// that is not root. Names are refused: the agent image need not have /etc/passwd, and a
/// number cannot be redefined by the image.
pub fn check_user(user: &str) -> Result<(), SecurityRuleError> {
    if user.is_empty() {
        return Ok(());
    }
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let number = |s: &str| -> Option<u32> {
        (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(uid), gid.map(number)) {
        (Some(0), _) | (_, Some(Some(0))) => Err(SecurityRuleError::Root(user.to_string())),
        (Some(_), None) | (Some(_), Some(Some(_))) => Ok(()),
        _ => Err(SecurityRuleError::UserNotNumeric(user.to_string())),
    }
}

/// `path` with `.`/`..` refused, repeated and trailing slashes removed. `None` when it is
/// not absolute or not clean.
fn clean_absolute(path: &str) -> Option<String> {
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        return None;
    }
    let mut parts = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => parts.push(p.to_str()?.to_string()),
            // `..` could climb out of an allowed directory; `.` is refused to keep the
            // rule simple.
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    // `Path::components` drops `.` silently; look for it in the text.
    if path.split('/').any(|p| p == "." || p == "..") {
        return None;
    }
    Some(format!("/{}", parts.join("/")))
}

/// True when `a` is `b`, lies below it, or lies above it.
fn overlaps(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| y == "/" || x == y || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

/// Checks one `agents.module_mounts` entry, `host_path:container_path`, and returns the
/// cleaned pair. Host paths must stay clear of [`FORBIDDEN_HOST_PATHS`] (and of `/`),
/// also after following symbolic links where the path exists on this machine; targets
/// must stay clear of [`PROTECTED_TARGETS`]. Every module mount is read-only.
pub fn check_module_mount(mount: &str) -> Result<(String, String), SecurityRuleError> {
    let refused = |rule: fn(String) -> SecurityRuleError| rule(mount.to_string());
    let (host, target) = mount
        .split_once(':')
        .ok_or_else(|| refused(SecurityRuleError::MountShape))?;
    if target.contains(':') {
        return Err(refused(SecurityRuleError::MountShape));
    }
    let host = clean_absolute(host).ok_or_else(|| refused(SecurityRuleError::MountHostPath))?;
    let target =
        clean_absolute(target).ok_or_else(|| refused(SecurityRuleError::MountContainerPath))?;
    let exposes = |p: &str| {
        p == "/"
            || p.contains("docker.sock")
            || p.contains("containerd.sock")
            || p.ends_with(".sock")
            || FORBIDDEN_HOST_PATHS.iter().any(|f| overlaps(p, f))
    };
    if exposes(&host) {
        return Err(refused(SecurityRuleError::ExposesHost));
    }
    // A symbolic link may point somewhere forbidden. Only checkable where the path exists
    // on this machine (with a remote DOCKER_HOST the daemon's file system is elsewhere).
    if let Ok(real) = std::fs::canonicalize(&host) {
        let real = real.to_string_lossy().to_string();
        if exposes(&real) {
            return Err(SecurityRuleError::ResolvesToHost {
                mount: mount.to_string(),
                real,
            });
        }
    }
    if target == "/" || PROTECTED_TARGETS.iter().any(|p| overlaps(&target, p)) {
        return Err(refused(SecurityRuleError::ShadowsSystemPath));
    }
    Ok((host, target))
}

/// The network of `customer_id`'s agents when each customer gets its own:
/// `<base>-<customer_id>`. A customer id that is not already a safe Docker name
/// (`[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}`) is sanitised (other characters become `-`,
/// at most 40 kept) and a 16-hex digest of the exact id is appended, so two customers
/// never share a network.
pub fn customer_network(base: &str, customer_id: &str) -> String {
    if valid_agent_id(customer_id) {
        return format!("{base}-{customer_id}");
    }
    let sanitized: String = customer_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    let digest = Uuid::new_v5(&Uuid::NAMESPACE_OID, customer_id.as_bytes()).simple();
    format!("{base}-{sanitized}-{}", &digest.to_string()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_docker_default_capabilities_may_be_added() {
        assert_eq!(
            addable_capability("net_bind_service").unwrap(),
            "NET_BIND_SERVICE"
        );
        assert_eq!(addable_capability("CAP_CHOWN").unwrap(), "CHOWN");
        for cap in [
            "SYS_ADMIN",
            "NET_ADMIN",
            "SYS_PTRACE",
            "ALL",
            "SYS_MODULE",
            "",
            "BPF",
        ] {
            assert!(addable_capability(cap).is_err(), "{cap}");
        }
    }

    #[test]
    fn security_opts_never_switch_confinement_off() {
        for bad in [
            "seccomp=unconfined",
            "seccomp:unconfined",
            "apparmor=unconfined",
            "apparmor:unconfined",
            "label=disable",
            "label:disable",
            "systempaths=unconfined",
            "no-new-privileges=false",
            "no-new-privileges",
            "seccomp={}",
            "apparmor=",
            "privileged",
            "apparmor=x y",
            "",
        ] {
            assert!(check_security_opt(bad).is_err(), "{bad}");
        }
        for good in [
            "apparmor=autogen-agent",
            "label=type:agent_t",
            "label:level:s0:c1",
        ] {
            assert!(check_security_opt(good).is_ok(), "{good}");
        }
        assert_eq!(
            security_opts(&["apparmor=p".into()]),
            vec![NO_NEW_PRIVILEGES.to_string(), "apparmor=p".into()]
        );
    }

    #[test]
    fn users_are_numeric_and_never_root() {
        for good in ["", "65534:65534", "1000", "1000:1000"] {
            assert!(check_user(good).is_ok(), "{good}");
        }
        for bad in [
            "0",
            "0:0",
            "root",
            "1000:0",
            "nobody",
            ":1",
            "1:",
            "-1",
            "1 ",
            "99999999999",
        ] {
            assert!(check_user(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn module_mounts_stay_clear_of_the_host() {
        assert_eq!(
            check_module_mount("/opt/modules//x/:/opt/agent-modules").unwrap(),
            (
                "/opt/modules/x".to_string(),
                "/opt/agent-modules".to_string()
            )
        );
        for bad in [
            "/var/run/docker.sock:/s",
            "/run/docker.sock:/s",
            "/run/containerd/containerd.sock:/s",
            "/var/run:/x",
            "/run/user/0:/x",
            "/:/host",
            "/proc:/x",
            "/sys/fs/cgroup:/x",
            "/etc:/x",
            "/etc/shadow:/x",
            "/var:/x",
            "/var/lib:/x",
            "/var/lib/docker/volumes:/x",
            "/dev/sda:/x",
            "/root/.ssh:/x",
            "/opt/x/../../etc:/x",
            "/opt/./x:/y",
            "relative:/x",
            "/opt/m:relative",
            "/opt/m:/etc",
            "/opt/m:/usr/lib/python3",
            "/opt/m:/",
            "/opt/m:/tmp",
            "/opt/m:/var",
            "/opt/m:/proc/x",
            "/opt/m:/bin",
            "/opt/m",
            "/opt/m:/a:/b",
            "/home/app/agent.sock:/x",
        ] {
            assert!(check_module_mount(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn symlinks_to_forbidden_paths_are_refused() {
        let dir = std::env::temp_dir().join(format!("sec-test-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("innocent");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        let r = check_module_mount(&format!("{}:/opt/m", link.display()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(r.unwrap_err().to_string().contains("resolves to /etc"));
    }

    #[test]
    fn refusals_name_the_value_and_the_rule() {
        assert_eq!(
            addable_capability("SYS_ADMIN").unwrap_err().to_string(),
            format!(
                "capability 'SYS_ADMIN' may not be added; allowed: {}",
                ADDABLE_CAPABILITIES.join(", ")
            )
        );
        assert_eq!(
            check_user("0:0").unwrap_err().to_string(),
            "'0:0' is root; agents never run as root"
        );
        assert_eq!(
            check_security_opt("seccomp=p.json").unwrap_err(),
            SecurityRuleError::Seccomp("seccomp=p.json".into())
        );
        assert_eq!(
            check_module_mount("/opt/m").unwrap_err().to_string(),
            "'/opt/m' must be /host/path:/container/path"
        );
        assert!(check_module_mount("/opt/m:/tmp")
            .unwrap_err()
            .to_string()
            .ends_with("/var/run, /tmp); refused"));
    }

    #[test]
    fn customer_networks_are_distinct_and_docker_safe() {
        assert_eq!(customer_network("net", "cust-1"), "net-cust-1");
        let a = customer_network("net", "a/b");
        let b = customer_network("net", "a:b");
        assert_ne!(a, b);
        assert!(a.starts_with("net-a-b-"));
        let long = customer_network("net", &"x".repeat(128));
        assert!(long.len() <= "net-".len() + 40 + 1 + 16);
        let odd = customer_network("net", "../../etc ünï");
        assert!(odd
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    }
}
