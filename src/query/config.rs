//! The query service's settings: [`ServeConfig`] with every default in one
//! `impl Default`, this process's place in a cluster among them (the
//! model's [`ClusterShape`], the one the dataflow shards by).
//!
//! Invariant: a config that passed [`ServeConfig::validate`] (which
//! [`Server::start`](super::Server::start) calls) has every bound at least 1,
//! every default within its maximum, and peer URLs that are base URLs; all
//! problems are reported at once, one per line.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::QueryError;
use crate::model::ClusterShape;

/// How the server listens and what it allows. Every default is documented on
/// its field and set in the one `impl Default`; [`ServeConfig::validate`]
/// checks the combination at [`Server::start`].
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// Where to listen. Default `127.0.0.1:7878` (loopback only).
    pub listen: SocketAddr,
    /// When set, every route but `/healthz`, `/readyz` and the explorer's
    /// static files needs `Authorization: Bearer <token>`. Default none.
    pub auth_token: Option<String>,
    /// Most hops in one traversal. Default 4.
    pub max_hops: usize,
    /// Largest per-hop `limit` a traversal may ask for (edges followed from
    /// each node of a hop). Default 1000.
    pub max_edges_per_hop: usize,
    /// A hop's `limit` when the request gives none. Default 300.
    pub default_edges_per_hop: usize,
    /// A hop's `since` when the request gives none: this long before the
    /// largest committed watermark. Default 100 days; `None`: no default.
    pub default_lookback: Option<Duration>,
    /// Largest `limit` of a traversal (edge records returned in all).
    /// Default 10 000.
    pub max_traverse_limit: usize,
    /// A traversal's `limit` when the request gives none. Default 1000.
    pub default_traverse_limit: usize,
    /// Largest page (`limit`) of a neighbour list or a search. Default 1000.
    pub max_limit: usize,
    /// A page's `limit` when the request gives none. Default 100.
    pub default_limit: usize,
    /// Most identifiers an identity path search visits. Default 20 000.
    pub max_path_visits: usize,
    /// Longest identifier (type and id together) or edge type, in bytes.
    /// Default 512.
    pub max_id_bytes: usize,
    /// Longest request target (path and query), in bytes. Default 4096.
    pub max_uri_bytes: usize,
    /// Largest request body, in bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Longest time a request may take (body included). Default 5 s.
    pub request_timeout: Duration,
    /// Most open connections; one more is answered 503 and closed. Default 1024.
    pub max_connections: usize,
    /// Tokio worker threads. Default 2.
    pub worker_threads: usize,
    /// Least time between two recounts of the per-namespace sizes of
    /// `/v1/status` and `/metrics` (a full scan, in the background, only when
    /// one of those was asked for and something was committed since).
    /// Default 30 s.
    pub counts_interval: Duration,
    /// Most exports streamed at once (`GET /v1/export`; each first writes
    /// this process's share to a temporary file). Default 4.
    pub max_exports: usize,
    /// This process's place in a cluster of processes, and where the others
    /// serve (its `query_urls`, this process's own included); `None` (the
    /// default): this process holds the whole graph.
    pub cluster: Option<ClusterShape>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            auth_token: None,
            max_hops: 4,
            max_edges_per_hop: 1000,
            default_edges_per_hop: 300,
            default_lookback: Some(Duration::from_secs(100 * 24 * 3600)),
            max_traverse_limit: 10_000,
            default_traverse_limit: 1000,
            max_limit: 1000,
            default_limit: 100,
            max_path_visits: 20_000,
            max_id_bytes: 512,
            max_uri_bytes: 4096,
            max_body_bytes: 64 << 10,
            request_timeout: Duration::from_secs(5),
            max_connections: 1024,
            worker_threads: 2,
            counts_interval: Duration::from_secs(30),
            max_exports: 4,
            cluster: None,
        }
    }
}

impl ServeConfig {
    /// Every inconsistency at once, one per line.
    pub fn validate(&self) -> Result<(), QueryError> {
        let mut problems = Vec::new();
        let mut positive = |name: &str, v: usize| {
            if v == 0 {
                problems.push(format!("{name} must be at least 1"));
            }
        };
        positive("max_hops", self.max_hops);
        positive("max_edges_per_hop", self.max_edges_per_hop);
        positive("default_edges_per_hop", self.default_edges_per_hop);
        positive("max_traverse_limit", self.max_traverse_limit);
        positive("default_traverse_limit", self.default_traverse_limit);
        positive("max_limit", self.max_limit);
        positive("default_limit", self.default_limit);
        positive("max_path_visits", self.max_path_visits);
        positive("max_id_bytes", self.max_id_bytes);
        positive("max_uri_bytes", self.max_uri_bytes);
        positive("max_body_bytes", self.max_body_bytes);
        positive("max_connections", self.max_connections);
        positive("worker_threads", self.worker_threads);
        positive("max_exports", self.max_exports);
        if let Some(c) = &self.cluster {
            problems.extend(c.problems().into_iter().map(|p| format!("cluster: {p}")));
            if c.query_urls.is_empty() {
                problems.push("cluster.query_urls must list every process's URL".to_string());
            }
            for p in &c.query_urls {
                let rest = p.strip_prefix("http://").unwrap_or("");
                if rest.is_empty()
                    || rest.contains('/')
                    || rest.bytes().any(|b| !b.is_ascii_graphic())
                {
                    problems.push(format!(
                        "cluster peer `{p}` is not a base URL like http://127.0.0.1:7801"
                    ));
                }
            }
        }
        if self.default_edges_per_hop > self.max_edges_per_hop {
            problems.push(format!(
                "default_edges_per_hop ({}) is above max_edges_per_hop ({})",
                self.default_edges_per_hop, self.max_edges_per_hop
            ));
        }
        if self.default_traverse_limit > self.max_traverse_limit {
            problems.push(format!(
                "default_traverse_limit ({}) is above max_traverse_limit ({})",
                self.default_traverse_limit, self.max_traverse_limit
            ));
        }
        if self.default_limit > self.max_limit {
            problems.push(format!(
                "default_limit ({}) is above max_limit ({})",
                self.default_limit, self.max_limit
            ));
        }
        if self.request_timeout.is_zero() {
            problems.push("request_timeout must be above zero".to_string());
        }
        if self.counts_interval.is_zero() {
            problems.push("counts_interval must be above zero".to_string());
        }
        if let Some(t) = &self.auth_token
            && (t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
        {
            problems.push(
                "the auth token must be non-empty visible ASCII (no spaces or control characters)"
                    .to_string(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(QueryError::Config(problems.join("\n")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_loopback() {
        let c = ServeConfig::default();
        c.validate().expect("valid");
        assert!(c.listen.ip().is_loopback());
    }

    #[test]
    fn cluster_shapes_are_checked() {
        let c = ServeConfig {
            cluster: Some(ClusterShape {
                processes: 2,
                process: 2,
                workers: 0,
                addresses: Vec::new(),
                query_urls: vec!["http://a:1".into(), "b:2".into()],
            }),
            ..ServeConfig::default()
        };
        let QueryError::Config(text) = c.validate().expect_err("invalid") else {
            panic!("a config error");
        };
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = ServeConfig {
            max_hops: 0,
            default_limit: 5000,
            auth_token: Some("a b".into()),
            ..ServeConfig::default()
        };
        let QueryError::Config(text) = c.validate().expect_err("invalid") else {
            panic!("a config error");
        };
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
