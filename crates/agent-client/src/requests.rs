//! Requests sent on the current connection and not yet answered, and how answers find them.
//!
//! The server handles one connection's frames in order and answers each before reading the
//! next, so answers come in the order the requests were sent: `start_agent` gets exactly one
//! (`run_accepted` or `error`), `ping` exactly one (`pong`), `cancel_run` and
//! `resolve_approval` an `error` or nothing. Answers are matched by the `request_id` the client
//! generates; since a successful cancel or decision has no answer, the client sends a `ping`
//! after it, and one still waiting when a later request is answered has succeeded. An `error` without a `request_id` (the server could not
//! read the frame's id, for example a frame over its size limit) answers the oldest request;
//! a `run_accepted` always carries its id, and one without is ignored.
//!
//! **Invariant:** every request gets exactly one outcome: its answer, or
//! [`ClientError::ConnectionLost`] when the connection ends first. Nothing is sent twice.

use std::collections::VecDeque;

use agent_protocol::{ClientFrame, ResolveApproval, ServerFrame, StartAgent};
use core_context::RunId;
use tokio::sync::oneshot;

use crate::error::ClientError;
use crate::stream::{Notice, RunAccepted};

/// A request the application makes.
#[derive(Debug)]
pub(crate) enum Request {
    /// `start_agent`.
    Start(StartAgent),
    /// `cancel_run`.
    Cancel(RunId),
    /// `resolve_approval`.
    Resolve(ResolveApproval),
    /// `ping`.
    Ping,
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    /// `run_accepted`.
    Accepted(RunAccepted),
    /// No `error` came for a `cancel_run`.
    Cancelled,
    /// No `error` came for a `resolve_approval`.
    Resolved,
    /// `pong`.
    Pong,
}

/// Where a request's outcome goes.
pub(crate) type Responder = oneshot::Sender<Result<Reply, ClientError>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Cancel,
    Resolve,
    Ping,
}

impl Kind {
    /// Whether success has no answer of its own, so a `ping` follows to learn of it.
    fn answered_by_silence(self) -> bool {
        matches!(self, Kind::Cancel | Kind::Resolve)
    }
}

#[derive(Debug)]
struct Entry {
    request_id: Option<String>,
    kind: Kind,
    /// `None` for the ping that follows a cancel.
    responder: Option<Responder>,
}

impl Entry {
    fn resolve(self, outcome: Result<Reply, ClientError>) {
        if let Some(responder) = self.responder {
            // The caller may have stopped waiting (a timeout); the outcome is then unwanted.
            let _unwanted = responder.send(outcome);
        }
    }

    /// Resolves an entry that a later answer went past: a cancel or a decision that drew no
    /// error has succeeded; anything else was never answered, which the protocol does not
    /// allow.
    fn passed(self) {
        let outcome = match self.kind {
            Kind::Cancel => Ok(Reply::Cancelled),
            Kind::Resolve => Ok(Reply::Resolved),
            Kind::Start | Kind::Ping => Err(ClientError::Protocol(
                "the server answered a later request before this one".into(),
            )),
        };
        self.resolve(outcome);
    }
}

/// The unanswered requests of one connection, oldest first.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    entries: VecDeque<Entry>,
    next_id: u64,
}

impl InFlight {
    /// Records `request` and returns the frames to send for it.
    pub(crate) fn send(&mut self, request: Request, responder: Responder) -> Vec<ClientFrame> {
        self.next_id += 1;
        let request_id = format!("req-{}", self.next_id);
        let (kind, frame) = match request {
            Request::Start(payload) => (
                Kind::Start,
                ClientFrame::start_agent(Some(request_id.clone()), payload),
            ),
            Request::Cancel(run_id) => (
                Kind::Cancel,
                ClientFrame::cancel_run(Some(request_id.clone()), run_id),
            ),
            Request::Resolve(payload) => (
                Kind::Resolve,
                ClientFrame::ResolveApproval {
                    request_id: Some(request_id.clone()),
                    payload,
                },
            ),
            Request::Ping => (Kind::Ping, ClientFrame::Ping),
        };
        self.entries.push_back(Entry {
            request_id: (kind != Kind::Ping).then_some(request_id),
            kind,
            responder: Some(responder),
        });
        let mut frames = vec![frame];
        if kind.answered_by_silence() {
            self.entries.push_back(Entry {
                request_id: None,
                kind: Kind::Ping,
                responder: None,
            });
            frames.push(ClientFrame::Ping);
        }
        frames
    }

