//! The query service: JSON over HTTP on top of the store's reader side, a
//! Prometheus endpoint, an OpenAPI document, and a graph explorer page.
//!
//! It owns the HTTP surface (routes in [`routes`], listed once in
//! [`server::ROUTES`] and in `openapi.json`) and keeps these invariants:
//! - **Layering**: it depends on `store` (reads only) and `model`, never on
//!   dataflow, source or app. What only a running pipeline knows (readiness,
//!   lag, ingest rates) comes through [`LiveStatus`].
//! - **Consistent answers**: each answer is read through one
//!   [`ReadView`](crate::store::ReadView), so it never sees half of a commit,
//!   and carries the commit count, watermarks and stored offsets of exactly
//!   the state it read (headers `X-Rdg-Commit`, `X-Rdg-Watermark`,
//!   `X-Rdg-Offsets`).
//! - **Bounded**: every input is checked against [`ServeConfig`] (path and
//!   id lengths, limits, hops, body size, request time, connections); an
//!   out-of-range value is a 400 that says what is allowed. Nothing a client
//!   sends names a file: the page is compiled in.
//!
//! - **Clusters**: with [`ServeConfig::cluster`] every process of a cluster
//!   serves the whole graph: a lookup of a key another process owns is
//!   forwarded to it, lists spread over processes (in-edges, links,
//!   identity members, search, the export) are asked of every process and
//!   merged in the same order one process would use, and traversals and
//!   identity paths send each read where its records live (module
//!   `cluster`). A request with `X-Rdg-Local: 1` is answered from this
//!   process's store alone; that is how processes ask each other, so a
//!   request is forwarded at most once.
//!
//! Run it with [`Server::start`] (its own threads and tokio runtimes, so it
//! serves while the caller blocks in an ingest loop) and end it with
//! [`Server::stop`].
//!
//! Modules, each using only those below it (a test checks the `use` lines):
//! - `server`: the route table, the guard around every request, the accept
//!   loop;
//! - `routes` (one handler per route), `export` (the streamed export),
//!   `neighbourhood` (the explorer's view of a node);
//! - `cluster`: reads sent to the processes that hold them, and merged;
//! - `state`: [`App`](state::App), what every request may use, and the
//!   reads every handler makes through it;
//! - `graph` (traversals and identity paths over any reads), `metrics`;
//! - `peers`: the client that calls the other processes, and fan-outs;
//! - `respond` (answers with freshness), `params` (input checks), `config`,
//!   `error`, `fresh` (freshness headers), `live`, `client` (the CLI's
//!   client).

pub mod client;
mod cluster;
mod config;
mod error;
mod export;
mod fresh;
mod graph;
mod live;
mod metrics;
mod neighbourhood;
mod params;
mod peers;
mod reclaim;
mod respond;
mod routes;
mod server;
mod state;

pub use config::ServeConfig;
pub use error::QueryError;
pub use live::{DataflowHistograms, LiveGauges, LiveStatus, StaticStatus, TimeDelayHistograms};
pub use peers::PeerError;
pub use server::{ROUTES, Route, Server, in_process_router};

/// The layers of `query`, top first: a module may use only modules below
/// it (the facade `mod.rs` aside, which only declares and re-exports).
#[cfg(test)]
const LAYERS: &[(&str, &str)] = &[
    ("server", include_str!("server.rs")),
    ("reclaim", include_str!("reclaim.rs")),
    ("routes", include_str!("routes.rs")),
    ("export", include_str!("export.rs")),
    ("neighbourhood", include_str!("neighbourhood.rs")),
    ("cluster", include_str!("cluster.rs")),
    ("state", include_str!("state.rs")),
    ("graph", include_str!("graph.rs")),
    ("metrics", include_str!("metrics.rs")),
    ("peers", include_str!("peers.rs")),
    ("respond", include_str!("respond.rs")),
    ("params", include_str!("params.rs")),
    ("config", include_str!("config.rs")),
    ("error", include_str!("error.rs")),
    ("fresh", include_str!("fresh.rs")),
    ("live", include_str!("live.rs")),
    ("client", include_str!("client.rs")),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;

    /// The modules `source` names: `super::NAME` paths (in `use` lines or
    /// inline, comments aside) and the names in `use super::{...}` groups;
    /// re-exports of the facade by the module that defines them.
    fn uses(source: &str) -> Vec<String> {
        let code: String = source
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let mut names = Vec::new();
        for (i, _) in code.match_indices("super::") {
            let source = code.as_str();
            let rest = &source[i + "super::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let group = &group[..group.find('}').unwrap_or(group.len())];
                names.extend(
                    group
                        .split(',')
                        .map(|n| n.trim().split("::").next().unwrap_or_default().to_string()),
                );
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                names.push(rest[..end].to_string());
            }
        }
        let facade = |n: String| match n.as_str() {
            "ServeConfig" => "config".to_string(),
            "LiveStatus" | "LiveGauges" | "StaticStatus" => "live".to_string(),
            "QueryError" => "error".to_string(),
            "PeerError" => "peers".to_string(),
            "ROUTES" | "Route" | "Server" => "server".to_string(),
            _ => n,
        };
        names.into_iter().map(facade).collect()
    }

    /// Every module uses only modules below it, so `src/query` has no
    /// import circle: server → routes/export → cluster → state → peers →
    /// response and freshness helpers → error.
    #[test]
    fn modules_use_only_the_layers_below() {
        let position = |name: &str| LAYERS.iter().position(|(n, _)| *n == name);
        for (i, (module, source)) in LAYERS.iter().enumerate() {
            // A module's own tests (`use super::*`) are not a layer's use.
            let code = source.split("#[cfg(test)]").next().unwrap_or(source);
            for used in uses(code) {
                let Some(j) = position(&used) else {
                    panic!("{module} uses `super::{used}`, which is not a module of the layers");
                };
                assert!(j > i, "{module} uses {used}, which is not below it");
            }
        }
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/query"))
            .expect("src/query")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|f| f.strip_suffix(".rs").map(str::to_string))
            .filter(|f| f != "mod")
            .count();
        assert_eq!(files, LAYERS.len(), "every module of src/query has a layer");
    }
}
