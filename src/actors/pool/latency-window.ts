/** The last N latency samples and their percentiles (for status, not for benches). */
export class LatencyWindow {
  private readonly samples: Float64Array;
  private count = 0;

  constructor(size = 1024) {
    this.samples = new Float64Array(size);
  }

  add(ms: number): void {
    this.samples[this.count % this.samples.length] = ms;
    this.count++;
  }

  /** The p-th percentile (0..100, nearest rank) of what the window holds, or null when empty. */
  percentile(p: number): number | null {
    const n = Math.min(this.count, this.samples.length);
    if (n === 0) return null;
    const sorted = this.samples.slice(0, n).sort();
    const i = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
    return Math.round(sorted[i] * 1000) / 1000;
  }
}
