//! The integration tests: the whole system as its users see it, one binary.
//!
//! One module per concern; `support` holds the shared harness (registry with test agents,
//! recording sink, context builders). Every test that claims the run lifecycle uses
//! `core_context::lifecycle::check_lifecycle`.
// Test bodies are scripts that read top to bottom; their length is not a design smell.
#![allow(
    clippy::unwrap_used,
    clippy::too_many_lines,
    missing_docs,
    unreachable_pub
)]

mod agents;
mod agents_docs;
mod agui;
mod agui_approvals;
mod agui_client;
mod agui_continue;
mod agui_positions;
mod approvals;
mod approvals_durable;
mod approvals_engine;
mod approvals_mcp;
mod approvals_nodes;
mod approvals_process;
mod approvals_state;
mod approvals_thread;
mod architecture;
mod bridge;
mod bridge_queues;
mod broker_pair;
mod browser;
mod browser_a11y;
mod browser_approvals;
mod browser_budget_wait;
mod browser_chat;
mod browser_comfort;
mod browser_live_threads;
mod browser_multitask;
mod browser_newcomer;
mod browser_origin;
mod browser_usage;
mod budget_ledger;
mod budget_nodes;
mod budget_waits;
mod budgets;
mod chaos;
mod chat_approvals;
mod chat_budget;
mod chat_cli;
mod chat_multitask;
mod chat_page;
mod chat_stream;
mod chat_usage;
mod client;
mod code_map;
mod compat;
mod config;
mod config_approvals;
mod config_checks;
mod config_flags;
mod config_mcp;
mod conversation;
mod data_tls;
mod drain;
mod engine_isolation;
mod engine_limits;
mod event_frame;
mod events_lost;
mod history;
mod history_approvals;
mod history_server;
mod history_usage;
mod history_writer;
mod http_edge;
mod identity;
mod import_cycles;
mod llm;
mod loadgen;
mod logs;
mod lost_runs;
mod mcp;
mod mcp_env;
mod mcp_https;
mod mcp_logs;
mod mcp_rust;
mod model_https;
mod multinode;
mod multinode_runs;
mod multitask;
mod multitask_nodes;
mod multitask_steer;
mod nginx;
mod nginx_support;
mod operations;
mod otlp;
mod postgres_support;
mod process_support;
mod properties;
mod publish_modes;
mod publish_queue_full;
mod redis_cluster;
mod redis_cluster_support;
mod redis_follow;
mod redis_outage;
mod redis_publish;
mod redis_sequencer;
mod redis_support;
mod replay_memory;
mod run_slots;
mod secrets;
mod sequencer_fanout;
mod server;
mod server_support;
mod subruns;
mod support;
mod thread_changes;
mod thread_slots;
mod tool_bounds;
mod ts_client;
mod ts_types;
