//! Engine benchmark: `cargo bench -p execution-engine --bench engine`.
//!
//! Prints a table of
//! - time per `create_execution_engine` (and per factory `create_for_user` + `release`),
//! - heap bytes per idle engine (counted by a global allocator wrapper, so the figure is
//!   exact for this build, not an estimate from RSS),
//! - runs per second of a no-op agent that makes three tool calls (sequential, and many
//!   users at once), with the events each run emits.
//!
//! Figures are printed, never asserted: timings depend on the machine, named in the header.
#![allow(unsafe_code, missing_docs, clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use agent_registry::{
    Agent, AgentContext, AgentError, AgentInput, AgentOutput, AgentRegistry, AgentSpec, Tool,
    ToolError,
};
use async_trait::async_trait;
use core_context::{AgentEvent, EmitError, EventSink, UserExecutionContext, UserId};
use execution_engine::{EngineConfig, ExecutionEngineFactory, UserExecutionEngine};
use serde_json::{Value, json};

/// Counts live heap bytes, so memory per engine is measured exactly.
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every method forwards to `System` unchanged and only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A sink that only counts, so the benchmark measures the engine, not a recorder.
#[derive(Default)]
struct CountingSink(AtomicU64);

impl EventSink for CountingSink {
    fn emit(&self, _user: &UserId, event: AgentEvent) -> Result<(), EmitError> {
        black_box(event);
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct Noop;

#[async_trait]
impl Tool for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn description(&self) -> &str {
        "does nothing"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    async fn call(&self, _: &UserExecutionContext, args: Value) -> Result<Value, ToolError> {
        Ok(args)
    }
}

/// The benchmark's agent: three tool calls and nothing else.
struct ThreeTools;

#[async_trait]
impl Agent for ThreeTools {
    async fn run(&self, ctx: &AgentContext, _: AgentInput) -> Result<AgentOutput, AgentError> {
        for i in 0..3 {
            ctx.call_tool("noop", json!({ "i": i }))
                .await
                .map_err(|e| AgentError::failed(e.to_string()))?;
        }
        Ok(json!("done").into())
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores, {}", std::env::consts::ARCH)
}

fn per_op(total: Duration, n: u64) -> String {
    let ns = total.as_nanos() as f64 / n as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else {
        format!("{:.2} us", ns / 1_000.0)
    }
}

#[expect(
    clippy::too_many_lines,
    reason = "a benchmark script: one measurement after another, read top to bottom"
)]
fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 10 } else { 1 };
    let mut registry = AgentRegistry::new();
    registry.register_tool(Noop).unwrap();
    registry
        .register_agent(AgentSpec::new("three_tools", || ThreeTools))
        .unwrap();
    let registry = Arc::new(registry);
    let sink = Arc::new(CountingSink::default());
    let bridge: Arc<dyn EventSink> = sink.clone();
    let ctx = UserExecutionContext::builder(UserId::parse("bench_user").unwrap())
        .build()
        .unwrap();

    println!("engine benchmark on {}", machine());
    println!("{:<58} {:>16}", "measure", "figure");

    // Creation: the context clone (reference counts) is part of what a caller pays.
    let n = 1_000_000 / scale;
    for _ in 0..10_000 {
        black_box(UserExecutionEngine::create_execution_engine(
            ctx.clone(),
            registry.clone(),
            bridge.clone(),
        ));
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(UserExecutionEngine::create_execution_engine(
            ctx.clone(),
            registry.clone(),
            bridge.clone(),
        ));
    }
    let row = |m: &str, f: String| println!("{m:<58} {f:>16}");
    row(
        "create_execution_engine (create + drop)",
        per_op(start.elapsed(), n as u64),
    );

    let factory =
        ExecutionEngineFactory::new(registry.clone(), bridge.clone(), EngineConfig::default());
    let start = Instant::now();
    for _ in 0..n {
        let engine = factory.create_for_user(ctx.clone()).unwrap();
        factory.release(&engine);
    }
    row(
        "factory create_for_user + release (per-user limits)",
        per_op(start.elapsed(), n as u64),
    );

    // Memory: hold many idle engines and count the heap bytes they add.
    let held = 100_000 / scale;
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    let engines: Vec<_> = (0..held)
        .map(|_| {
            UserExecutionEngine::create_execution_engine(
                ctx.clone(),
                registry.clone(),
                bridge.clone(),
            )
        })
        .collect();
    let vec_bytes = (engines.capacity() * std::mem::size_of::<UserExecutionEngine>()) as isize;
    let after = LIVE_BYTES.load(Ordering::SeqCst);
    row(
        "heap bytes per idle engine",
        format!("{} B", (after - before - vec_bytes) / held as isize),
    );
    drop(engines);

    // Runs per second.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let runs = 20_000 / scale;
    let engine =
        UserExecutionEngine::create_execution_engine(ctx.clone(), registry.clone(), bridge.clone());
    let events_before = sink.0.load(Ordering::Relaxed);
    let start = Instant::now();
    runtime.block_on(async {
        for _ in 0..runs {
            let run = engine
                .execute_agent("three_tools", AgentInput::message("go"))
                .await
                .unwrap();
            assert!(run.wait().await.is_completed());
        }
    });
    let elapsed = start.elapsed();
    let events = sink.0.load(Ordering::Relaxed) - events_before;
    row(
        "runs/s, one at a time (3 tool calls, 8 events each)",
        format!("{:.0}", runs as f64 / elapsed.as_secs_f64()),
    );
    row("  time per run", per_op(elapsed, runs as u64));
    assert_eq!(events, runs as u64 * 8);

    let users = 200;
    let per_user = 100 / scale;
    let start = Instant::now();
    runtime.block_on(async {
        let factory =
            ExecutionEngineFactory::new(registry.clone(), bridge.clone(), EngineConfig::default());
        let mut tasks = Vec::new();
        for u in 0..users {
            let factory = factory.clone();
            tasks.push(tokio::spawn(async move {
                let user = UserId::parse(&format!("bench{u}")).unwrap();
                for _ in 0..per_user {
                    let ctx = UserExecutionContext::builder(user.clone()).build().unwrap();
                    let engine = factory.create_for_user(ctx).unwrap();
                    let run = engine
                        .execute_agent("three_tools", AgentInput::message("go"))
                        .await
                        .unwrap();
                    assert!(run.wait().await.is_completed());
                    factory.release(&engine);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = start.elapsed();
    let total = (users * per_user) as f64;
    row(
        &format!("runs/s, {users} users at once (engine per run, factory)"),
        format!("{:.0}", total / elapsed.as_secs_f64()),
    );
    row(
        "  events/s",
        format!("{:.0}", total * 8.0 / elapsed.as_secs_f64()),
    );
}
