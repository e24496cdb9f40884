//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range` and
//! friends, HTTP/1.1): only what fleet mode needs. Keys and values travel as
//! base64, 64-bit numbers as JSON strings; a watch or a keep-alive is a stream
//! of newline-separated JSON objects.
//!
//! Why not the `etcd-client` crate: it generates its gRPC code at build time
//! with `protoc`, which a machine with only Rust does not have (see the commit
//! that added this file).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Longest wait for one request's whole answer (for a watch: its first line).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest wait for a TCP connection to an endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Largest answer read (a range over the fleet's keys), in bytes.
const MAX_ANSWER: usize = 16 << 20;

/// Why an etcd request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum EtcdError {
    /// No endpoint answered.
    #[error("etcd unreachable at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What the last one said.
        reason: String,
    },
    /// An endpoint answered with an error.
    #[error("etcd refused the request: {0}")]
    Refused(String),
    /// An answer that is not what the gateway sends.
    #[error("unexpected answer from etcd: {0}")]
    Protocol(String),
}

/// One key with its value and the revision that last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The outcome of a compare-and-swap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Swap {
    /// Written; the key's new revision.
    Done(i64),
    /// Someone else wrote it: its current revision (0: the key is absent).
    Conflict(i64),
}

/// A watch event on one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchEvent {
    /// Written at `mod_revision`.
    Put(Kv),
    /// Deleted at this revision.
    Delete(i64),
}

/// A client over a list of endpoints; the one that answered last is tried first.
pub(crate) struct Client {
    http: HttpClient<HttpConnector, Full<Bytes>>,
    endpoints: Vec<String>,
    /// Index of the endpoint that answered last; written by any request.
    preferred: AtomicUsize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn kv_of(v: &Value) -> Result<Kv, EtcdError> {
    let decode = |field: &str| -> Result<Vec<u8>, EtcdError> {
        match v[field].as_str() {
            None => Ok(Vec::new()),
            Some(s) => B64
                .decode(s)
                .map_err(|e| EtcdError::Protocol(format!("{field} is not base64: {e}"))),
        }
    };
    Ok(Kv {
        key: String::from_utf8_lossy(&decode("key")?).into_owned(),
        value: decode("value")?,
        mod_revision: int(&v["mod_revision"]),
    })
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl Client {
    /// A client of these endpoints (`http://HOST:PORT`).
    pub(crate) fn new(endpoints: &[String]) -> Client {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        Client {
            http: HttpClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            endpoints: endpoints.to_vec(),
            preferred: AtomicUsize::new(0),
        }
    }

    /// The endpoints, for messages.
    pub(crate) fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// Sends `body` to `path` on each endpoint in turn until one answers; returns
    /// the answer's head and body stream.
    async fn send(&self, path: &str, body: &Value) -> Result<hyper::Response<Incoming>, EtcdError> {
        let body = Bytes::from(body.to_string());
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = String::from("no endpoint");
        for i in 0..self.endpoints.len() {
            let index = (first + i) % self.endpoints.len();
            let url = format!("{}{path}", self.endpoints[index]);
            let request = hyper::Request::post(&url)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body.clone()))
                .map_err(|e| EtcdError::Protocol(format!("bad request to {url}: {e}")))?;
            match tokio::time::timeout(REQUEST_TIMEOUT, self.http.request(request)).await {
                Ok(Ok(response)) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Ok(Err(e)) => last = format!("{}: {}", self.endpoints[index], error_chain(&e)),
                Err(_) => last = format!("{}: no answer in time", self.endpoints[index]),
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints(),
            reason: last,
        })
    }

