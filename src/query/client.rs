//! A small blocking client of the query service, for `rdg query --url` and
//! `rdg export --url` (ureq: a command makes a few calls and needs no
//! runtime; the server's calls to its peers use the async client of
//! `peers`).
//!
//! Invariant: its answers have the same shapes as `rdg query --state`
//! (node views, complete neighbour lists without cursors, identity views),
//! so a script gets the same JSON whichever way it asks. Neighbour lists
//! longer than one page are fetched page by page with the server's cursor.

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

use crate::store::EdgeQuery;

/// Everything but RFC 3986 unreserved characters is escaped in a segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The largest page asked for (the server's default `max_limit`).
const PAGE: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Http { url: String, source: ureq::Error },
    #[error("{url}: the server answered {status}: {message}")]
    Server {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: unexpected answer: {detail}")]
    BadAnswer { url: String, detail: String },
    /// Reading the answer or writing it out failed midway.
    #[error("{url}: the transfer failed: {source}")]
    Write { url: String, source: std::io::Error },
}

/// A connection to `rdg serve` (or `run`/`demo` with `--listen`).
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

pub(crate) fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

impl Client {
    /// `base` is `http://HOST:PORT` (a trailing slash is ignored).
    pub fn new(base: &str, token: Option<String>) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    /// GET `path`: `Ok(None)` on 404, the JSON on 200, an error otherwise.
    fn get(&self, path: &str) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|source| ClientError::Http {
            url: url.clone(),
            source,
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|source| ClientError::Http {
                url: url.clone(),
                source,
            })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| ClientError::BadAnswer {
            url: url.clone(),
            detail: format!("not JSON ({e})"),
        })?;
        match status {
            200 => Ok(Some(value)),
            404 => Ok(None),
            _ => Err(ClientError::Server {
                url,
                status,
                message: value["error"].as_str().unwrap_or(&text).to_string(),
            }),
        }
    }

    fn bad(&self, what: &str) -> ClientError {
        ClientError::BadAnswer {
            url: self.base.clone(),
            detail: what.to_string(),
        }
    }

    /// The node, in `rdg query node`'s shape; `None` when not found.
    pub fn node(&self, node_type: &str, id: &str) -> Result<Option<Value>, ClientError> {
        let Some(v) = self.get(&format!("/v1/nodes/{}/{}", seg(node_type), seg(id)))? else {
            return Ok(None);
        };
        Ok(Some(json!({
            "id": format!("{node_type}:{id}"),
            "node_type": node_type,
            "first_seen": v["first_seen"],
            "last_seen": v["last_seen"],
            "props": v["props"],
        })))
    }

    /// Every neighbour (up to `q.limit`), in `rdg query edges`'s shape.
    pub fn edges(
        &self,
        edge_type: &str,
        node_type: &str,
        id: &str,
        q: &EdgeQuery,
    ) -> Result<Value, ClientError> {
        let (limit, since) = (q.limit, q.since);
        let (dir, order) = (q.direction.as_str(), q.order.as_str());
        let mut items: Vec<Value> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let want = limit.map_or(PAGE, |l| l.saturating_sub(items.len()).min(PAGE));
            if want == 0 {
                break;
            }
            let mut path = format!(
                "/v1/edges/{}/{}/{}?direction={dir}&order={order}&limit={want}",
                seg(edge_type),
                seg(node_type),
                seg(id)
            );
            if let Some(s) = since {
                path.push_str(&format!("&since={s}"));
            }
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", seg(c)));
            }
            let page = self
                .get(&path)?
                .ok_or_else(|| self.bad("404 for a neighbour list"))?;
            let Some(page_items) = page["items"].as_array() else {
                return Err(self.bad("no items in a neighbour list"));
            };
            items.extend(page_items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => break,
            }
        }
        Ok(json!({
            "node": format!("{node_type}:{id}"),
            "edge_type": edge_type,
            "direction": dir,
            "items": items,
        }))
    }

    /// Streams `GET /v1/export` (the whole graph, sorted JSON Lines; from
    /// a process of a cluster, every process's share) to `out`; returns the
    /// bytes written. A transfer cut off midway is an error, never a short
    /// export.
    pub fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, ClientError> {
        let url = format!("{}/v1/export", self.base);
        // No limit on the whole transfer, only on silence.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_per_read(Some(Duration::from_secs(600)))
            .build()
            .into();
        let mut req = agent.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let http = |source| ClientError::Http {
            url: url.clone(),
            source,
        };
        let resp = req.call().map_err(http)?;
        let status = resp.status().as_u16();
        if status != 200 {
            let text = resp
                .into_body()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .unwrap_or_default();
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or(text);
            return Err(ClientError::Server {
                url,
                status,
                message,
            });
        }
        let mut reader = resp.into_body().into_reader();
        std::io::copy(&mut reader, out).map_err(|e| ClientError::Write {
            url: url.clone(),
            source: e,
        })
    }

    /// The identity view; `None` when the identifier has no entry.
    pub fn identity(&self, node_type: &str, id: &str) -> Result<Option<Value>, ClientError> {
        self.get(&format!("/v1/identity/{}/{}", seg(node_type), seg(id)))
    }
}
