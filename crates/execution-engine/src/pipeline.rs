//! [`UserExecutionEngine::execute_pipeline`]: agents one after another.

use agent_registry::AgentInput;
use core_context::RunId;
use serde_json::Value;

use crate::engine::UserExecutionEngine;
use crate::error::EngineError;
use crate::run::RunOutcome;

/// One step of a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineStep {
    /// The agent to run.
    pub agent: String,
    /// Its input. The engine sets `input.previous_result` to the result of the previous step
    /// that completed, if any.
    pub input: AgentInput,
    /// Whether the pipeline goes on when this step does not complete.
    pub continue_on_failure: bool,
}

impl PipelineStep {
    /// A step that stops the pipeline if it fails.
    pub fn new(agent: impl Into<String>, input: AgentInput) -> Self {
        Self {
            agent: agent.into(),
            input,
            continue_on_failure: false,
        }
    }

    /// Lets the pipeline go on when this step fails.
    #[must_use]
    pub fn continue_on_failure(mut self) -> Self {
        self.continue_on_failure = true;
        self
    }
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepReport {
    /// The step's agent.
    pub agent: String,
    /// The run, when the engine accepted it.
    pub run_id: Option<RunId>,
    /// How the run ended, or why it was refused.
    pub outcome: Result<RunOutcome, EngineError>,
}

impl StepReport {
    /// Whether the step's run completed.
    pub fn is_completed(&self) -> bool {
        matches!(&self.outcome, Ok(o) if o.is_completed())
    }
}

/// What a pipeline did: the steps that ran, in order, and those skipped after a failure.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineReport {
    /// Steps that ran (or were refused), in order.
    pub steps: Vec<StepReport>,
    /// Agents of the steps not run because an earlier step failed.
    pub skipped: Vec<String>,
}

impl PipelineReport {
    /// Whether every step ran and completed.
    pub fn succeeded(&self) -> bool {
        self.skipped.is_empty() && self.steps.iter().all(StepReport::is_completed)
    }
}

impl UserExecutionEngine {
    /// Runs `steps` in order, each as a run of its own (with its own lifecycle), and stops at
    /// the first step that does not complete unless that step says
    /// [`continue_on_failure`](PipelineStep::continue_on_failure).
    pub async fn execute_pipeline(&self, steps: Vec<PipelineStep>) -> PipelineReport {
        let mut report = PipelineReport {
            steps: Vec::with_capacity(steps.len()),
            skipped: Vec::new(),
        };
        let mut previous: Option<Value> = None;
        let mut steps = steps.into_iter();
        for step in steps.by_ref() {
            let mut input = step.input;
            if let Some(result) = previous.take() {
                input.previous_result = Some(result);
            }
            let (run_id, outcome) = match self.execute_agent(&step.agent, input).await {
                Ok(handle) => {
                    let run_id = handle.run_id().clone();
                    (Some(run_id), Ok(handle.wait().await))
                }
                Err(e) => (None, Err(e)),
            };
            if let Ok(RunOutcome::Completed { output, .. }) = &outcome {
                previous = Some(output.result.clone());
            }
            let stop = !matches!(&outcome, Ok(o) if o.is_completed()) && !step.continue_on_failure;
            report.steps.push(StepReport {
                agent: step.agent,
                run_id,
                outcome,
            });
            if stop {
                break;
            }
        }
        report.skipped = steps.map(|s| s.agent).collect();
        report
    }
}
