//! A chunk of a run's events as stored: the events' JSON objects as one JSON array,
//! compressed (LZ4 block format, the uncompressed length in front). A run's events repeat
//! the same ids and keys, so a chunk takes about a quarter of its JSON's bytes, and a burst
//! costs the database that much less to write (measured in `docs/benchmarks.md`).

use serde_json::Value;

/// Uncompressed chunks larger than this are refused when read: a damaged length in front
/// must not make the reader allocate gigabytes. The writer never stores more than
/// `HOLD_EVENTS` events of at most a frame's size each in one chunk.
const MAX_UNPACKED: usize = 256 * 1024 * 1024;

/// Packs events (each one JSON object) into a chunk.
pub(crate) fn pack(events: &[&str]) -> Vec<u8> {
    let len = events.iter().map(|e| e.len() + 1).sum::<usize>() + 1;
    let mut array = String::with_capacity(len);
    array.push('[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            array.push(',');
        }
        array.push_str(event);
    }
    array.push(']');
    lz4_flex::compress_prepend_size(array.as_bytes())
}

/// The events of a chunk [`pack`] made.
pub(crate) fn unpack(chunk: &[u8]) -> Result<Vec<Value>, String> {
    let Some(len) = chunk.first_chunk::<4>().map(|len| u32::from_le_bytes(*len)) else {
        return Err(format!(
            "a packed chunk of {} bytes has no length",
            chunk.len()
        ));
    };
    if usize::try_from(len).map_or(true, |len| len > MAX_UNPACKED) {
        return Err(format!(
            "a packed chunk claims {len} bytes, more than any chunk holds"
        ));
    }
    let json = lz4_flex::decompress_size_prepended(chunk)
        .map_err(|e| format!("a packed chunk does not decompress: {e}"))?;
    serde_json::from_slice(&json).map_err(|e| format!("a packed chunk is not a JSON array: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_unpack_to_the_events_packed() {
        let cases: [&[&str]; 4] = [
            &[],
            &[r#"{"type":"agent_started","data":{}}"#],
            &[r#"{"a":1}"#, r#"{"b":"two, with a comma"}"#, r#"{"c":[3]}"#],
            &[r#"{"text":"ünïcødé ✓ and \"quotes\""}"#; 300],
        ];
        for events in cases {
            let unpacked = unpack(&pack(events)).unwrap();
            let expected: Vec<Value> = events
                .iter()
                .map(|e| serde_json::from_str(e).unwrap())
                .collect();
            assert_eq!(unpacked, expected, "{} events", events.len());
        }
    }

    #[test]
    fn repeated_ids_and_keys_compress() {
        let event = r#"{"type":"agent_thinking","data":{"reasoning":"step"},"run_id":"run_01M8QJT9ER08WE0PDKRKV4G40A","thread_id":"thr_01M8QJT9ERPB0X0XJYB2RWVZXM","agent_name":"synthetic","timestamp":"2026-12-01T01:16:57.702421Z"}"#;
        let events = [event; 16];
        let packed = pack(&events);
        assert!(
            packed.len() * 3 < event.len() * events.len(),
            "{} bytes packed from {}",
            packed.len(),
            event.len() * events.len()
        );
    }

    #[test]
    fn damaged_chunks_are_refused_with_a_reason() {
        let good = pack(&[r#"{"a":1}"#]);
        let mut huge = good.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut cut = good.clone();
        cut.truncate(good.len() - 2);
        let not_json = lz4_flex::compress_prepend_size(b"not json");
        let cases: [(&[u8], &str); 4] = [
            (&[1, 2], "has no length"),
            (&huge, "more than any chunk holds"),
            (&cut, "does not decompress"),
            (&not_json, "not a JSON array"),
        ];
        for (chunk, reason) in cases {
            let error = unpack(chunk).unwrap_err();
            assert!(error.contains(reason), "{reason}: {error}");
        }
    }
}
