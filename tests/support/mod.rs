//! Shared helpers of the integration tests, one module per concern, all
//! re-exported here (`use support::*`):
//! - [`bin`]: running the real `rdg` binary and reading its exports;
//! - [`http`]: asking a running query service, and a fake peer process;
//! - [`process`]: free ports, hosts files, signals, bounded waits;
//! - [`kafka`]: rdkafka's MockCluster holding generated events;
//! - [`proxy`]: a TCP proxy that takes a broker away and brings it back;
//! - [`run`]: `rdg run`/`rdg replay` driven to completion and their
//!   exports compared with a file replay's;
//! - [`store`]: a fresh store in a temporary folder;
//! - [`tmpfs`]: a small file system of the test's own, to fill;
//! - [`input`]: an independent reading of the sample input in `data/`
//!   under the shipped definitions (it never calls rdg's library, so tests
//!   cross-check rdg instead of repeating it).
//!
//! Invariant: a helper that waits has a bound (a broken test fails, never
//! hangs), and one that fails says what it ran and what came back.

// Each test crate uses a different part of this module.
#![allow(dead_code, unused_imports)]

pub mod bin;
pub mod http;
pub mod input;
pub mod kafka;
pub mod process;
pub mod proxy;
pub mod run;
pub mod store;
pub mod tmpfs;

pub use bin::*;
pub use http::*;
pub use input::*;
pub use kafka::*;
pub use process::*;
pub use proxy::*;
pub use run::*;
pub use store::*;
pub use tmpfs::*;
