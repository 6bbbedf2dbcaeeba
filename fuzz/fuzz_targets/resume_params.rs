//! Any bytes as a connect URL's query (`epoch=…&after_seq=…`, split at the first `&`; a
//! missing side is an absent parameter): a resume, a fresh connect, or a message, never a
//! panic; a resume keeps exactly what was sent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (epoch, seq) = match text.split_once('&') {
        Some((epoch, seq)) => (Some(epoch), Some(seq)),
        None if text.is_empty() => (None, None),
        None => (Some(text.as_ref()), None),
    };
    match agent_protocol::ResumeParams::from_query(epoch, seq) {
        Ok(Some(params)) => {
            assert_eq!(Some(params.epoch.as_str()), epoch);
            assert_eq!(Some(params.after_seq), seq.and_then(|s| s.parse().ok()));
        }
        Ok(None) => assert!(epoch.is_none() && seq.is_none()),
        Err(message) => assert!(!message.is_empty()),
    }
});
