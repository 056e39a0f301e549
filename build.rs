//! Build script: gives the binary its source's git commit as `AGENT_MANAGER_GIT_COMMIT`
//! (`--version`, the `build_info` metric). The commit is `GIT_COMMIT` when set (a
//! Docker build, where `.git` is not in the context, passes it as a build argument),
//! else what `git rev-parse` says in a checkout, else `unknown` (a source tarball).

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=GIT_COMMIT");
    let commit = match std::env::var("GIT_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rebuild when HEAD moves: HEAD itself, and the branch file it points at.
            for file in ["HEAD", "packed-refs"] {
                watch(git(&["rev-parse", "--git-path", file]));
            }
            if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
                watch(git(&["rev-parse", "--git-path", &branch]));
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
        }
    };
    println!("cargo:rustc-env=AGENT_MANAGER_GIT_COMMIT={commit}");
}

/// Asks cargo to rerun this script when `path` changes; only paths that exist (a
/// missing one would make cargo rerun it on every build).
fn watch(path: Option<String>) {
    if let Some(p) = path.filter(|p| Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={p}");
    }
}
