//! Unit tests of swarm mode's pure parts: the service an agent becomes, tasks, nodes,
//! GPUs and API versions.

use super::nodes::*;
use super::service::*;
use super::task::*;
use super::*;
use crate::protocol::{AgentSpec, AgentType, DesiredState, Resources};
use crate::runtime::spec;
use crate::store::AgentRecord;
use bollard::models::{ContainerStatus, ObjectVersion, TaskState, TaskStatus};
use bollard::models::{
    EndpointSpecModeEnum, MountType, NodeState, ServiceSpecUpdateConfigOrderEnum,
    TaskSpecRestartPolicyConditionEnum,
};
use serde_json::json;

fn container_spec() -> ContainerSpec {
    let record = AgentRecord::new(
        "a1",
        AgentSpec {
            customer_id: "c1".into(),
            agent_type: AgentType::Trading,
            name: "Alpha".into(),
            config: json!({}),
            autogen_config: json!({}),
            resources: Resources {
                memory_mb: 256,
                cpus: 0.5,
                gpus: 0,
                max_messages_per_s: None,
            },
            image: "autogen-agent:latest".into(),
            egress: Vec::new(),
        },
        DesiredState::Running,
    );
    let mut config = Config::defaults();
    config.agents.module_mounts = vec!["/opt/modules:/modules".into()];
    // A HEALTHCHECK set on purpose (there is none by default).
    config.health.container_check = vec!["CMD-SHELL".into(), "test ! -e /tmp/unhealthy".into()];
    spec::build(&record, &config)
}

#[test]
fn service_carries_the_containers_labels_env_limits_and_security() {
    let c = container_spec();
    let s = service_spec(&c, 0, 10, 0, &Config::defaults().swarm, true);
    assert_eq!(s.name.as_deref(), Some("agent-a1"));
    assert_eq!(s.labels.as_ref(), Some(&c.labels));
    assert_eq!(replicas(&s), 0);
    let t = s.task_template.as_ref().unwrap();
    let cs = t.container_spec.as_ref().unwrap();
    assert_eq!(cs.labels.as_ref(), Some(&c.labels));
    assert_eq!(cs.env.as_ref(), Some(&c.env));
    assert_eq!(cs.read_only, Some(true));
    assert_eq!(cs.init, Some(true));
    assert_eq!(cs.capability_drop, Some(vec!["ALL".to_string()]));
    assert_eq!(cs.capability_add, None, "nothing added back by default");
    assert_eq!(cs.user, c.user);
    assert_eq!(
        cs.ulimits.as_ref().unwrap()[0].soft,
        Some(c.nofile as i64),
        "nofile as in docker mode"
    );
    assert_eq!(
        cs.privileges.as_ref().and_then(|p| p.no_new_privileges),
        Some(true)
    );
    assert_eq!(cs.stop_grace_period, Some(10 * SECOND_NS));
    let hc = cs
        .health_check
        .as_ref()
        .expect("the configured HEALTHCHECK");
    assert_eq!(
        hc.test.as_ref(),
        c.healthcheck.as_ref().map(|h| &h.test),
        "same check as docker mode"
    );
    let mounts = cs.mounts.as_ref().unwrap();
    assert_eq!(mounts[0].target.as_deref(), Some("/tmp"));
    assert_eq!(mounts[0].typ, Some(MountType::TMPFS));
    assert_eq!(mounts[1].source.as_deref(), Some("/opt/modules"));
    assert_eq!(mounts[1].read_only, Some(true));
    let l = limits(&s).unwrap();
    assert_eq!(l.memory_bytes, Some(256 * 1024 * 1024));
    assert_eq!(l.nano_cpus, Some(500_000_000));
    assert_eq!(l.pids, Some(256));
    let rp = t.restart_policy.as_ref().unwrap();
    assert_eq!(
        rp.condition,
        Some(TaskSpecRestartPolicyConditionEnum::ON_FAILURE)
    );
    assert_eq!(rp.max_attempts, Some(3));
    assert_eq!(
        t.networks.as_ref().unwrap()[0].target.as_deref(),
        Some("autogen-network")
    );
    assert_eq!(
        s.update_config.as_ref().unwrap().order,
        Some(ServiceSpecUpdateConfigOrderEnum::STOP_FIRST)
    );
}