    /// Hands an answer frame to its request. An `error` that answers no request comes back as
    /// a notice; frames that are not answers are ignored.
    pub(crate) fn answer(&mut self, frame: ServerFrame) -> Option<Notice> {
        match frame {
            ServerFrame::RunAccepted {
                request_id,
                run_id,
                thread_id,
                queued,
                position,
                steered,
            } => {
                let accepted = Reply::Accepted(RunAccepted {
                    run_id,
                    thread_id,
                    queued: queued.then_some(position.unwrap_or(1)),
                    steered,
                });
                // The server always echoes the id of a `start_agent` it accepted; a
                // `run_accepted` without one cannot be told apart from another's.
                match request_id.as_deref().and_then(|id| self.take_by_id(id)) {
                    Some(entry) => entry.resolve(Ok(accepted)),
                    None => tracing::warn!(?request_id, "run_accepted for no pending request"),
                }
                None
            }
            ServerFrame::Error {
                request_id,
                code,
                message,
                ..
            } => {
                let entry = match request_id.as_deref() {
                    Some(id) => self.take_by_id(id),
                    None => self.take_oldest_answerable(),
                };
                match entry {
                    Some(entry) => {
                        entry.resolve(Err(ClientError::Server { code, message }));
                        None
                    }
                    None => Some(Notice::ServerError { code, message }),
                }
            }
            ServerFrame::Pong { .. } => {
                match self.entries.iter().position(|e| e.kind == Kind::Ping) {
                    Some(index) => self.take_at(index).resolve(Ok(Reply::Pong)),
                    None => tracing::debug!("pong for no pending ping"),
                }
                None
            }
            ServerFrame::ConnectionEstablished { .. } => {
                tracing::warn!("a second connection_established on one connection; ignored");
                None
            }
        }
    }

    /// Fails every request with `error` (the connection ended).
    pub(crate) fn fail_all(&mut self, error: &ClientError) {
        for entry in self.entries.drain(..) {
            entry.resolve(Err(error.clone()));
        }
    }

    /// How many requests wait for an answer.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn take_by_id(&mut self, request_id: &str) -> Option<Entry> {
        let index = self
            .entries
            .iter()
            .position(|e| e.request_id.as_deref() == Some(request_id))?;
        Some(self.take_at(index))
    }

    fn take_oldest_answerable(&mut self) -> Option<Entry> {
        let index = self.entries.iter().position(|e| e.kind != Kind::Ping)?;
        Some(self.take_at(index))
    }

    /// Removes the entry at `index`, resolving the older ones the answer went past.
    fn take_at(&mut self, index: usize) -> Entry {
        for passed in self.entries.drain(..index).collect::<Vec<_>>() {
            passed.passed();
        }
        match self.entries.pop_front() {
            Some(entry) => entry,
            None => unreachable!("index {index} was found in the queue"),
        }
    }
}

#[cfg(test)]
mod tests {
    use agent_protocol::{ErrorCode, Timestamp};
    use core_context::ThreadId;
    use core_context::approval::Decision;

    use super::*;

    type Outcome = Result<Reply, ClientError>;

    fn start() -> Request {
        Request::Start(StartAgent {
            agent: "assistant".into(),
            message: "hi".into(),
            thread_id: None,
            input: None,
            multitask: None,
        })
    }

