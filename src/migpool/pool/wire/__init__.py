"""What travels between the pool and a worker: messages, frames on a pipe, pickling, segments, streams, tracebacks."""
