//! The messages a node reads on its channels (see `scripts` for who sends them): a batch of
//! frames of the users it follows, and the announcement of a stream that starts.

/// One frame of a node's events message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) user: &'a str,
    pub(crate) epoch: &'a str,
    pub(crate) seq: u64,
    /// The event's JSON without its opening brace.
    pub(crate) rest: &'a str,
}

impl Record<'_> {
    /// Writes the frame, `{"seq":<seq>,` and the rest of the event's JSON, into `frame`
    /// (emptied first: one buffer serves every record of a message).
    pub(crate) fn write_frame(&self, frame: &mut String) {
        frame.clear();
        frame.push_str("{\"seq\":");
        // Writing to a String cannot fail.
        let _ = std::fmt::Write::write_fmt(frame, format_args!("{}", self.seq));
        frame.push(',');
        frame.push_str(self.rest);
    }
}

/// Reads a node's events message: `<user>\n<epoch>\n<seq>\n<rest>` records joined by `\n`
/// (see the module documentation). `None` when any record is not one.
pub(crate) fn parse_events(payload: &[u8]) -> Option<Vec<Record<'_>>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut lines = text.split('\n');
    let mut records = Vec::new();
    while let Some(user) = lines.next() {
        let epoch = lines.next()?;
        let seq = lines.next()?.parse().ok()?;
        let rest = lines.next()?;
        if user.is_empty() || epoch.is_empty() || !rest.starts_with('"') || !rest.ends_with('}') {
            return None;
        }
        records.push(Record {
            user,
            epoch,
            seq,
            rest,
        });
    }
    Some(records)
}

/// Reads an announcement of a stream that started: `<user>\n<epoch>`.
pub(crate) fn parse_opened(payload: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(payload).ok()?;
    text.split_once('\n')
        .filter(|(user, epoch)| !user.is_empty() && !epoch.is_empty() && !epoch.contains('\n'))
}

/// Reads a frame's seq (see [`parse_events`]).
pub(crate) fn frame_seq(frame: &str) -> Option<u64> {
    let digits = frame.strip_prefix("{\"seq\":")?;
    digits[..digits.find(',')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_messages_parse_or_are_refused() {
        let one = parse_events(b"alice\nep1\n42\n\"type\":\"x\"}").expect("one record");
        assert_eq!(
            one,
            vec![Record {
                user: "alice",
                epoch: "ep1",
                seq: 42,
                rest: "\"type\":\"x\"}",
            }]
        );
        let mut frame = String::from("left over");
        one[0].write_frame(&mut frame);
        assert_eq!(frame, "{\"seq\":42,\"type\":\"x\"}");
        let two = parse_events(b"a\nep1\n1\n\"t\":1}\nb\nep2\n7\n\"t\":2}").expect("two records");
        let seen: Vec<_> = two.iter().map(|r| (r.user, r.epoch, r.seq)).collect();
        assert_eq!(seen, [("a", "ep1", 1), ("b", "ep2", 7)]);
        let refused: &[&[u8]] = &[
            b"",
            b"alice\nep1\n1",
            b"alice\nep1\nx1\n\"type\":\"x\"}",
            b"alice\nep1\n1\n{\"type\":\"x\"}",
            b"alice\nep1\n1\n\"type\":\"x\"",
            b"\nep1\n1\n\"type\":\"x\"}",
            b"alice\nep1\n1\n\"t\":1}\nbob\nep1\n2",
            b"\xff\nep1\n1\n\"type\":\"x\"}",
        ];
        for payload in refused {
            assert_eq!(
                parse_events(payload),
                None,
                "{:?}",
                String::from_utf8_lossy(payload)
            );
        }
    }

    #[test]
    fn stream_announcements_name_a_user_and_an_epoch() {
        assert_eq!(parse_opened(b"alice\nep1"), Some(("alice", "ep1")));
        assert_eq!(parse_opened(b"alice\n"), None);
        assert_eq!(parse_opened(b"\nep1"), None);
        assert_eq!(parse_opened(b"alice"), None);
        assert_eq!(parse_opened(b"alice\nep1\nmore"), None);
    }
}