    fn resolve() -> Request {
        Request::Resolve(ResolveApproval {
            run_id: run(1),
            tool_call_id: "call_1".into(),
            decision: Decision::Approve,
        })
    }

    fn run(n: u32) -> RunId {
        RunId::parse(&format!("run_{n}")).unwrap()
    }

    fn accepted(request_id: &str, n: u32) -> ServerFrame {
        ServerFrame::RunAccepted {
            request_id: Some(request_id.into()),
            run_id: run(n),
            thread_id: ThreadId::parse("thr_1").unwrap(),
            queued: false,
            position: None,
            steered: false,
        }
    }

    fn error(request_id: Option<&str>, code: ErrorCode) -> ServerFrame {
        ServerFrame::error(request_id.map(str::to_owned), code, "no")
    }

    fn pong() -> ServerFrame {
        ServerFrame::Pong {
            server_time: Timestamp::now(),
        }
    }

    fn refused(code: ErrorCode) -> Outcome {
        Err(ClientError::Server {
            code,
            message: "no".into(),
        })
    }

    fn ok_accepted(n: u32) -> Outcome {
        Ok(Reply::Accepted(RunAccepted {
            run_id: run(n),
            thread_id: ThreadId::parse("thr_1").unwrap(),
            queued: None,
            steered: false,
        }))
    }

    /// Sends `requests` (ids `req-1`, `req-2`, ... in order), feeds `answers`, and compares
    /// each request's outcome (`None`: still waiting) and the notices that came out.
    fn check(
        requests: Vec<Request>,
        answers: Vec<ServerFrame>,
        expected: Vec<Option<Outcome>>,
        notices: usize,
    ) {
        let mut in_flight = InFlight::default();
        let mut receivers = Vec::new();
        for request in requests {
            let (tx, rx) = oneshot::channel();
            in_flight.send(request, tx);
            receivers.push(rx);
        }
        let got_notices = answers
            .into_iter()
            .filter_map(|a| in_flight.answer(a))
            .count();
        let got: Vec<Option<Outcome>> = receivers
            .into_iter()
            .map(|mut rx| rx.try_recv().ok())
            .collect();
        assert_eq!(got, expected);
        assert_eq!(got_notices, notices);
    }

    #[test]
    fn answers_table() {
        let unknown = ErrorCode::UnknownAgent;
        let not_found = ErrorCode::RunNotFound;
        // Concurrent starts, answered in order or (a broken server) not.
        check(
            vec![start(), start()],
            vec![accepted("req-1", 1), accepted("req-2", 2)],
            vec![Some(ok_accepted(1)), Some(ok_accepted(2))],
            0,
        );
        check(
            vec![start(), start()],
            vec![error(Some("req-1"), unknown.clone()), accepted("req-2", 2)],
            vec![Some(refused(unknown.clone())), Some(ok_accepted(2))],
            0,
        );
        // A cancel that fails, and one that succeeds (its ping is answered first).
        check(
            vec![Request::Cancel(run(1))],
            vec![error(Some("req-1"), not_found.clone()), pong()],
            vec![Some(refused(not_found.clone()))],
            0,
        );
        check(
            vec![Request::Cancel(run(1))],
            vec![pong()],
            vec![Some(Ok(Reply::Cancelled))],
            0,
        );
        // A cancel whose ping is not answered yet is still waiting.
        check(vec![Request::Cancel(run(1))], vec![], vec![None], 0);
        // A later start's answer also settles an earlier cancel.
        check(
            vec![Request::Cancel(run(1)), start()],
            vec![accepted("req-2", 2)],
            vec![Some(Ok(Reply::Cancelled)), Some(ok_accepted(2))],
            0,
        );
        // An error without an id answers the oldest request; one with an unknown id, none.
        check(
            vec![start(), Request::Ping],
            vec![error(None, ErrorCode::FrameTooLarge), pong()],
            vec![
                Some(refused(ErrorCode::FrameTooLarge)),
                Some(Ok(Reply::Pong)),
            ],
            0,
        );
        check(
            vec![start()],
            vec![error(Some("req-9"), ErrorCode::InternalError)],
            vec![None],
            1,
        );
        check(vec![], vec![error(None, ErrorCode::InvalidJson)], vec![], 1);
        let anonymous = ServerFrame::RunAccepted {
            request_id: None,
            run_id: run(1),
            thread_id: ThreadId::parse("thr_1").unwrap(),
            queued: false,
            position: None,
            steered: false,
        };
        check(vec![start()], vec![anonymous], vec![None], 0);
        // A pong that overtakes a start is a protocol violation, reported to the start.
        check(
            vec![start(), Request::Ping],
            vec![pong()],
            vec![
                Some(Err(ClientError::Protocol(
                    "the server answered a later request before this one".into(),
                ))),
                Some(Ok(Reply::Pong)),
            ],
            0,
        );
    }

