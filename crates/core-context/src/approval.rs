//! The vocabulary of approvals: a tool call that waits for a person ([`PendingCall`]) and
//! what the person decided ([`Decision`]).
//!
//! Plain data shared by the layers that meet a decision: the agent's tool dispatcher (which
//! acts on it), the history store (which keeps it), and the transports (which read it from a
//! client): `docs/protocol.md`, "Approvals".

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest `message` a person may give with a decision, in bytes.
pub const MAX_DECISION_MESSAGE_BYTES: usize = 16 * 1024;

/// What a paused run waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitingFor {
    /// People's decisions on its tool calls (`approval_requested`).
    Approval,
    /// Its user's budget, for its next model call (`budget_exhausted`).
    Budget,
}

impl WaitingFor {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitingFor::Approval => "approval",
            WaitingFor::Budget => "budget",
        }
    }

    /// Reads a stored name.
    pub fn parse(name: &str) -> Option<Self> {
        [WaitingFor::Approval, WaitingFor::Budget]
            .into_iter()
            .find(|w| w.as_str() == name)
    }
}

/// A tool call that waits for a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    /// The call's id (the model's own, or the dispatcher's).
    pub tool_call_id: String,
    /// The tool.
    pub tool_name: String,
    /// The arguments the agent asked for.
    pub arguments: Value,
}

/// What was decided about a waiting tool call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Run the tool with the arguments the agent asked for.
    Approve,
    /// Run the tool with these arguments instead (checked against the tool's schema).
    Edit {
        /// The arguments to run it with.
        arguments: Value,
    },
    /// Do not run it; the agent gets a result saying so, with the person's reason.
    Reject {
        /// Why, for the agent (and the model) to read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Do not run it; the person's message is the tool's result.
    Respond {
        /// The result the agent gets.
        message: String,
    },
    /// Nobody decided in time: handled as a rejection.
    Expired,
}

impl Decision {
    /// The decisions a person can send, as the wire names them.
    pub const NAMES: &'static [&'static str] = &["approve", "edit", "reject", "respond"];

    /// The decision's wire name (`approval_resolved`'s `decision`).
    pub fn name(&self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Edit { .. } => "edit",
            Decision::Reject { .. } => "reject",
            Decision::Respond { .. } => "respond",
            Decision::Expired => "expired",
        }
    }

    /// Whether the tool runs.
    pub fn runs_the_tool(&self) -> bool {
        matches!(self, Decision::Approve | Decision::Edit { .. })
    }

    /// Reads a person's decision from a request's fields (`decision`, `arguments`,
    /// `message`). The error names the field that is wrong and what it must be.
    pub fn from_request(
        decision: &str,
        arguments: Option<Value>,
        message: Option<String>,
    ) -> Result<Self, DecisionError> {
        if let Some(message) = &message
            && message.len() > MAX_DECISION_MESSAGE_BYTES
        {
            return Err(DecisionError::new(
                "message",
                format!(
                    "is {} bytes; at most {MAX_DECISION_MESSAGE_BYTES} are allowed",
                    message.len()
                ),
            ));
        }
        let decided = match decision {
            "approve" => Decision::Approve,
            "edit" => match arguments {
                Some(arguments @ Value::Object(_)) => {
                    return Ok(Decision::Edit { arguments });
                }
                Some(_) => {
                    return Err(DecisionError::new(
                        "arguments",
                        "must be a JSON object of the tool's arguments",
                    ));
                }
                None => {
                    return Err(DecisionError::new(
                        "arguments",
                        "is required for edit: the tool's arguments to run it with",
                    ));
                }
            },
            "reject" => Decision::Reject {
                message: message.filter(|m| !m.trim().is_empty()),
            },
            "respond" => match message {
                Some(message) if !message.trim().is_empty() => {
                    return if arguments.is_some() {
                        Err(DecisionError::new("arguments", "is only for edit"))
                    } else {
                        Ok(Decision::Respond { message })
                    };
                }
                _ => {
                    return Err(DecisionError::new(
                        "message",
                        "is required for respond: the text the agent gets as the tool's result",
                    ));
                }
            },
            other => {
                return Err(DecisionError::new(
                    "decision",
                    format!(
                        "{other:?} is not a decision; use one of {}",
                        Decision::NAMES.join(", ")
                    ),
                ));
            }
        };
        if arguments.is_some() {
            return Err(DecisionError::new("arguments", "is only for edit"));
        }
        Ok(decided)
    }

    /// The decision as its three stored parts: name, arguments (edit), message.
    pub fn parts(&self) -> (&'static str, Option<&Value>, Option<&str>) {
        match self {
            Decision::Edit { arguments } => (self.name(), Some(arguments), None),
            Decision::Reject { message } => (self.name(), None, message.as_deref()),
            Decision::Respond { message } => (self.name(), None, Some(message)),
            Decision::Approve | Decision::Expired => (self.name(), None, None),
        }
    }

    /// A decision from its stored parts ([`parts`](Self::parts)); `None` for a name that is
    /// not one or parts that do not fit it.
    pub fn from_parts(
        name: &str,
        arguments: Option<Value>,
        message: Option<String>,
    ) -> Option<Self> {
        Some(match name {
            "approve" => Decision::Approve,
            "edit" => Decision::Edit {
                arguments: arguments?,
            },
            "reject" => Decision::Reject { message },
            "respond" => Decision::Respond { message: message? },
            "expired" => Decision::Expired,
            _ => return None,
        })
    }
}

