//! GPU mode end to end (DEPLOYMENT_MODE=gpu) against the real services. This machine has
//! no NVIDIA runtime, which the tests rely on: containers with device requests can be
//! created (Docker records the request) but not started, so the allocations are driven
//! with `auto_start: false`, and a start shows the error for a host without the runtime.
//! The inventory is configured (GPU_DEVICES=0,1); nvidia-smi is not asked.

mod common;

use std::collections::HashMap;

use common::TestEnv;
use serde_json::{json, Value};

/// A local tag of the agent image standing in for a CUDA image; removed in Drop.
struct ImageTag(String);

impl ImageTag {
    fn new(id: &str) -> ImageTag {
        let tag = format!("autogen-agent:gpu-test-{id}");
        let out = std::process::Command::new("docker")
            .args(["tag", common::agent_image(), &tag])
            .output()
            .expect("docker tag");
        assert!(
            out.status.success(),
            "docker tag failed: {}; build the image with `bash scripts/services.sh`",
            String::from_utf8_lossy(&out.stderr)
        );
        ImageTag(tag)
    }
}

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", &self.0])
            .output();
    }
}

async fn create(env: &TestEnv, id: &str, gpus: u32, auto_start: bool) -> String {
    let mut body = env.create_body(id);
    body["resources"]["gpus"] = json!(gpus);
    body["auto_start"] = json!(auto_start);
    env.send("agent.create", body).await
}

async fn allocations(env: &TestEnv) -> HashMap<String, String> {
    env.hash("gpu:allocations").await
}

fn held(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(d, a)| (d.to_string(), a.to_string()))
        .collect()
}

/// The container's device requests and environment, as Docker recorded them.
async fn devices_of(env: &TestEnv, id: &str) -> (Value, Vec<String>) {
    let c = env.inspect(id).await.expect("container exists");
    let requests = serde_json::to_value(
        c.host_config
            .as_ref()
            .and_then(|h| h.device_requests.clone())
            .unwrap_or_default(),
    )
    .unwrap();
    let env_vars = c.config.and_then(|c| c.env).unwrap_or_default();
    (requests, env_vars)
}

