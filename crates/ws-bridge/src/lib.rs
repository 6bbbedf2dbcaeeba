//! ws-bridge
