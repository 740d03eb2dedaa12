//! Dataflow (being written).
