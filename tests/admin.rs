//! The admin endpoint of a running manager: liveness, readiness and Prometheus
//! metrics that move with real commands.

mod common;

use common::TestEnv;

#[actix_rt::test]
async fn healthz_readyz_and_metrics_follow_real_work() {
    let env = TestEnv::start(&[]).await;
    let (status, body) = env.admin_get("/healthz").await;
    assert_eq!((status, body.trim()), (200, "ok"));

    let (status, body) = env.admin_get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["checks"]["rabbitmq_consuming"], true);
    assert_eq!(ready["checks"]["redis_and_docker"], true);

    let id = env.agent_id("metered");
    env.create_running(&id).await;
    let mid = env.command("agent.stop", &id, serde_json::json!({})).await;
    env.answer(&mid, "agent.stopped").await;
    let mid = env
        .command("agent.stop", "no-such-agent-x", serde_json::json!({}))
        .await;
    env.error_code(&mid).await;

    let (status, text) = env.admin_get("/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "# TYPE agent_manager_commands_total counter",
        "agent_manager_commands_total{command=\"agent.create\",outcome=\"ok\"}",
        "agent_manager_commands_total{command=\"agent.stop\",outcome=\"not_found\"}",
        "agent_manager_command_duration_seconds_bucket{command=\"agent.create\",le=\"+Inf\"}",
        "agent_manager_events_published_total{event=\"agent.started\"}",
        "agent_manager_docker_call_duration_seconds_count{op=\"create container\"}",
        "agent_manager_agents{status=\"stopped\",type=\"trading\"} 1",
        "agent_manager_ready 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let (status, _) = env.admin_get("/nope").await;
    assert_eq!(status, 404);
    env.finish().await;
}
