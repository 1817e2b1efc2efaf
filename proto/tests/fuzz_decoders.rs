//! Property-based fuzzing of every decoder in `zedops-proto` that reads bytes from the network
//! (issue 14): topics, request arguments, replies, statuses, snapshots, events, enrollment
//! tokens, SSE. Each must never panic, and what it rejects must carry a `{code, message}` error.
//! Bounded: proptest's default 256 cases per property (`PROPTEST_CASES` raises it).

use proptest::prelude::*;
use zedops_proto::ops::{self, Op};
use zedops_proto::{topics, AgentStatus, ContainerEvent, ErrorCode, Reply, Snapshot};

/// Bytes that are often almost-JSON: random bytes, random JSON-ish text, and mutations of
/// valid payloads.
fn payloads() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        "[\\{\\}\\[\\]\":,0-9a-z_.\\- \\\\]{0,256}".prop_map(String::into_bytes),
        (0usize..64, any::<u8>()).prop_map(|(at, b)| {
            let mut v = br#"{"container":"web-1","grace_s":10,"tail":5,"all":true,"signal":"HUP"}"#
                .to_vec();
            let i = at % v.len();
            v[i] = b;
            v
        }),
    ]
}

fn args_reject_with_a_message<O: Op>(p: &[u8]) {
    if let Err(e) = ops::parse_args::<O>(p) {
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(!e.message.is_empty());
    }
}

proptest! {
    #[test]
    fn topics_parse_anything(t in "\\PC{0,80}", bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        for s in [t, String::from_utf8_lossy(&bytes).into_owned()] {
            if let Some(topics::Topic::Status { agent } | topics::Topic::Events { agent }) = topics::parse(&s) {
                prop_assert!(zedops_proto::names::is_valid_agent_name(agent));
            }
        }
    }

    #[test]
    fn request_arguments(p in payloads()) {
        args_reject_with_a_message::<ops::Ping>(&p);
        args_reject_with_a_message::<ops::ContainersList>(&p);
        args_reject_with_a_message::<ops::ContainerInspect>(&p);
        args_reject_with_a_message::<ops::ContainerStart>(&p);
        args_reject_with_a_message::<ops::ContainerStop>(&p);
        args_reject_with_a_message::<ops::ContainerKill>(&p);
        args_reject_with_a_message::<ops::ContainerLogs>(&p);
        if let Ok(a) = ops::parse_args::<ops::ContainerStop>(&p) {
            let _ = a.grace();
        }
        if let Ok(a) = ops::parse_args::<ops::ContainerLogs>(&p) {
            let _ = a.tail();
        }
        args_reject_with_a_message::<ops::ContainerExec>(&p);
        args_reject_with_a_message::<ops::ActionRun>(&p);
    }

    /// `action.run` parameters of any JSON shape against a schema of every type: checked, never
    /// a panic, and a refusal always names a parameter.
    #[test]
    fn action_parameters(values in proptest::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            any::<bool>().prop_map(serde_json::Value::from),
            "\\PC{0,40}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"a": [1]})),
            Just(serde_json::Value::Null),
        ],
        0..5,
    )) {
        let action: zedops_proto::defined::DefinedAction = serde_json::from_value(serde_json::json!({
            "name": "a", "target": "host", "role": "operator", "timeout_s": 5, "source": "file",
            "params": [
                {"name": "s", "type": "string", "pattern": "[a-z ]{1,20}", "default": "x"},
                {"name": "i", "type": "int", "min": -5, "max": 5, "default": "0"},
                {"name": "e", "type": "enum", "choices": ["x", "y"], "default": "x"},
                {"name": "b", "type": "bool", "default": "false"},
                {"name": "free", "type": "string", "default": "ok"}
            ]
        })).map_err(|e| TestCaseError::fail(e.to_string()))?;
        match action.check_params(&values) {
            Ok(got) => prop_assert_eq!(got.len(), 5),
            Err(e) => prop_assert!(!e.param.is_empty() && !e.why.is_empty()),
        }
    }

    #[test]
    fn replies_and_state(p in payloads()) {
        if let Err(e) = Reply::decode::<serde_json::Value>(&p) {
            prop_assert!(!e.message.is_empty());
        }
        let _ = serde_json::from_slice::<AgentStatus>(&p);
        let _ = serde_json::from_slice::<Snapshot>(&p);
        let _ = serde_json::from_slice::<ContainerEvent>(&p);
    }

    #[test]
    fn enrollment_tokens(t in "\\PC{0,160}", name in "[a-z0-9_-]{0,20}") {
        let _ = zedops_proto::enrollment::agent_of(&t);
        if let Some(tok) = zedops_proto::enrollment::parse(&name, &t) {
            prop_assert_eq!(tok.agent, name.as_str());
        }
    }

    #[test]
    fn sse_frames(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16)) {
        let mut b = zedops_proto::sse::SseBuffer::new();
        for c in &chunks {
            b.push(c);
            while b.next_event().is_some() {}
        }
    }

    #[test]
    fn encoded_log_length_is_exact(text in "\\PC{0,64}|[\\x00-\\x1f\"\\\\]{0,64}") {
        let line = ops::LogLine { stream: "stdout".into(), text: text.clone() };
        let written = serde_json::to_string(&line).map(|s| s.len() + 1).unwrap_or(0);
        prop_assert_eq!(ops::LogLine::encoded_len("stdout", &text), written);
    }
}
