/** How reconnects wait: exponential from `initialMs` to `maxMs`, with full jitter. */
export interface BackoffOptions {
  /** The first wait's upper bound, in ms (default 200). */
  initialMs?: number;
  /** The longest wait, in ms (default 10,000). */
  maxMs?: number;
}

/** Reconnect delays: full jitter over an exponentially growing bound. */
export class Backoff {
  private attempt = 0;
  private readonly initialMs: number;
  private readonly maxMs: number;

  constructor(options: BackoffOptions = {}, private readonly random: () => number = Math.random) {
    this.initialMs = Math.max(1, options.initialMs ?? 200);
    this.maxMs = Math.max(this.initialMs, options.maxMs ?? 10_000);
  }

  /** The next wait, in ms: uniform in [bound/2, bound], the bound doubling each time. */
  next(): number {
    const bound = Math.min(this.maxMs, this.initialMs * 2 ** Math.min(this.attempt, 30));
    this.attempt += 1;
    return Math.round(bound / 2 + (this.random() * bound) / 2);
  }

  /** A connection held: the next failure waits the shortest time again. */
  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
