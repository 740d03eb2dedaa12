//! Oracle test: seeded random events for the fixture in
//! `tests/fixtures/oracle/`, replayed by the real `rdg` binary, whose export
//! must equal what the sequential model in `tests/oracle/model.rs` computes.

#[path = "oracle/model.rs"]
mod model;
