//! Definition files → validated plan. (Being written: raw serde types, checks.)

mod plan;
pub use plan::*;
