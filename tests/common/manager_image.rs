//! The manager's container image for tests, built from the Dockerfile the offline way
//! (README "Deploy"): a local base image from `scripts/base-image.sh host` (busybox +
//! this host's glibc) as both base images, and the tests' own binary (stripped) as
//! `PREBUILT`. Tagged `agent-manager:test-<hash>` of everything that goes in, so a rerun
//! with nothing changed builds nothing. Used by tests/image.rs (the container on this
//! host) and tests/cluster.rs (the manager as a Swarm service).

use std::hash::{Hash, Hasher};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{run_bounded, CommandOut};

const BIN: &str = env!("CARGO_BIN_EXE_agent-manager");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Label on the images built here, so that older ones can be removed.
const IMAGE_LABEL: &str = "autogen.test-image=agent-manager";

/// `docker ARGS` (the classic builder), bounded by `limit`.
pub fn docker(args: &[&str], limit: Duration) -> CommandOut {
    let mut cmd = Command::new("docker");
    cmd.args(args).env("DOCKER_BUILDKIT", "0");
    run_bounded(cmd, limit, &format!("docker {}", args.join(" ")))
}

fn sh(program: &str, args: &[&str], limit: Duration) -> CommandOut {
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(ROOT);
    run_bounded(cmd, limit, &format!("{program} {}", args.join(" ")))
}

/// Builds the manager image (or finds it built) and returns its tag.
pub fn manager_image() -> String {
    let base = sh(
        "bash",
        &["scripts/base-image.sh", "host", BIN],
        Duration::from_secs(300),
    );
    assert_eq!(base.code, 0, "scripts/base-image.sh failed: {base:#?}");
    let base = base.stdout.trim().to_string();

    // The build context: what the Dockerfile copies, and the binary.
    let ctx = std::env::temp_dir().join(format!("agent-manager-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&ctx);
    std::fs::create_dir_all(ctx.join("prebuilt")).expect("context dir");
    let _remove_ctx = RemoveDir(ctx.clone());
    for f in ["Dockerfile", ".dockerignore", "Cargo.toml", "Cargo.lock"] {
        std::fs::copy(format!("{ROOT}/{f}"), ctx.join(f)).expect("copy into the context");
    }
    let binary = ctx.join("prebuilt/agent-manager");
    let stripped = sh(
        "strip",
        &["-o", binary.to_str().expect("utf-8 path"), BIN],
        Duration::from_secs(120),
    );
    if stripped.code != 0 {
        // No binutils: the unstripped binary works as well, only bigger.
        std::fs::copy(BIN, &binary).expect("copy the binary");
    }

    // The tag: a hash of everything that goes in (a cache key, so std's hasher will do:
    // a new Rust only means one rebuild).
    let base_id = docker(
        &["image", "inspect", "-f", "{{.Id}}", &base],
        Duration::from_secs(30),
    );
    let mut hasher = std::hash::DefaultHasher::new();
    base_id.stdout.trim().hash(&mut hasher);
    for f in [
        "Dockerfile",
        ".dockerignore",
        "Cargo.toml",
        "Cargo.lock",
        "prebuilt/agent-manager",
    ] {
        std::fs::read(ctx.join(f)).expect("read").hash(&mut hasher);
    }
    let tag = format!("agent-manager:test-{:016x}", hasher.finish());

    if docker(&["image", "inspect", &tag], Duration::from_secs(30)).code == 0 {
        eprintln!("image {tag}: cached");
        return tag;
    }
    let started = Instant::now();
    let built = docker(
        &[
            "build",
            "--quiet",
            "--build-arg",
            &format!("BUILD_IMAGE={base}"),
            "--build-arg",
            &format!("RUNTIME_IMAGE={base}"),
            "--build-arg",
            "PREBUILT=prebuilt/agent-manager",
            "--label",
            IMAGE_LABEL,
            "-t",
            &tag,
            ctx.to_str().expect("utf-8 path"),
        ],
        Duration::from_secs(600),
    );
    assert_eq!(built.code, 0, "docker build failed: {built:#?}");
    eprintln!("image {tag}: built in {:?}", started.elapsed());
    // Older images of this test are of no more use (one still in use stays).
    let old = docker(
        &["images", "-q", "--filter", &format!("label={IMAGE_LABEL}")],
        Duration::from_secs(30),
    );
    let current = docker(
        &["image", "inspect", "-f", "{{.Id}}", &tag],
        Duration::from_secs(30),
    );
    let current = current.stdout.trim();
    for id in old.stdout.split_whitespace() {
        if !current.contains(id) {
            let _ = docker(&["rmi", id], Duration::from_secs(60));
        }
    }
    // The classic builder leaves each build stage behind as an untagged image (it
    // inherits the base's label). Those older than a minute belong to no build that
    // is still running.
    let _ = docker(
        &[
            "image",
            "prune",
            "-f",
            "--filter",
            "label=autogen.base-hash",
            "--filter",
            "until=1m",
        ],
        Duration::from_secs(60),
    );
    tag
}

struct RemoveDir(std::path::PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
