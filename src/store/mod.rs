//! sled store (being written).
