"""Live restoration: a camera, a network stream, a pipe or a replayed file restored frame by frame with
bounded latency (causal network mode, causal face tracking, progressive sinks). See docs/live.md."""
