//! Property tests (proptest) over everything a client sends before and after the upgrade:
//! client frames (any text, any JSON, the protocol's examples mutated), the resume parameters
//! of the connect URL, and tokens. For every input the parser answers, a frame or an error
//! with a code and a message, and never panics; what is valid round-trips.

use agent_protocol::{ClientFrame, ResumeParams, parse_client_frame};
use agent_server::auth::{Auth, AuthError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const EXAMPLES: &str = include_str!("../../docs/protocol-examples.json");

fn examples() -> Vec<Value> {
    let all: Value = serde_json::from_str(EXAMPLES).unwrap();
    all["client_to_server"].as_array().unwrap().clone()
}

/// Keys and strings a client frame is made of, so generated JSON often looks like a frame.
const WORDS: &[&str] = &[
    "type",
    "payload",
    "request_id",
    "agent",
    "message",
    "input",
    "run_id",
    "thread_id",
    "content",
    "text",
    "start_agent",
    "cancel_run",
    "ping",
    "user_message",
    "chat",
    "assistant",
    "run_01JD6QA0B1C2D3E4F5G6H7J8K9",
    "thr_01JD6Q9V3K8Z4X2M7N5P0R1S2T",
    "",
    "test",
    "\u{0}",
];

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value, leaning towards the shapes of client frames.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        word().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            proptest::collection::vec((word(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The answer to `text`: a frame, or an error with a code and a message.
fn answer(text: &str) -> Result<(), TestCaseError> {
    match parse_client_frame(text, "assistant") {
        Ok(_) => Ok(()),
        Err(error) => {
            prop_assert!(
                !error.message.is_empty(),
                "an error without a message for {text:?}"
            );
            prop_assert!(!error.code.as_str().is_empty());
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn any_text_is_a_frame_or_a_coded_error(text in any::<String>()) {
        answer(&text)?;
    }

    #[test]
    fn any_json_is_a_frame_or_a_coded_error(value in json_value()) {
        answer(&value.to_string())?;
    }

    /// An example frame with one field replaced by any JSON (or removed).
    #[test]
    fn mutated_examples_are_frames_or_coded_errors(
        which in 0..7usize,
        field in proptest::sample::select(&["type", "payload", "request_id", "agent", "message", "run_id", "input", "thread_id"][..]),
        replacement in proptest::option::of(json_value()),
    ) {
        let mut frame = examples()[which].clone();
        let target = if frame.get(field).is_some() || field == "type" || field == "request_id" {
            frame.as_object_mut().unwrap()
        } else {
            match frame.get_mut("payload").and_then(Value::as_object_mut) {
                Some(payload) => payload,
                None => frame.as_object_mut().unwrap(),
            }
        };
        match replacement {
            Some(value) => target.insert(field.to_owned(), value),
            None => target.remove(field),
        };
        answer(&frame.to_string())?;
    }

    /// A valid `start_agent` with any message and request id parses to exactly that.
    #[test]
    fn valid_starts_round_trip(message in any::<String>(), request in "[a-zA-Z0-9_-]{1,32}") {
        let text = json!({"type": "start_agent", "request_id": request,
                          "payload": {"agent": "assistant", "message": message}}).to_string();
        match parse_client_frame(&text, "assistant") {
            Ok(ClientFrame::StartAgent { request_id, payload }) => {
                prop_assert_eq!(request_id.as_deref(), Some(request.as_str()));
                prop_assert_eq!(payload.message, message);
            }
            // An empty or oversized message is refused with a code, never accepted changed.
            Err(error) => prop_assert!(!error.message.is_empty()),
            Ok(other) => prop_assert!(false, "parsed as {other:?}"),
        }
    }

    #[test]
    fn any_resume_parameters_are_a_resume_or_a_message(
        epoch in proptest::option::of(any::<String>()),
        seq in proptest::option::of(any::<String>()),
    ) {
        match ResumeParams::from_query(epoch.as_deref(), seq.as_deref()) {
            Ok(None) => prop_assert!(epoch.is_none() && seq.is_none()),
            Ok(Some(params)) => {
                prop_assert_eq!(Some(params.epoch.as_str()), epoch.as_deref());
                prop_assert_eq!(Some(params.after_seq), seq.and_then(|s| s.parse().ok()));
            }
            Err(message) => prop_assert!(!message.is_empty()),
        }
    }

    #[test]
    fn valid_resume_parameters_round_trip(epoch in "[!-~]{1,64}", seq in any::<u64>()) {
        let params = ResumeParams::from_query(Some(&epoch), Some(&seq.to_string()))
            .unwrap()
            .expect("both parameters make a resume");
        prop_assert_eq!(params.after_seq, seq);
        prop_assert_eq!(params.epoch.as_str(), epoch.as_str());
    }

    /// Any text, and any three dot-separated base64url parts, is refused with one of the
    /// fixed reasons (which carry nothing of the token).
    #[test]
    fn any_token_is_refused_with_a_reason(
        text in any::<String>(),
        parts in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 3),
        header in json_value(),
        claims in json_value(),
    ) {
        use base64::Engine;
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let auth = Auth::from_secret(b"0123456789abcdef0123456789abcdef", false);
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for token in [text, parts.join("."), format!("{}.{}.{}", b64(&header), b64(&claims), parts[2])] {
            // One of the fixed reasons: nothing of the token is in it.
            match runtime.block_on(auth.verify(&token)) {
                Err(AuthError::MissingClaim(claim)) => {
                    prop_assert!(["sub", "exp"].contains(&claim.as_str()), "{claim}")
                }
                Err(AuthError::Malformed | AuthError::Algorithm | AuthError::BadSignature) => {}
                other => prop_assert!(false, "{token:?} was answered {other:?}"),
            }
        }
    }
}