    /// One request with a single JSON answer.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let unreachable = |reason: String| EtcdError::Unreachable {
            endpoints: self.endpoints(),
            reason,
        };
        let response = self.send(path, &body).await?;
        let status = response.status();
        let read = http_body_util::Limited::new(response.into_body(), MAX_ANSWER).collect();
        let bytes = match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) => return Err(unreachable(format!("reading the answer: {e}"))),
            Err(_) => return Err(unreachable("answer not received in time".into())),
        };
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
            EtcdError::Protocol(format!("{path}: {e}: {}", String::from_utf8_lossy(&bytes)))
        })?;
        if !status.is_success() {
            let message = value["message"]
                .as_str()
                .or_else(|| value["error"].as_str())
                .unwrap_or("no message");
            return Err(EtcdError::Refused(format!("{path}: {status}: {message}")));
        }
        Ok(value)
    }

    /// The key, if it exists, and the store's current revision.
    pub(crate) async fn get(&self, key: &str) -> Result<(Option<Kv>, i64), EtcdError> {
        let answer = self
            .call("/v3/kv/range", json!({ "key": b64(key.as_bytes()) }))
            .await?;
        let kv = match answer["kvs"].as_array().and_then(|kvs| kvs.first()) {
            Some(kv) => Some(kv_of(kv)?),
            None => None,
        };
        Ok((kv, int(&answer["header"]["revision"])))
    }

    /// Every key starting with `prefix`.
    pub(crate) async fn get_prefix(&self, prefix: &str) -> Result<Vec<Kv>, EtcdError> {
        let answer = self
            .call(
                "/v3/kv/range",
                json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) }),
            )
            .await?;
        answer["kvs"]
            .as_array()
            .map(|kvs| kvs.iter().map(kv_of).collect())
            .unwrap_or_else(|| Ok(Vec::new()))
    }

    /// Writes `value` if the key was last written at `expected` (0: if it does
    /// not exist).
    pub(crate) async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        expected: i64,
    ) -> Result<Swap, EtcdError> {
        let key = b64(key.as_bytes());
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{
                        "target": "MOD", "result": "EQUAL", "key": key,
                        "mod_revision": expected.to_string(),
                    }],
                    "success": [{ "request_put": { "key": key, "value": b64(value) } }],
                    "failure": [{ "request_range": { "key": key } }],
                }),
            )
            .await?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(Swap::Done(int(&answer["header"]["revision"])));
        }
        let current = answer["responses"][0]["response_range"]["kvs"][0]["mod_revision"].clone();
        Ok(Swap::Conflict(int(&current)))
    }

    /// Writes `value` attached to `lease` (if given) unless the key exists:
    /// `Conflict` with its revision if it does.
    pub(crate) async fn put_new(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<Swap, EtcdError> {
        let key = b64(key.as_bytes());
        let mut put = json!({ "key": key, "value": b64(value) });
        if let Some(lease) = lease {
            put["lease"] = json!(lease.to_string());
        }
        let answer = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{
                        "target": "CREATE", "result": "EQUAL", "key": key,
                        "create_revision": "0",
                    }],
                    "success": [{ "request_put": put }],
                    "failure": [{ "request_range": { "key": key } }],
                }),
            )
            .await?;
        if answer["succeeded"].as_bool() == Some(true) {
            return Ok(Swap::Done(int(&answer["header"]["revision"])));
        }
        let current = answer["responses"][0]["response_range"]["kvs"][0]["mod_revision"].clone();
        Ok(Swap::Conflict(int(&current)))
    }

    /// Writes `value`, attached to `lease` if given; returns the new revision.
    pub(crate) async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<i64, EtcdError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(lease) = lease {
            body["lease"] = json!(lease.to_string());
        }
        let answer = self.call("/v3/kv/put", body).await?;
        Ok(int(&answer["header"]["revision"]))
    }

    /// A new lease of `ttl`; its id.
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let answer = self
            .call(
                "/v3/lease/grant",
                json!({ "TTL": ttl.as_secs().max(1).to_string() }),
            )
            .await?;
        match int(&answer["ID"]) {
            0 => Err(EtcdError::Protocol(format!("lease grant: {answer}"))),
            id => Ok(id),
        }
    }

    /// Renews a lease; false when it has expired (its keys are gone).
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<bool, EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": lease.to_string() }))
            .await?;
        Ok(int(&answer["result"]["TTL"]) > 0)
    }

    /// Ends a lease now: its keys disappear.
    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() }))
            .await
            .map(|_| ())
    }

    /// Watches `key` from revision `from` on.
    pub(crate) async fn watch(&self, key: &str, from: i64) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(key.as_bytes()), "start_revision": from.to_string(),
        }});
        self.open_watch(body).await
    }

    /// Watches every key starting with `prefix`, from now on.
    pub(crate) async fn watch_prefix(&self, prefix: &str) -> Result<Watch, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)),
        }});
        self.open_watch(body).await
    }

    async fn open_watch(&self, body: Value) -> Result<Watch, EtcdError> {
        let response = self.send("/v3/watch", &body).await?;
        if !response.status().is_success() {
            return Err(EtcdError::Refused(format!(
                "/v3/watch: {}",
                response.status()
            )));
        }
        let mut watch = Watch {
            body: response.into_body(),
            buffer: Vec::new(),
            pending: std::collections::VecDeque::new(),
        };
        // The first line confirms the watch exists.
        match tokio::time::timeout(REQUEST_TIMEOUT, watch.line()).await {
            Ok(Ok(Some(first))) if first["result"]["created"].as_bool() == Some(true) => {
                watch.take_events(&first)?;
                Ok(watch)
            }
            Ok(Ok(Some(other))) => Err(EtcdError::Protocol(format!("/v3/watch: {other}"))),
            Ok(Ok(None)) => Err(EtcdError::Protocol("/v3/watch: no answer".into())),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EtcdError::Unreachable {
                endpoints: self.endpoints(),
                reason: "watch not confirmed in time".into(),
            }),
        }
    }
}