    #[test]
    fn decisions_are_answered_like_cancels() {
        // Refused, or taken (its ping is answered first, or a later start's answer
        // goes past it).
        check(
            vec![resolve()],
            vec![
                error(Some("req-1"), ErrorCode::ApprovalAlreadyDecided),
                pong(),
            ],
            vec![Some(refused(ErrorCode::ApprovalAlreadyDecided))],
            0,
        );
        check(
            vec![resolve()],
            vec![pong()],
            vec![Some(Ok(Reply::Resolved))],
            0,
        );
        check(
            vec![resolve(), start()],
            vec![accepted("req-2", 2)],
            vec![Some(Ok(Reply::Resolved)), Some(ok_accepted(2))],
            0,
        );
    }

    #[test]
    fn a_lost_connection_fails_every_waiting_request() {
        let mut in_flight = InFlight::default();
        let mut receivers = Vec::new();
        for request in [start(), Request::Cancel(run(1)), Request::Ping] {
            let (tx, rx) = oneshot::channel();
            in_flight.send(request, tx);
            receivers.push(rx);
        }
        assert_eq!(in_flight.len(), 4, "the cancel's ping is in flight too");
        in_flight.fail_all(&ClientError::ConnectionLost);
        assert_eq!(in_flight.len(), 0);
        for mut rx in receivers {
            assert_eq!(rx.try_recv().unwrap(), Err(ClientError::ConnectionLost));
        }
    }

    #[test]
    fn frames_carry_fresh_request_ids() {
        let mut in_flight = InFlight::default();
        let (a, _ra) = oneshot::channel();
        let (b, _rb) = oneshot::channel();
        let first = in_flight.send(start(), a);
        let (c, _rc) = oneshot::channel();
        let second = in_flight.send(Request::Cancel(run(1)), b);
        let third = in_flight.send(resolve(), c);
        assert_eq!(first[0].request_id(), Some("req-1"));
        assert_eq!(second[0].request_id(), Some("req-2"));
        assert_eq!(second[1], ClientFrame::Ping);
        assert_eq!(
            third[0].to_text(),
            r#"{"type":"resolve_approval","request_id":"req-3","payload":{"run_id":"run_1","tool_call_id":"call_1","decision":"approve"}}"#
        );
        assert_eq!(third[1], ClientFrame::Ping);
        // A start's `multitask` is sent as given.
        let (d, _rd) = oneshot::channel();
        let Request::Start(mut payload) = start() else {
            unreachable!("start() is a start")
        };
        payload.thread_id = Some(ThreadId::parse("thr_1").unwrap());
        payload.multitask = Some(core_context::multitask::Multitask::Interrupt);
        let fourth = in_flight.send(Request::Start(payload), d);
        assert_eq!(
            fourth[0].to_text(),
            r#"{"type":"start_agent","request_id":"req-4","payload":{"agent":"assistant","message":"hi","thread_id":"thr_1","multitask":"interrupt"}}"#
        );
    }
}
