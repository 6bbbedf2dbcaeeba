//! AG-UI's interrupts for runs that wait for approvals: a paused run ends its response with
//! `RUN_FINISHED` whose outcome is `{"type": "interrupt", "interrupts": [...]}`, one interrupt
//! per waiting tool call; a later `RunAgentInput` with `resume` entries answers them, and its
//! response streams the resumed run.
//!
//! An interrupt's `id` is `{run_id}/{tool_call_id}`, so a resume names its run without the
//! thread. Its `responseSchema` is the answer this server reads from a resume entry's
//! `payload`: `{"approved": true}` approves, with `"editedArgs"` it runs the tool with those
//! arguments instead, `{"approved": false, "message"?}` rejects (the reason reaches the
//! agent), `{"approved": false, "response": "..."}` answers in the tool's place. A `cancelled`
//! entry rejects the call.

use core_context::RunId;
use core_context::approval::Decision;
use serde_json::{Value, json};

/// One answered interrupt: the run, the call, and what was decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The paused run (the engine's id).
    pub run: RunId,
    /// The waiting call.
    pub tool_call_id: String,
    /// What the answer decides.
    pub decision: Decision,
}

/// A tool call waiting for a decision, as an interrupt names it.
#[derive(Debug, Clone, Copy)]
pub struct Waiting<'a> {
    /// The paused run (the engine's id).
    pub run_id: &'a str,
    /// The call.
    pub tool_call_id: &'a str,
    /// Its tool.
    pub tool_name: &'a str,
    /// The arguments the agent asked for.
    pub arguments: &'a Value,
    /// When it expires (Unix ms).
    pub expires_ms: i64,
}

/// The interrupt of a waiting call; `parameters` is the tool's argument schema, when known.
pub fn interrupt(record: &Waiting<'_>, parameters: Option<&Value>) -> Value {
    let expires = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(record.expires_ms).unwrap_or(0));
    json!({
        "id": format!("{}/{}", record.run_id, record.tool_call_id),
        "reason": "tool_call",
        "toolCallId": record.tool_call_id,
        "message": format!("Approve {}({})?", record.tool_name, record.arguments),
        "expiresAt": humantime::format_rfc3339_millis(expires).to_string(),
        "responseSchema": response_schema(parameters),
        "metadata": {"agentEngine": {"runId": record.run_id, "toolName": record.tool_name,
                                     "arguments": record.arguments}},
    })
}

/// What a resume entry's `payload` may hold (see the module documentation).
fn response_schema(parameters: Option<&Value>) -> Value {
    let edited = parameters
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    json!({
        "type": "object",
        "properties": {
            "approved": {"type": "boolean", "description": "run the tool (true) or not (false)"},
            "editedArgs": edited,
            "message": {"type": "string", "description": "why it is rejected, for the agent"},
            "response": {"type": "string", "description": "the tool's result, given in its place (with approved: false)"},
        },
        "required": ["approved"],
    })
}

/// The answers of a `RunAgentInput`'s `resume`; the error names the entry and the field.
pub fn answers(resume: &Value) -> Result<Vec<Answer>, String> {
    let Some(entries) = resume.as_array() else {
        return Err("`resume` must be an array of {interruptId, status, payload}".into());
    };
    if entries.is_empty() {
        return Err("`resume` is empty: answer the interrupts of the previous run".into());
    }
    entries
        .iter()
        .enumerate()
        .map(|(index, entry)| answer(entry).map_err(|e| format!("resume[{index}]: {e}")))
        .collect()
}

fn answer(entry: &Value) -> Result<Answer, String> {
    let id = entry["interruptId"]
        .as_str()
        .ok_or("`interruptId` must be the id of an interrupt (a string)")?;
    let (run, tool_call_id) = id
        .split_once('/')
        .filter(|(_, call)| !call.is_empty())
        .ok_or_else(|| format!("`interruptId` {id:?} is not an interrupt of this server"))?;
    let run = RunId::parse(run)
        .map_err(|_| format!("`interruptId` {id:?} is not an interrupt of this server"))?;
    let decision = match entry["status"].as_str() {
        Some("cancelled") => Decision::Reject {
            message: Some("the person dismissed the request".into()),
        },
        Some("resolved") => decision(&entry["payload"])?,
        _ => return Err("`status` must be \"resolved\" or \"cancelled\"".into()),
    };
    Ok(Answer {
        run,
        tool_call_id: tool_call_id.to_owned(),
        decision,
    })
}

