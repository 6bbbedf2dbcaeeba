//! Any bytes as a client's text frame: parsed to a frame or refused with a code and a
//! message, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = agent_protocol::parse_client_frame(&text, "assistant") {
        assert!(!error.message.is_empty(), "an error without a message");
    }
});
