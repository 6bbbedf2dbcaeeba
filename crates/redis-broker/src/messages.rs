//! The messages a node reads on its channels (see `scripts` for who sends them): a batch of
//! frames of the users it follows, the announcement of a stream that starts, and in the
//! sequencer mode (`seq_scripts`) that of a lease taken.

/// One frame of a node's events message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Record<'a> {
    pub(crate) user: &'a str,
    pub(crate) epoch: &'a str,
    /// The lease it was written under (sequencer mode, `<lease>:<seq>`); 0 without.
    pub(crate) lease: u64,
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
/// (see the module documentation), the seq written `<lease>:<seq>` in the sequencer mode.
/// `None` when any record is not one.
pub(crate) fn parse_events(payload: &[u8]) -> Option<Vec<Record<'_>>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut lines = text.split('\n');
    let mut records = Vec::new();
    while let Some(user) = lines.next() {
        let epoch = lines.next()?;
        let position = lines.next()?;
        let (lease, seq) = match position.split_once(':') {
            Some((lease, seq)) => (lease.parse().ok()?, seq.parse().ok()?),
            None => (0, position.parse().ok()?),
        };
        let rest = lines.next()?;
        if user.is_empty() || epoch.is_empty() || !rest.starts_with('"') || !rest.ends_with('}') {
            return None;
        }
        records.push(Record {
            user,
            epoch,
            lease,
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

/// A lease taken (sequencer mode): `<user>\n<epoch>\n<lease>\n<last seq before it>`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LeaseTaken<'a> {
    pub(crate) user: &'a str,
    pub(crate) epoch: &'a str,
    pub(crate) lease: u64,
    pub(crate) last_seq: u64,
}

/// Reads an announcement of a lease taken; `None` when it is not one.
pub(crate) fn parse_lease(payload: &[u8]) -> Option<LeaseTaken<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut parts = text.split('\n');
    let taken = LeaseTaken {
        user: parts.next().filter(|user| !user.is_empty())?,
        epoch: parts.next().filter(|epoch| !epoch.is_empty())?,
        lease: parts.next()?.parse().ok()?,
        last_seq: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(taken)
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
                lease: 0,
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
        let leased = parse_events(b"a\nep1\n3:9\n\"t\":1}").expect("a leased record");
        assert_eq!((leased[0].lease, leased[0].seq), (3, 9));
        let refused: &[&[u8]] = &[
            b"",
            b"alice\nep1\n1",
            b"alice\nep1\nx1\n\"type\":\"x\"}",
            b"alice\nep1\n1\n{\"type\":\"x\"}",
            b"alice\nep1\n1\n\"type\":\"x\"",
            b"\nep1\n1\n\"type\":\"x\"}",
            b"alice\nep1\n1\n\"t\":1}\nbob\nep1\n2",
            b"\xff\nep1\n1\n\"type\":\"x\"}",
            b"alice\nep1\n3:\n\"type\":\"x\"}",
            b"alice\nep1\nx:1\n\"type\":\"x\"}",
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
    fn lease_announcements_name_a_user_an_epoch_a_lease_and_a_seq() {
        let taken = parse_lease(b"alice\nep1\n4\n17").expect("an announcement");
        assert_eq!(
            taken,
            LeaseTaken {
                user: "alice",
                epoch: "ep1",
                lease: 4,
                last_seq: 17
            }
        );
        for refused in [
            &b"alice\nep1\n4"[..],
            b"alice\nep1\n4\n17\n1",
            b"\nep1\n4\n17",
            b"alice\nep1\nx\n17",
        ] {
            assert_eq!(parse_lease(refused), None);
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
