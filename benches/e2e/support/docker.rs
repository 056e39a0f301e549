//! Docker without the manager: containers created and started straight through bollard
//! with the body the manager would send ([`direct_path`]), and Docker's own events of
//! the test's containers as they arrive ([`docker_events`]).

use std::time::{Duration, Instant};

use crate::common::TestEnv;
use crate::support::manager::small_agent;
use crate::support::report::ms;

/// What one path of the lifecycle comparison measured.
pub struct PathResult {
    pub total: Duration,
    /// Submission → started, per agent, ms.
    pub latency: Vec<f64>,
}

/// N containers created and started straight through bollard by `workers` workers, with
/// exactly the create body the manager would send. Latency counts from the burst's start
/// (every container is asked for at once, as the manager's commands are).
pub async fn direct_path(
    env: &TestEnv,
    n: usize,
    workers: usize,
    tag: &str,
) -> (PathResult, Vec<f64>) {
    use agent_manager::protocol::{decode_command, Action, DesiredState};
    let policy = env.config.agent_policy();
    let mut queue = std::collections::VecDeque::new();
    for i in 0..n {
        let id = env.agent_id(&format!("d{tag}x{i}"));
        let body = small_agent(env, &id).to_string();
        let Ok(cmd) = decode_command("agent.create", None, body.as_bytes(), &policy) else {
            panic!("the bench's create body must be valid")
        };
        let Action::Create { spec, .. } = cmd.action else {
            panic!("a create")
        };
        let record = agent_manager::store::AgentRecord::new(&id, spec, DesiredState::Running);
        queue.push_back(agent_manager::runtime::spec::build(&record, &env.config));
    }
    let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (queue, docker) = (queue.clone(), env.docker.clone());
        handles.push(actix_rt::spawn(async move {
            let mut done = Vec::new();
            loop {
                let Some(spec) = queue.lock().unwrap().pop_front() else {
                    return done;
                };
                let picked = Instant::now();
                let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
                    .name(&spec.name)
                    .build();
                let created = docker
                    .create_container(
                        Some(options),
                        agent_manager::runtime::docker::create_body(&spec),
                    )
                    .await
                    .expect("direct create");
                docker
                    .start_container(
                        &created.id,
                        None::<bollard::query_parameters::StartContainerOptions>,
                    )
                    .await
                    .expect("direct start");
                done.push((picked, Instant::now()));
            }
        }));
    }
    let mut latency = Vec::new();
    let mut service = Vec::new();
    let mut last = t0;
    for h in handles {
        for (picked, at) in h.await.expect("direct worker") {
            latency.push(ms(at - t0));
            service.push(ms(at - picked));
            last = last.max(at);
        }
    }
    (
        PathResult {
            total: last - t0,
            latency,
        },
        service,
    )
}

/// Docker's `event` events (`die`, `pause`, ...) of the test's containers as they
/// arrive here: (agent id, Docker's own timestamp in ns, host clock), in arrival order.
pub type SeenEvents = std::sync::Arc<std::sync::Mutex<Vec<(String, i64)>>>;

pub fn docker_events(env: &TestEnv, event: &str) -> SeenEvents {
    let seen = SeenEvents::default();
    let docker = env.docker.clone();
    let filters = std::collections::HashMap::from([
        ("event", vec![event.to_string()]),
        (
            "label",
            vec![format!("autogen.manager-instance={}", env.config.instance)],
        ),
    ]);
    let options = bollard::query_parameters::EventsOptionsBuilder::new()
        .filters(&filters)
        .build();
    let into = seen.clone();
    actix_rt::spawn(async move {
        use futures_util::StreamExt;
        let mut stream = docker.events(Some(options));
        while let Some(Ok(e)) = stream.next().await {
            let id = e
                .actor
                .and_then(|a| a.attributes)
                .and_then(|mut a| a.remove("autogen.agent-id"))
                .unwrap_or_default();
            into.lock().unwrap().push((id, e.time_nano.unwrap_or(0)));
        }
    });
    seen
}
