//! Benchmark harness for realip.
