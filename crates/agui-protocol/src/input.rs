//! A `RunAgentInput` (the body of `POST /agui/{agent}`) read into what the server uses; every
//! refusal names the field and what is allowed.

use core_context::ThreadId;
use core_context::multitask::Multitask;
use serde_json::{Map, Value};

use crate::interrupts::{Answer, answers};
use crate::map::ClientIds;

/// An id of the client's (`threadId`, `runId`) at most, in bytes.
const MAX_ID_BYTES: usize = 256;

/// What the server takes from a valid `RunAgentInput`.
#[derive(Debug)]
pub struct Input {
    /// The client's `threadId` and `runId`, echoed in the run's events.
    pub ids: ClientIds,
    /// The last message's text: the run's message (empty when the input resumes a run).
    pub message: String,
    /// `threadId` when it is a valid thread id here.
    pub thread: Option<ThreadId>,
    /// `forwardedProps` without this server's own keys: the agent's options.
    pub options: Option<Map<String, Value>>,
    /// The answers to a paused run's interrupts, when this input resumes it.
    pub resume: Option<Vec<Answer>>,
    /// `forwardedProps.multitask`: what to do with the thread's live run.
    pub multitask: Option<Multitask>,
    /// `forwardedProps.rawEvent: true`: every mapped event carries the engine's frame as
    /// `rawEvent` (off by default: it doubles a response's size).
    pub raw_events: bool,
    /// `forwardedProps.onDisconnect: "continue"`: the run goes on when its response ends
    /// first (by default, `"cancel"`, it is cancelled unless a continuation takes it up).
    pub keep_running: bool,
}

/// Reads a `RunAgentInput`; the error names the field and what is allowed.
/// `max_message_bytes` bounds the user's message.
pub fn input(body: &Value, max_message_bytes: usize) -> Result<Input, String> {
    let id = |field: &str| -> Result<String, String> {
        match body.get(field) {
            Some(Value::String(id)) if !id.is_empty() && id.len() <= MAX_ID_BYTES => Ok(id.clone()),
            Some(Value::String(_)) => Err(format!("`{field}` must be 1 to {MAX_ID_BYTES} bytes")),
            Some(_) => Err(format!("`{field}` must be a string")),
            None => Err(format!(
                "`{field}` is missing (RunAgentInput needs threadId, runId and messages)"
            )),
        }
    };
    if !body.is_object() {
        return Err("the body must be a JSON object (a RunAgentInput)".into());
    }
    let ids = ClientIds {
        thread_id: id("threadId")?,
        run_id: id("runId")?,
    };
    let resume = match body.get("resume") {
        None | Some(Value::Null) => None,
        Some(resume) => Some(answers(resume)?),
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("`messages` must be an array of messages, the user's last".into());
    };
    if resume.is_some() {
        // The answers are the input: the messages are the conversation so far.
        return Ok(Input {
            ids,
            message: String::new(),
            thread: None,
            options: None,
            resume,
            multitask: None,
            raw_events: false,
            keep_running: false,
        });
    }
    let Some(last) = messages.last() else {
        return Err("`messages` is empty: the last message must be the user's".into());
    };
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return Err(
            "the last of `messages` must have role \"user\": it is what the agent answers".into(),
        );
    }
    let message = text_of(last.get("content"))?;
    if message.trim().is_empty() {
        return Err("the user's message is empty: send some text for the agent".into());
    }
    if message.len() > max_message_bytes {
        return Err(format!(
            "the user's message is {} bytes; the limit is {max_message_bytes}",
            message.len()
        ));
    }
    let mut options = match body.get("forwardedProps") {
        None | Some(Value::Null) => None,
        Some(Value::Object(props)) => Some(props.clone()),
        Some(_) => return Err("`forwardedProps` must be an object (the agent's options)".into()),
    };
    let own = match options.as_mut() {
        Some(props) => servers_props(props)?,
        None => ServersProps::default(),
    };
    let thread = ThreadId::parse(&ids.thread_id).ok();
    Ok(Input {
        ids,
        message,
        thread,
        options,
        resume: None,
        multitask: own.multitask,
        raw_events: own.raw_events,
        keep_running: own.keep_running,
    })
}

/// This server's own keys of `forwardedProps`.
#[derive(Debug, Default)]
struct ServersProps {
    multitask: Option<Multitask>,
    raw_events: bool,
    keep_running: bool,
}

/// Takes this server's own keys out of `forwardedProps` (the rest is the agent's options):
/// `multitask`, `rawEvent` and `onDisconnect`.
fn servers_props(props: &mut Map<String, Value>) -> Result<ServersProps, String> {
    let multitask = match props.remove("multitask") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(Multitask::parse(&name).ok_or_else(|| {
            format!(
                "`forwardedProps.multitask` {name:?} is not a strategy; use one of {}",
                Multitask::NAMES.join(", ")
            )
        })?),
        Some(_) => return Err("`forwardedProps.multitask` must be a string".into()),
    };
    let raw_events = match props.remove("rawEvent") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err("`forwardedProps.rawEvent` must be true or false".into()),
    };
    let keep_running = match props.remove("onDisconnect") {
        None | Some(Value::Null) => false,
        Some(Value::String(what)) if what == "cancel" => false,
        Some(Value::String(what)) if what == "continue" => true,
        Some(_) => {
            return Err("`forwardedProps.onDisconnect` must be \"cancel\" or \"continue\"".into());
        }
    };
    Ok(ServersProps {
        multitask,
        raw_events,
        keep_running,
    })
}

/// A message's content as text: a string, or text parts joined.
fn text_of(content: Option<&Value>) -> Result<String, String> {
    match content {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(piece))) => text.push_str(piece),
                    (kind, _) => {
                        return Err(format!(
                            "the user's message has a {} part; this server takes text only",
                            kind.unwrap_or("untyped")
                        ));
                    }
                }
            }
            Ok(text)
        }
        _ => Err("the user's message has no `content` (a string or text parts)".into()),
    }
}