/// An open watch: events as etcd sends them.
pub(crate) struct Watch {
    body: Incoming,
    /// Bytes received after the last complete line.
    buffer: Vec<u8>,
    /// Events received but not handed out yet.
    pending: std::collections::VecDeque<WatchEvent>,
}

impl Watch {
    /// The next JSON line; `None` at the end of the stream.
    async fn line(&mut self) -> Result<Option<Value>, EtcdError> {
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(&line)
                    .map(Some)
                    .map_err(|e| EtcdError::Protocol(format!("watch: {e}")));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(EtcdError::Unreachable {
                        endpoints: "watch".into(),
                        reason: error_chain(&e),
                    });
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if self.buffer.len() + data.len() > MAX_ANSWER {
                            return Err(EtcdError::Protocol("watch: line too long".into()));
                        }
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    fn take_events(&mut self, line: &Value) -> Result<(), EtcdError> {
        if !line["error"].is_null() {
            return Err(EtcdError::Refused(format!("watch: {}", line["error"])));
        }
        let result = &line["result"];
        if int(&result["compact_revision"]) > 0 {
            return Err(EtcdError::Refused(format!(
                "watch: revisions up to {} were compacted",
                int(&result["compact_revision"])
            )));
        }
        if result["canceled"].as_bool() == Some(true) {
            return Err(EtcdError::Refused(format!(
                "watch canceled: {}",
                result["cancel_reason"].as_str().unwrap_or("no reason")
            )));
        }
        for event in result["events"].as_array().into_iter().flatten() {
            let kv = kv_of(&event["kv"])?;
            self.pending.push_back(match event["type"].as_str() {
                Some("DELETE") => WatchEvent::Delete(kv.mod_revision),
                _ => WatchEvent::Put(kv),
            });
        }
        Ok(())
    }

    /// The next event; `Ok(None)` when etcd closed the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<WatchEvent>, EtcdError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Ok(Some(event));
            }
            match self.line().await? {
                None => return Ok(None),
                Some(line) => self.take_events(&line)?,
            }
        }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), [b'a', 0x80]);
    }

    #[test]
    fn kvs_decode() {
        let kv = kv_of(&json!({ "key": "L2E=", "value": "aGk=", "mod_revision": "7" })).unwrap();
        assert_eq!(
            kv,
            Kv {
                key: "/a".into(),
                value: b"hi".to_vec(),
                mod_revision: 7
            }
        );
        assert!(kv_of(&json!({ "key": "!!" })).is_err());
    }
}