/// A resolved entry's `payload` as a decision.
fn decision(payload: &Value) -> Result<Decision, String> {
    let approved = payload["approved"]
        .as_bool()
        .ok_or("`payload.approved` must be true or false")?;
    let text = |field: &str| -> Result<Option<String>, String> {
        match &payload[field] {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text.clone())),
            _ => Err(format!("`payload.{field}` must be a string")),
        }
    };
    let decided = match (approved, payload.get("editedArgs"), text("response")?) {
        (true, None | Some(Value::Null), _) => Decision::from_request("approve", None, None),
        (true, Some(args), _) => Decision::from_request("edit", Some(args.clone()), None),
        (false, _, Some(response)) => Decision::from_request("respond", None, Some(response)),
        (false, _, None) => Decision::from_request("reject", None, text("message")?),
    };
    decided.map_err(|e| format!("`payload`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: &str, payload: Value) -> Value {
        json!({"interruptId": "run_1/call_1", "status": status, "payload": payload})
    }

    #[test]
    fn resume_entries_become_decisions_naming_what_is_wrong() {
        let ok = |e: Value| answers(&json!([e])).unwrap().remove(0).decision;
        assert_eq!(
            ok(entry("resolved", json!({"approved": true}))),
            Decision::Approve
        );
        assert_eq!(
            ok(entry(
                "resolved",
                json!({"approved": true, "editedArgs": {"a": 1}})
            )),
            Decision::Edit {
                arguments: json!({"a": 1})
            }
        );
        assert_eq!(
            ok(entry(
                "resolved",
                json!({"approved": false, "message": "no"})
            )),
            Decision::Reject {
                message: Some("no".into())
            }
        );
        assert_eq!(
            ok(entry(
                "resolved",
                json!({"approved": false, "response": "42"})
            )),
            Decision::Respond {
                message: "42".into()
            }
        );
        assert!(matches!(
            ok(entry("cancelled", Value::Null)),
            Decision::Reject { .. }
        ));
        let parsed = answers(&json!([entry("resolved", json!({"approved": true}))])).unwrap();
        assert_eq!(parsed[0].run.as_str(), "run_1");
        assert_eq!(parsed[0].tool_call_id, "call_1");
        let err = |resume: Value| answers(&resume).unwrap_err();
        assert!(err(json!({})).contains("must be an array"));
        assert!(err(json!([])).contains("is empty"));
        assert!(err(json!([entry("maybe", json!({}))])).contains("resume[0]: `status`"));
        assert!(err(json!([entry("resolved", json!({}))])).contains("`payload.approved`"));
        assert!(
            err(json!([entry(
                "resolved",
                json!({"approved": true, "editedArgs": 3})
            )]))
            .contains("arguments must be a JSON object")
        );
        assert!(
            err(json!([{"interruptId": "nope", "status": "resolved"}]))
                .contains("is not an interrupt of this server")
        );
    }

    #[test]
    fn an_interrupt_names_its_run_call_and_answer() {
        let arguments = json!({"expression": "12*7"});
        let record = Waiting {
            run_id: "run_9",
            tool_call_id: "call_9",
            tool_name: "calculator",
            arguments: &arguments,
            expires_ms: 86_400_000,
        };
        let params = json!({"type": "object", "properties": {"expression": {"type": "string"}}});
        let interrupt = interrupt(&record, Some(&params));
        assert_eq!(interrupt["id"], "run_9/call_9");
        assert_eq!(interrupt["reason"], "tool_call");
        assert_eq!(interrupt["toolCallId"], "call_9");
        assert_eq!(
            interrupt["message"],
            r#"Approve calculator({"expression":"12*7"})?"#
        );
        assert_eq!(interrupt["expiresAt"], "1970-01-02T00:00:00.000Z");
        assert_eq!(
            interrupt["responseSchema"]["properties"]["editedArgs"],
            params
        );
        let back = answers(
            &json!([{"interruptId": interrupt["id"], "status": "resolved",
                                     "payload": {"approved": true}}]),
        )
        .unwrap();
        assert_eq!(
            (back[0].run.as_str(), back[0].tool_call_id.as_str()),
            ("run_9", "call_9")
        );
    }
}
