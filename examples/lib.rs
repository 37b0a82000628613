//! Embedding examples live beside this file; run one with `cargo run -p centaurus-examples --example NAME`.