fn task(id: &str, index: u64, state: TaskState, desired: TaskState) -> Task {
    Task {
        id: Some(id.into()),
        service_id: Some("s1".into()),
        version: Some(ObjectVersion { index: Some(index) }),
        desired_state: Some(desired),
        status: Some(TaskStatus {
            state: Some(state),
            container_status: Some(ContainerStatus {
                container_id: Some(format!("c-{id}")),
                exit_code: Some(if state == TaskState::FAILED { 3 } else { 0 }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn service(replicas: i64) -> Service {
    let c = container_spec();
    Service {
        id: Some("s1".into()),
        spec: Some(service_spec(
            &c,
            replicas,
            10,
            0,
            &Config::defaults().swarm,
            true,
        )),
        ..Default::default()
    }
}

#[test]
fn the_current_task_is_the_newest_meant_to_run() {
    let tasks = vec![
        task("old", 9, TaskState::FAILED, TaskState::SHUTDOWN),
        task("new", 5, TaskState::RUNNING, TaskState::RUNNING),
    ];
    assert_eq!(
        current_task(&tasks).and_then(|t| t.id.as_deref()),
        Some("new")
    );
    let o = observed_from(&service(1), &tasks);
    assert!(o.running);
    assert_eq!(o.state, "running");
    assert_eq!(o.id, "s1");
    assert_eq!(o.name, "agent-a1");
    assert_eq!(o.task_container_id.as_deref(), Some("c-new"));
    assert_eq!(o.restart_count, 1);
    assert_eq!(o.memory_bytes, 256 * 1024 * 1024);
    assert_eq!(o.exit_code, None);
    assert_eq!(
        o.labels.get("autogen.agent-id").map(String::as_str),
        Some("a1")
    );
}

#[test]
fn ended_and_absent_tasks_are_not_running() {
    let tasks = vec![task("t", 3, TaskState::FAILED, TaskState::SHUTDOWN)];
    let o = observed_from(&service(1), &tasks);
    assert!(!o.running);
    assert_eq!(o.state, "exited");
    assert_eq!(o.exit_code, Some(3));
    let o = observed_from(&service(0), &[]);
    assert_eq!((o.state.as_str(), o.running), ("exited", false));
    let o = observed_from(&service(1), &[]);
    assert_eq!((o.state.as_str(), o.running), ("created", false));
    let tasks = vec![task("t", 3, TaskState::STARTING, TaskState::RUNNING)];
    let o = observed_from(&service(1), &tasks);
    assert_eq!(
        (o.state.as_str(), o.health.as_str()),
        ("created", "starting")
    );
}

#[test]
fn one_listing_of_services_and_tasks_reads_as_each_service_observed() {
    let mut s2 = service(0);
    s2.id = Some("s2".into());
    let mut s3 = service(1);
    s3.id = Some("s3".into());
    let of = |mut t: Task, service: &str| {
        t.service_id = Some(service.into());
        t
    };
    let tasks = vec![
        task("old", 9, TaskState::FAILED, TaskState::SHUTDOWN),
        task("new", 5, TaskState::RUNNING, TaskState::RUNNING),
        of(
            task("done", 2, TaskState::COMPLETE, TaskState::SHUTDOWN),
            "s2",
        ),
        of(
            task("other", 7, TaskState::RUNNING, TaskState::RUNNING),
            "not-ours",
        ),
        Task {
            service_id: None,
            ..task("orphan", 8, TaskState::RUNNING, TaskState::RUNNING)
        },
    ];
    let services = [service(1), s2, s3];
    let briefs = briefs_from(&services, tasks.clone());
    assert_eq!(
        briefs.len(),
        3,
        "one per service, none for other services' tasks"
    );
    // Each is what observed_from makes of the service and its own tasks.
    assert_eq!(briefs[0], observed_from(&services[0], &tasks[..2]));
    assert_eq!(briefs[1], observed_from(&services[1], &tasks[2..3]));
    assert_eq!(briefs[2], observed_from(&services[2], &[]));
    let b = &briefs[0];
    assert_eq!((b.id.as_str(), b.name.as_str()), ("s1", "agent-a1"));
    assert_eq!(b.image, "autogen-agent:latest");
    assert_eq!(
        b.labels.get("autogen.agent-id").map(String::as_str),
        Some("a1")
    );
    assert_eq!((b.state.as_str(), b.running), ("running", true));
    assert_eq!(b.task_container_id.as_deref(), Some("c-new"));
    assert_eq!(
        (briefs[1].state.as_str(), briefs[1].running),
        ("exited", false)
    );
    assert_eq!(
        (briefs[2].state.as_str(), briefs[2].running),
        ("created", false)
    );
    assert!(briefs_from(&[], tasks).is_empty());
}

#[test]
fn an_image_pinned_by_digest_reads_as_its_name() {
    let mut s = service(1);
    let t = s.spec.as_mut().unwrap().task_template.as_mut().unwrap();
    t.container_spec.as_mut().unwrap().image = Some("autogen-agent:latest@sha256:0123".into());
    assert_eq!(observed_from(&s, &[]).image, "autogen-agent:latest");
}

fn node(id: &str, host: &str, state: NodeState) -> Node {
    Node {
        id: Some(id.into()),
        description: Some(bollard::models::NodeDescription {
            hostname: Some(host.into()),
            ..Default::default()
        }),
        status: Some(bollard::models::NodeStatus {
            state: Some(state),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn on(mut t: Task, node: &str) -> Task {
    t.node_id = Some(node.into());
    t
}

#[test]
fn the_current_task_names_its_node_by_hostname() {
    let nodes = node_infos(&[
        node("n1", "amc1", NodeState::READY),
        node("n3", "amc3", NodeState::DOWN),
    ]);
    assert_eq!(
        nodes.get("n3"),
        Some(&NodeInfo {
            hostname: "amc3".into(),
            ready: false
        })
    );
    let tasks = vec![
        on(
            task("old", 2, TaskState::RUNNING, TaskState::SHUTDOWN),
            "n3",
        ),
        on(task("new", 5, TaskState::RUNNING, TaskState::RUNNING), "n1"),
    ];
    assert_eq!(placed_on(&tasks, &nodes).as_deref(), Some("amc1"));
    // Not yet placed, or ended: no node.
    let pending = vec![task("p", 1, TaskState::PENDING, TaskState::RUNNING)];
    assert_eq!(placed_on(&pending, &nodes), None);
    let ended = vec![on(
        task("e", 1, TaskState::COMPLETE, TaskState::SHUTDOWN),
        "n1",
    )];
    assert_eq!(placed_on(&ended, &nodes), None);
    // A node the listing does not know yet: its id.
    let unknown = vec![on(
        task("u", 1, TaskState::RUNNING, TaskState::RUNNING),
        "n9",
    )];
    assert_eq!(placed_on(&unknown, &nodes).as_deref(), Some("n9"));
}

#[test]
fn a_task_on_a_lost_node_is_not_waited_for() {
    let nodes = node_infos(&[
        node("n1", "amc1", NodeState::READY),
        node("n3", "amc3", NodeState::DOWN),
    ]);
    let lost = on(task("t", 1, TaskState::RUNNING, TaskState::SHUTDOWN), "n3");
    let here = on(task("t", 1, TaskState::RUNNING, TaskState::SHUTDOWN), "n1");
    let gone = on(task("t", 1, TaskState::RUNNING, TaskState::SHUTDOWN), "n7");
    let unplaced = task("t", 1, TaskState::PENDING, TaskState::SHUTDOWN);
    let ended = on(task("t", 1, TaskState::SHUTDOWN, TaskState::SHUTDOWN), "n1");
    assert!(!may_end(&lost, &nodes), "its node is down");
    assert!(!may_end(&gone, &nodes), "its node left the swarm");
    assert!(may_end(&here, &nodes));
    assert!(may_end(&unplaced, &nodes), "no node yet: Swarm ends it");
    assert!(!may_end(&ended, &nodes), "already ended");
    assert_eq!(
        lost_node(&[here.clone(), lost.clone()], &nodes).as_deref(),
        Some("amc3")
    );
    assert_eq!(lost_node(&[here], &nodes), None);
}

#[test]
fn gpu_agents_reserve_the_generic_resource_and_skip_the_network_where_docker_must() {
    let policy = Config::defaults().swarm;
    let plain = service_spec(&container_spec(), 0, 10, 0, &policy, false);
    let template = plain.task_template.unwrap();
    assert!(template.resources.unwrap().reservations.is_none());
    assert_eq!(template.networks.unwrap().len(), 1, "no GPUs: the network");

    let mut c = container_spec();
    c.gpus = 2;
    let template = service_spec(&c, 1, 10, 0, &policy, false)
        .task_template
        .unwrap();
    let reserved = template
        .resources
        .and_then(|r| r.reservations)
        .and_then(|r| r.generic_resources)
        .unwrap();
    let d = reserved[0].discrete_resource_spec.clone().unwrap();
    assert_eq!((d.kind.as_deref(), d.value), (Some("NVIDIA-GPU"), Some(2)));
    assert!(template.networks.is_none(), "moby#44378: no network");
    let with = service_spec(&c, 0, 10, 0, &policy, true);
    assert_eq!(with.task_template.unwrap().networks.unwrap().len(), 1);
}

#[test]
fn services_use_dnsrr_and_the_agents_placement_constraints() {
    let mut policy = Config::defaults().swarm;
    let s = service_spec(&container_spec(), 0, 10, 0, &policy, true);
    assert_eq!(
        s.endpoint_spec.as_ref().and_then(|e| e.mode),
        Some(EndpointSpecModeEnum::DNSRR)
    );
    let placement = |s: &ServiceSpec| {
        s.task_template
            .as_ref()
            .and_then(|t| t.placement.as_ref())
            .and_then(|p| p.constraints.clone())
            .unwrap_or_default()
    };
    assert!(placement(&s).is_empty(), "none configured: anywhere");
    policy.constraints = vec!["node.role==worker".into()];
    policy.constraints_by_type.insert(
        "trading".into(),
        vec!["node.labels.autogen.pool==trading".into()],
    );
    policy
        .constraints_by_type
        .insert("analysis".into(), vec!["node.labels.x==y".into()]);
    policy.constraints_by_customer.insert(
        "c1".into(),
        vec!["node.labels.tenant==c1".into(), "node.role==worker".into()],
    );
    let s = service_spec(&container_spec(), 0, 10, 0, &policy, true);
    assert_eq!(
        placement(&s),
        vec![
            "node.role==worker".to_string(),
            "node.labels.autogen.pool==trading".to_string(),
            "node.labels.tenant==c1".to_string(),
        ],
        "general, then the type's (a trading agent), then the customer's, once each"
    );
}

#[test]
fn api_versions_compare() {
    assert_eq!(api_version("1.41"), Some((1, 41)));
    assert!(api_version("1.41").unwrap() < NO_NEW_PRIVILEGES_API);
    assert!(api_version("1.47").unwrap() >= NO_NEW_PRIVILEGES_API);
    assert_eq!(api_version("x"), None);
}
