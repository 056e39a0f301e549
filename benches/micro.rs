//! In-process hot paths: command decode + validate, event encode, record encode.
//! `cargo bench --bench micro`; under `cargo test --all-targets` each runs once.

use agent_manager::protocol::{decode_command, Event, EventKind};
use agent_manager::store::AgentRecord;
use agent_manager::Config;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde_json::json;

fn decode(c: &mut Criterion) {
    let policy = Config::defaults().agent_policy();
    let body = json!({
        "message_id": "m-1", "agent_id": "agent-1", "customer_id": "cust-1",
        "agent_type": "trading", "name": "Alpha",
        "config": {"symbol": "BTC-USD", "window": 30, "limits": {"max_position": 10}},
        "autogen_config": {"model": "gpt", "temperature": 0.2},
        "resources": {"memory_mb": 512, "cpus": 0.5}
    })
    .to_string();
    c.bench_function("decode_validate_create", |b| {
        b.iter(|| decode_command("agent.create", None, black_box(body.as_bytes()), &policy))
    });
    let start =
        json!({"message_id": "m-2", "agent_id": "agent-1", "customer_id": "cust-1"}).to_string();
    c.bench_function("decode_validate_start", |b| {
        b.iter(|| decode_command("agent.start", None, black_box(start.as_bytes()), &policy))
    });
}

fn encode(c: &mut Criterion) {
    let event = Event::new(
        EventKind::Health,
        "agent-1",
        "cust-1",
        Some("m-1"),
        "running",
        Some("0123456789abcdef"),
        json!({"health": "healthy", "state": "running", "cpu_percent": 1.5,
               "memory_bytes": 1234567, "memory_limit_bytes": 1073741824, "restart_count": 0}),
    );
    c.bench_function("event_encode", |b| b.iter(|| black_box(&event).to_json()));
    let policy = Config::defaults().agent_policy();
    let body = json!({"agent_id": "agent-1", "customer_id": "cust-1", "agent_type": "analysis",
                      "name": "Beta", "config": {"k": "v"}})
    .to_string();
    let Ok(cmd) = decode_command("agent.create", None, body.as_bytes(), &policy) else {
        panic!("bench command must be valid")
    };
    let agent_manager::protocol::Action::Create { spec, .. } = cmd.action else {
        panic!("create")
    };
    let record = AgentRecord::new(
        "agent-1",
        spec,
        agent_manager::protocol::DesiredState::Running,
    );
    c.bench_function("record_encode", |b| {
        b.iter(|| black_box(&record).to_fields())
    });
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