#[actix_rt::test]
async fn gpus_are_allocated_released_and_survive_a_manager_restart() {
    let probe = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
    let image = ImageTag::new(&probe);
    let mut env = TestEnv::start(&[
        ("DEPLOYMENT_MODE", "gpu"),
        ("GPU_DEVICES", "0,1"),
        ("GPU_IMAGE", &image.0),
    ])
    .await;
    let (a, b, c, d) = (
        env.agent_id("gpu-a"),
        env.agent_id("gpu-b"),
        env.agent_id("gpu-c"),
        env.agent_id("gpu-d"),
    );

    // A gets the first device: Docker records the device request, the environment
    // names it, and the GPU image is used since the create named none.
    let mid = create(&env, &a, 1, false).await;
    assert_eq!(env.answer(&mid, "agent.created").await.status, "created");
    assert_eq!(allocations(&env).await, held(&[("0", &a)]));
    let (requests, vars) = devices_of(&env, &a).await;
    assert_eq!(requests.as_array().map(Vec::len), Some(1), "{requests}");
    assert_eq!(requests[0]["Driver"], "nvidia", "{requests}");
    assert_eq!(requests[0]["DeviceIDs"], json!(["0"]), "{requests}");
    assert_eq!(requests[0]["Capabilities"], json!([["gpu"]]), "{requests}");
    assert!(
        vars.contains(&"NVIDIA_VISIBLE_DEVICES=0".to_string()),
        "{vars:?}"
    );
    // Its own RabbitMQ and Redis login, as in every mode (contract section 7).
    common::own_login(&a, &vars);
    let record = env.record(&a).await;
    assert_eq!(record["image"], image.0);
    let a_container = record["container_id"].clone();

    // B gets the other one; C finds none free and is refused, leaving nothing behind.
    let mid = create(&env, &b, 1, false).await;
    env.answer(&mid, "agent.created").await;
    assert_eq!(allocations(&env).await, held(&[("0", &a), ("1", &b)]));
    let mid = create(&env, &c, 1, false).await;
    let (code, err) = env.error_code(&mid).await;
    assert_eq!(code, "gpu_unavailable", "{}", err.details);
    assert!(
        err.details["message"].as_str().unwrap().contains("free"),
        "{}",
        err.details
    );
    assert!(
        env.record(&c).await.is_empty(),
        "no record for a refused create"
    );
    assert!(
        env.inspect(&c).await.is_none(),
        "no container for a refused create"
    );
    let users: Vec<String> = env.redis_query(redis::cmd("ACL").arg("USERS")).await;
    assert!(
        !users.contains(&format!("agent-{c}")),
        "no users for a refused create"
    );
    // More GPUs than the host has: refused too.
    let mid = create(&env, &c, 3, false).await;
    assert_eq!(env.error_code(&mid).await.0, "gpu_unavailable");

    // A restarted manager keeps the reservations: C is still refused.
    env.restart_manager().await;
    assert_eq!(allocations(&env).await, held(&[("0", &a), ("1", &b)]));
    let mid = create(&env, &c, 1, false).await;
    assert_eq!(env.error_code(&mid).await.0, "gpu_unavailable");

    // Stopping A releases its device, which C then gets.
    let mid = env.command("agent.stop", &a, json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    assert_eq!(allocations(&env).await, held(&[("1", &b)]));
    let mid = create(&env, &c, 1, false).await;
    env.answer(&mid, "agent.created").await;
    assert_eq!(allocations(&env).await, held(&[("0", &c), ("1", &b)]));

    // A cannot start now: every device is held.
    let mid = env.command("agent.start", &a, json!({})).await;
    let (code, err) = env.error_code(&mid).await;
    assert_eq!(code, "gpu_unavailable", "{}", err.details);
    assert_eq!(allocations(&env).await, held(&[("0", &c), ("1", &b)]));

    // Deleting C releases its device; A gets its old device back (same container),
    // and starting it fails clearly on this host without the NVIDIA runtime.
    let mid = env.command("agent.delete", &c, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    assert_eq!(allocations(&env).await, held(&[("1", &b)]));
    let mid = env.command("agent.start", &a, json!({})).await;
    let (code, err) = env.error_code(&mid).await;
    let message = err.details["message"].as_str().unwrap_or_default();
    assert_eq!(code, "gpu_unavailable", "{}", err.details);
    assert!(message.contains("NVIDIA container runtime"), "{message}");
    assert_eq!(env.record(&a).await["container_id"], a_container);
    assert_eq!(allocations(&env).await, held(&[("0", &a), ("1", &b)]));

    // A stops (releasing 0), D takes 0, so A's next start gets device 1 (freed by B's
    // stop): its container is re-created with the new device.
    for agent in [&a, &b] {
        let mid = env.command("agent.stop", agent, json!({})).await;
        env.answer(&mid, "agent.stopped").await;
    }
    assert_eq!(allocations(&env).await, HashMap::new());
    let mid = create(&env, &d, 1, false).await;
    env.answer(&mid, "agent.created").await;
    assert_eq!(allocations(&env).await, held(&[("0", &d)]));
    let mid = env.command("agent.start", &a, json!({})).await;
    assert_eq!(env.error_code(&mid).await.0, "gpu_unavailable");
    assert_eq!(allocations(&env).await, held(&[("0", &d), ("1", &a)]));
    let (requests, vars) = devices_of(&env, &a).await;
    assert_eq!(requests[0]["DeviceIDs"], json!(["1"]));
    assert!(
        vars.contains(&"NVIDIA_VISIBLE_DEVICES=1".to_string()),
        "{vars:?}"
    );
    let record = env.record(&a).await;
    assert_ne!(record["container_id"], a_container, "a new container");
    let live = env.inspect(&a).await.unwrap().id.unwrap();
    assert_eq!(
        record["container_id"], live,
        "the record follows the new container"
    );

    // Deleting every agent releases everything.
    for agent in [&a, &b, &d] {
        let mid = env.command("agent.delete", agent, json!({})).await;
        env.answer(&mid, "agent.deleted").await;
    }
    assert_eq!(allocations(&env).await, HashMap::new());
    env.finish().await;
}

#[actix_rt::test]
async fn agents_without_gpus_run_as_in_docker_mode() {
    let env = TestEnv::start(&[("DEPLOYMENT_MODE", "gpu"), ("GPU_DEVICES", "0")]).await;
    let id = env.agent_id("plain");
    let started = env.create_running(&id).await;
    assert_eq!(started.status, "running");
    assert!(env.running(&id).await);
    let (requests, vars) = devices_of(&env, &id).await;
    assert_eq!(requests, json!([]), "no device request without GPUs");
    assert!(!vars.iter().any(|v| v.starts_with("NVIDIA_")), "{vars:?}");
    assert_eq!(allocations(&env).await, HashMap::new());
    let mid = env.command("agent.delete", &id, json!({})).await;
    env.answer(&mid, "agent.deleted").await;
    env.finish().await;
}

#[actix_rt::test]
async fn gpus_are_refused_outside_gpu_mode() {
    let env = TestEnv::start(&[]).await;
    let id = env.agent_id("nogpu");
    let mid = create(&env, &id, 1, true).await;
    let (code, err) = env.error_code(&mid).await;
    assert_eq!(code, "gpu_unavailable");
    assert!(
        err.details["message"]
            .as_str()
            .unwrap()
            .contains("DEPLOYMENT_MODE=gpu"),
        "{}",
        err.details
    );
    assert!(env.inspect(&id).await.is_none());
    env.finish().await;
}
