//! rdg: a real-time graph of user activity.
//!
//! Data flows one way: `source` → `dataflow` → `store` → `query`, and only
//! `app` (with the binary's `cli`) wires the layers together.
//!
//! - [`model`]: identifiers, record aggregates, changes, the shard function,
//!   the direction and order of neighbour queries. Depends on nothing.
//! - [`spec`]: definition files → a checked [`spec::Plan`].
//! - [`source`]: file and Kafka readers: raw records with their positions
//!   (a source never parses them; decoding, and a dead letter for each bad
//!   record, happen in `spec`'s plan as the dataflow evaluates it).
//! - [`dataflow`]: timely/differential dataflows; never imports `store`.
//! - [`store`]: namespaces over fjall or sled, key codec, atomic writer, bulk load, reader, export.
//! - [`query`]: the HTTP query service (reads the store; never sees the
//!   dataflow, sources or app).
//! - [`generate`]: the deterministic synthetic event generator.
//! - [`produce`]: writes generated events to Kafka; creates topics.
//! - `fuzzing` (hidden): one entry point per input surface, for the fuzz
//!   targets in `fuzz/` and the corpus replay in `tests/fuzz_corpus.rs`.
//! - `hint`: a cache prefetch that changes no result (dataflow and store use
//!   it; it depends on nothing).
//! - [`app`]: wiring for `replay` (files), and in `app::kafka` for `run`,
//!   `replay --brokers` and `demo`.

pub mod app;
pub mod dataflow;
#[doc(hidden)]
pub mod fuzzing;
pub mod generate;
mod hint;
pub mod model;
pub mod produce;
pub mod query;
pub mod source;
pub mod spec;
pub mod store;
