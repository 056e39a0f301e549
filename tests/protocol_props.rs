//! Property-based tests of command decoding and validation (no services needed): any
//! bytes and any JSON never panic; every accepted command satisfies the contract's
//! invariants; valid commands round-trip; a refused one names the field that is wrong.

use agent_manager::protocol::image::parse_image_ref;
use agent_manager::protocol::{
    decode_command, valid_agent_id, Action, AgentPolicy, Command, CommandKind, ErrorCode, Rejection,
};
use agent_manager::Config;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn policy() -> AgentPolicy {
    Config::defaults().agent_policy()
}

const FIELDS: [&str; 17] = [
    "message_id",
    "command",
    "agent_id",
    "customer_id",
    "agent_type",
    "name",
    "config",
    "autogen_config",
    "resources",
    "image",
    "auto_start",
    "timeout_s",
    "force",
    "reason",
    "requested_by",
    "team_id",
    "agent_ids",
];

const ROUTING_KEYS: [&str; 13] = [
    "agent.create",
    "agent.update",
    "agent.start",
    "agent.stop",
    "agent.delete",
    "agent.restart",
    "agent-manager.commands",
    "agent.explode",
    "",
    "agent.pause",
    "agent.resume",
    "team.orchestrate",
    "team.disband",
];

fn arb_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(&FIELDS[..]).prop_map(str::to_string),
        1 => prop::sample::select(&["memory_mb", "cpus", "gpus"][..]).prop_map(str::to_string),
        1 => any::<String>(),
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        prop::sample::select(&ROUTING_KEYS[..]).prop_map(|s| json!(s)),
        prop::sample::select(&["trading", "custom", "autogen-agent:latest", "a1", "c1"][..])
            .prop_map(|s| json!(s)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 128, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((arb_key(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(m) => 1 + m.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

/// What every accepted command guarantees, whatever came in.
fn check_invariants(cmd: &Command, p: &AgentPolicy) -> Result<(), TestCaseError> {
    prop_assert!(valid_agent_id(&cmd.agent_id), "agent_id {:?}", cmd.agent_id);
    prop_assert!(!cmd.customer_id.is_empty() && cmd.customer_id.len() <= 128);
    prop_assert!(printable(&cmd.customer_id));
    prop_assert!(!cmd.message_id.is_empty() && cmd.message_id.len() <= 255);
    prop_assert!(printable(&cmd.message_id));
    let object_ok = |v: &Value| -> Result<(), TestCaseError> {
        prop_assert!(v.is_object(), "{v}");
        prop_assert!(serde_json::to_vec(v).unwrap().len() <= p.max_config_bytes);
        prop_assert!(json_depth(v) <= p.max_config_depth);
        Ok(())
    };
    let name_ok = |n: &str| -> Result<(), TestCaseError> {
        let len = n.chars().count();
        prop_assert!((1..=128).contains(&len) && printable(n), "name {n:?}");
        Ok(())
    };
    let image_ok = |i: &str| -> Result<(), TestCaseError> {
        prop_assert!(parse_image_ref(i).is_some(), "image {i:?}");
        prop_assert!(p.image_allowed(i), "image {i:?}");
        Ok(())
    };
    match &cmd.action {
        Action::Create { spec, .. } => {
            prop_assert_eq!(cmd.kind, CommandKind::Create);
            prop_assert_eq!(&spec.customer_id, &cmd.customer_id);
            name_ok(&spec.name)?;
            object_ok(&spec.config)?;
            object_ok(&spec.autogen_config)?;
            let r = spec.resources;
            prop_assert!(r.memory_mb >= p.min_memory_mb && r.memory_mb <= p.max_memory_mb);
            prop_assert!(r.cpus >= p.min_cpus && r.cpus <= p.max_cpus);
            prop_assert!(r.gpus <= p.max_gpus);
            image_ok(&spec.image)?;
        }
        Action::Update { patch } => {
            prop_assert_eq!(cmd.kind, CommandKind::Update);
            if let Some(n) = &patch.name {
                name_ok(n)?;
            }
            for v in [&patch.config, &patch.autogen_config].into_iter().flatten() {
                object_ok(v)?;
            }
            if let Some(m) = patch.resources.memory_mb {
                prop_assert!(m >= p.min_memory_mb && m <= p.max_memory_mb);
            }
            if let Some(c) = patch.resources.cpus {
                prop_assert!(c >= p.min_cpus && c <= p.max_cpus);
            }
            if let Some(g) = patch.resources.gpus {
                prop_assert!(g <= p.max_gpus);
            }
            if let Some(i) = &patch.image {
                image_ok(i)?;
            }
        }
        Action::Start => prop_assert_eq!(cmd.kind, CommandKind::Start),
        Action::Pause => prop_assert_eq!(cmd.kind, CommandKind::Pause),
        Action::Resume => prop_assert_eq!(cmd.kind, CommandKind::Resume),
        Action::Stop(order) => {
            prop_assert!(order.timeout_s <= p.max_stop_timeout_s);
            prop_assert!(!order.force || order.timeout_s == 0, "forced: no grace");
            if let Some(r) = &order.reason {
                prop_assert!(r.chars().count() <= 500 && printable(r), "reason {r:?}");
            }
            if let Some(by) = &order.requested_by {
                prop_assert!(
                    by.chars().count() <= 128 && printable(by),
                    "requested_by {by:?}"
                );
            }
        }
        Action::Restart { timeout_s } | Action::Delete { timeout_s } => {
            prop_assert!(*timeout_s <= p.max_stop_timeout_s);
        }
    }
    Ok(())
}

/// What every refusal guarantees: something safe to echo, and the right kind of answer.
fn check_rejection(r: &Rejection) -> Result<(), TestCaseError> {
    match r {
        Rejection::NotAnObject(reason) => prop_assert!(!reason.is_empty()),
        Rejection::Invalid(e) => {
            prop_assert!(matches!(
                e.code,
                ErrorCode::InvalidMessage | ErrorCode::ValidationFailed
            ));
            prop_assert!(!e.message.is_empty());
            prop_assert!(!e.message_id.is_empty() && e.message_id.len() <= 255);
            prop_assert!(printable(&e.message_id));
            prop_assert!(printable(&e.agent_id) && e.agent_id.chars().count() <= 63);
            prop_assert!(printable(&e.customer_id) && e.customer_id.chars().count() <= 128);
        }
    }
    Ok(())
}

fn decode(rk: &str, amqp_id: Option<&str>, body: &[u8]) -> Result<(), TestCaseError> {
    let p = policy();
    match decode_command(rk, amqp_id, body, &p) {
        Ok(cmd) => check_invariants(&cmd, &p),
        Err(r) => check_rejection(&r),
    }
}

fn valid_create() -> impl Strategy<Value = (Value, String)> {
    (
        "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}",
        "\\PC{1,32}",
        prop::sample::select(
            &[
                "trading",
                "analysis",
                "risk_management",
                "portfolio_optimization",
                "custom",
            ][..],
        ),
        "[a-zA-Z0-9 ]{1,128}",
        16u64..=65536,
        1u32..=6400,
        0u32..=8,
        prop_oneof![
            Just("autogen-agent:latest".to_string()),
            "[a-z0-9]{1,10}".prop_map(|t| format!("autogen-agent:{t}")),
            "[a-f0-9]{64}".prop_map(|d| format!("autogen-agent@sha256:{d}")),
        ],
        any::<bool>(),
        prop::collection::btree_map("[a-z_]{1,8}", any::<i32>(), 0..5),
        "[ -~]{1,255}",
    )
        .prop_map(
            |(agent_id, customer, agent_type, name, mem, cpu_hundredths, gpus, image, auto, cfg, mid)| {
                let body = json!({
                    "message_id": mid,
                    "agent_id": agent_id,
                    "customer_id": customer,
                    "agent_type": agent_type,
                    "name": name,
                    "config": cfg,
                    "autogen_config": {"model": "m"},
                    "resources": {"memory_mb": mem, "cpus": f64::from(cpu_hundredths) / 100.0, "gpus": gpus},
                    "image": image,
                    "auto_start": auto,
                });
                (body, mid)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(
        rk in prop::sample::select(&ROUTING_KEYS[..]),
        body in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        decode(rk, Some("amqp-id"), &body)?;
    }

    #[test]
    fn arbitrary_json_never_panics_and_accepted_commands_hold_the_invariants(
        rk in prop::sample::select(&ROUTING_KEYS[..]),
        amqp_id in prop::option::of(any::<String>()),
        value in arb_json(),
    ) {
        decode(rk, amqp_id.as_deref(), value.to_string().as_bytes())?;
    }

    #[test]
    fn objects_with_command_fields_never_panic(
        rk in prop::sample::select(&ROUTING_KEYS[..]),
        fields in prop::collection::vec((arb_key(), arb_json()), 0..14),
    ) {
        let obj: Map<String, Value> = fields.into_iter().collect();
        decode(rk, None, Value::Object(obj).to_string().as_bytes())?;
    }

    #[test]
    fn valid_creates_round_trip((body, mid) in valid_create()) {
        let cmd = decode_command("agent.create", None, body.to_string().as_bytes(), &policy())
            .map_err(|e| TestCaseError::fail(format!("{body} refused: {e:?}")))?;
        check_invariants(&cmd, &policy())?;
        prop_assert_eq!(&cmd.message_id, &mid);
        prop_assert!(cmd.message_id_given);
        prop_assert_eq!(&cmd.agent_id, body["agent_id"].as_str().unwrap());
        let Action::Create { spec, auto_start } = cmd.action else {
            return Err(TestCaseError::fail("not a create"));
        };
        prop_assert_eq!(auto_start, body["auto_start"].as_bool().unwrap());
        prop_assert_eq!(&spec.customer_id, body["customer_id"].as_str().unwrap());
        prop_assert_eq!(spec.agent_type.as_str(), body["agent_type"].as_str().unwrap());
        prop_assert_eq!(&spec.name, body["name"].as_str().unwrap());
        prop_assert_eq!(&spec.config, &body["config"]);
        prop_assert_eq!(&spec.autogen_config, &body["autogen_config"]);
        prop_assert_eq!(&spec.image, body["image"].as_str().unwrap());
        prop_assert_eq!(json!(spec.resources), body["resources"].clone());
    }

    #[test]
    fn other_valid_commands_round_trip(
        rk in prop::sample::select(&ROUTING_KEYS[1..6]),
        agent_id in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}",
        customer in "\\PC{1,32}",
        timeout in 0u32..=300,
    ) {
        let body = json!({"agent_id": agent_id, "customer_id": customer, "timeout_s": timeout});
        let cmd = decode_command(rk, Some("m-1"), body.to_string().as_bytes(), &policy())
            .map_err(|e| TestCaseError::fail(format!("{body} refused: {e:?}")))?;
        check_invariants(&cmd, &policy())?;
        prop_assert_eq!(cmd.kind.routing_key(), rk);
        prop_assert_eq!(&cmd.agent_id, &agent_id);
        prop_assert_eq!(&cmd.customer_id, &customer);
        prop_assert_eq!(&cmd.message_id, "m-1");
        match cmd.action {
            Action::Stop(order) => prop_assert_eq!(order.timeout_s, timeout),
            Action::Restart { timeout_s } | Action::Delete { timeout_s } => {
                prop_assert_eq!(timeout_s, timeout)
            }
            Action::Update { patch } => prop_assert_eq!(patch, Default::default()),
            Action::Start | Action::Pause | Action::Resume => {}
            Action::Create { .. } => return Err(TestCaseError::fail("create from a non-create key")),
        }
    }

    #[test]
    fn one_wrong_field_is_refused_by_name(
        (body, _) in valid_create(),
        field in prop::sample::select(&FIELDS[..]),
        value in arb_json(),
    ) {
        let mut body = body;
        body[field] = value;
        match decode_command("agent.create", None, body.to_string().as_bytes(), &policy()) {
            Ok(cmd) => check_invariants(&cmd, &policy())?,
            Err(Rejection::Invalid(e)) => {
                // `command` is not read when the routing key is a command.
                prop_assert_ne!(field, "command");
                prop_assert_eq!(e.code, ErrorCode::ValidationFailed);
                prop_assert!(e.message.contains(field), "{} does not name {}", e.message, field);
            }
            Err(other) => return Err(TestCaseError::fail(format!("{other:?}"))),
        }
    }

    #[test]
    fn deep_nesting_anywhere_is_refused_quickly(
        depth in 1usize..20_000,
        open in prop::sample::select(&["[", "{\"k\":"][..]),
        place in 0usize..4,
    ) {
        let close = if open == "[" { "]" } else { "}" };
        let deep = format!("{}0{}", open.repeat(depth), close.repeat(depth));
        let body = match place {
            0 => format!(r#"{{"agent_id":"a","customer_id":"c","config":{deep}}}"#),
            1 => format!(r#"{{"agent_id":"a","customer_id":"c","x_unknown":{deep}}}"#),
            2 => format!(r#"{{"agent_id":{deep},"customer_id":"c"}}"#),
            _ => deep,
        };
        let started = std::time::Instant::now();
        decode("agent.update", None, body.as_bytes())?;
        prop_assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }
}