/// A decision that could not be read: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {problem}")]
pub struct DecisionError {
    /// The request's field (`decision`, `arguments`, `message`).
    pub field: &'static str,
    /// What is wrong.
    pub problem: String,
}

impl DecisionError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self {
            field,
            problem: problem.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn decisions_are_read_from_requests_naming_the_wrong_field() {
        let ok = |d: &str, a: Option<Value>, m: Option<&str>| {
            Decision::from_request(d, a, m.map(str::to_owned)).expect("a valid decision")
        };
        let err = |d: &str, a: Option<Value>, m: Option<&str>| {
            Decision::from_request(d, a, m.map(str::to_owned))
                .expect_err("an invalid decision")
                .to_string()
        };
        assert_eq!(ok("approve", None, None), Decision::Approve);
        assert_eq!(
            ok("edit", Some(json!({"expression": "1+1"})), None),
            Decision::Edit {
                arguments: json!({"expression": "1+1"})
            }
        );
        assert_eq!(
            ok("reject", None, Some("not now")),
            Decision::Reject {
                message: Some("not now".into())
            }
        );
        assert_eq!(
            ok("reject", None, Some("  ")),
            Decision::Reject { message: None }
        );
        assert_eq!(
            ok("respond", None, Some("42")),
            Decision::Respond {
                message: "42".into()
            }
        );
        assert!(err("maybe", None, None).starts_with("decision \"maybe\" is not a decision"));
        assert!(err("edit", None, None).starts_with("arguments is required for edit"));
        assert!(err("edit", Some(json!([1])), None).starts_with("arguments must be a JSON object"));
        assert!(err("approve", Some(json!({})), None).starts_with("arguments is only for edit"));
        assert!(err("respond", None, None).starts_with("message is required for respond"));
        let long = "x".repeat(MAX_DECISION_MESSAGE_BYTES + 1);
        assert!(err("reject", None, Some(&long)).starts_with("message is 16385 bytes"));
    }

    #[test]
    fn stored_parts_give_the_decision_back() {
        for decision in [
            Decision::Approve,
            Decision::Edit {
                arguments: json!({"a": 1}),
            },
            Decision::Reject { message: None },
            Decision::Reject {
                message: Some("no".into()),
            },
            Decision::Respond {
                message: "yes".into(),
            },
            Decision::Expired,
        ] {
            let (name, arguments, message) = decision.parts();
            let back = Decision::from_parts(name, arguments.cloned(), message.map(str::to_owned));
            assert_eq!(back.as_ref(), Some(&decision));
        }
        assert_eq!(Decision::from_parts("edit", None, None), None);
        assert_eq!(Decision::from_parts("nope", None, None), None);
    }
}
