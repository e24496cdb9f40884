//! The OpenAPI 3 document of the JSON API, written by hand from one table of
//! operations; a test walks it against the real routes.

use serde_json::{Map, Value, json};

/// One documented operation.
struct Op {
    path: &'static str,
    method: &'static str,
    summary: &'static str,
    /// An example request body, if the operation takes one.
    body: Option<Value>,
    /// The success status and what it returns.
    ok: (u16, &'static str),
    /// Error statuses the operation may answer besides 401/403/429.
    errors: &'static [u16],
}

const S: &str = "/api/v1/services/{service}";

fn ops() -> Vec<Op> {
    let op = |path: &'static str,
              method: &'static str,
              summary: &'static str,
              body: Option<Value>,
              ok: (u16, &'static str),
              errors: &'static [u16]| Op {
        path,
        method,
        summary,
        body,
        ok,
        errors,
    };
    let _ = S;
    vec![
        op(
            "/api/v1/openapi.json",
            "get",
            "This document.",
            None,
            (200, "Object"),
            &[],
        ),
        op(
            "/api/v1/events",
            "get",
            "Server-sent events: `stats` (live counters) and `change` (transitions).",
            None,
            (200, "Event stream"),
            &[],
        ),
        op(
            "/api/v1/stats",
            "get",
            "Every service, group and host with counters.",
            None,
            (200, "Stats"),
            &[],
        ),
        op(
            "/api/v1/status",
            "get",
            "The process: `pid`, `version`, `started_at` (Unix seconds) and `started`: \
             `{\"how\": \"fresh\"}` or `{\"how\": \"upgraded\", \"from_pid\", \"from_version\", \
             \"at\", \"connections_moved\"}` (`txlb upgrade`).",
            None,
            (200, "Object"),
            &[],
        ),
        op(
            "/api/v1/services",
            "get",
            "List services.",
            None,
            (200, "ServiceList"),
            &[],
        ),
        op(
            "/api/v1/services",
            "post",
            "Create a service listening on new addresses (opened live).",
            Some(
                json!({"name": "web2", "listen": ["127.0.0.1:0"], "group": "main",
                        "scheduler": "roundr", "hosts": [{"name": "h1", "ip": "127.0.0.1:9", "weight": 1}]}),
            ),
            (201, "Service"),
            &[400, 409],
        ),
        op(
            "/api/v1/services/{service}",
            "get",
            "One service.",
            None,
            (200, "Service"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}",
            "delete",
            "Remove a service; its listeners close, its connections continue.",
            None,
            (204, "Nothing"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/listeners",
            "get",
            "The service's bound listeners, each with `accept_proxy` (PROXY headers required).",
            None,
            (200, "ListenerList"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/listeners",
            "post",
            "Listen on one more address (opened live; a port in use is a 409). Optional \
             `accept_proxy` and `trusted_proxies` override the service's for this listener.",
            Some(
                json!({"listen": "127.0.0.1:0", "accept_proxy": true, "trusted_proxies": ["10.0.0.0/8"]}),
            ),
            (201, "Listener"),
            &[400, 404, 409],
        ),
        op(
            "/api/v1/services/{service}/listeners/{listen}",
            "delete",
            "Stop listening on an address; its connections finish.",
            None,
            (204, "Nothing"),
            &[400, 404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups",
            "get",
            "The service's groups.",
            None,
            (200, "GroupList"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups",
            "post",
            "Add a group (standby until enabled; with \"backup\": true, a backup group that serves while no host of the enabled group is usable).",
            Some(json!({"name": "standby", "scheduler": "leastc",
                        "hosts": [{"name": "s1", "ip": "127.0.0.1:9"}]})),
            (201, "Group"),
            &[400, 404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}",
            "get",
            "One group.",
            None,
            (200, "Group"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}",
            "delete",
            "Remove a group; the enabled group cannot be removed (409).",
            None,
            (204, "Nothing"),
            &[404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/scheduler",
            "put",
            "Change the group's scheduler.",
            Some(json!({"scheduler": "leastc"})),
            (200, "Group"),
            &[400, 404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/enable",
            "post",
            "Make this the enabled group; established connections continue. A backup group cannot be enabled (409).",
            None,
            (200, "Group"),
            &[404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts",
            "get",
            "The group's hosts with counters.",
            None,
            (200, "HostList"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts",
            "post",
            "Add a host.",
            Some(json!({"name": "h9", "ip": "127.0.0.1:9", "weight": 1})),
            (201, "Host"),
            &[400, 404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts",
            "delete",
            "Remove every host of a group that is not enabled.",
            None,
            (204, "Nothing"),
            &[404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}",
            "get",
            "One host with counters.",
            None,
            (200, "Host"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}/check",
            "get",
            "What the host's checks say of it: state and reason, the group's active \
             check and its progress, the agent's word, the passive checks' ejection.",
            None,
            (200, "HostCheck"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}",
            "delete",
            "Remove a host; refused for the last host of the enabled group (409).",
            None,
            (204, "Nothing"),
            &[404, 409],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}/admin-down",
            "post",
            "Take the host out of rotation without removing it.",
            None,
            (200, "Host"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}/admin-up",
            "post",
            "Put an admin-down host back in rotation.",
            None,
            (200, "Host"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}/retry",
            "post",
            "Probe the host now; back in rotation if it answers.",
            None,
            (200, "RetryResult"),
            &[404],
        ),
        op(
            "/api/v1/services/{service}/groups/{group}/hosts/{host}/drain",
            "post",
            "Drain the host: no new connections, established ones continue; with \
             `?deadline=SECONDS` (or a JSON body `{\"deadline\": SECONDS}`, not both) \
             those still open then are closed.",
            None,
            (200, "Host"),
            &[400, 404],
        ),
        op(
            "/api/v1/certificates",
            "get",
            "Certificates in use: each terminating listener's (`role` server) and each \
             originating group's client certificate (`role` client), with names, issuer, \
             file and expiry; `source` says whether it was read from `file` or ordered \
             from `acme` (then `file` is where it is stored; listed once issued).",
            None,
            (200, "CertificateList"),
            &[],
        ),
        op(
            "/api/v1/services/{service}/listeners/{listen}/certificates/{index}",
            "put",
            "Serve another certificate in place of the listener's certificate number \
             `index` (from 0): PEM text of the chain and its key, checked before use, \
             written beside the old files (`NAME.UNIXTIME.pem`, `.key`) and named by the \
             running configuration (`config save` keeps it). Not in fleet mode (409).",
            Some(
                json!({"cert": "-----BEGIN CERTIFICATE-----\n…", "key": "-----BEGIN PRIVATE KEY-----\n…"}),
            ),
            (200, "Certificate"),
            &[400, 404, 409],
        ),
        op(
            "/api/v1/connections",
            "get",
            "Open connections, oldest first; `?service=` and `?host=` filter.",
            None,
            (200, "ConnectionList"),
            &[400],
        ),
        op(
            "/api/v1/connections/{id}",
            "delete",
            "Close one open connection.",
            None,
            (204, "Nothing"),
            &[400, 404],
        ),
        op(
            "/api/v1/users",
            "get",
            "Admin users (names and access, never hashes).",
            None,
            (200, "UserList"),
            &[],
        ),
        op(
            "/api/v1/users",
            "post",
            "Add an admin user; the password is stored as a SHA-512-crypt hash.",
            Some(json!({"name": "ops", "password": "s3cret", "access": "readonly"})),
            (201, "User"),
            &[400, 409],
        ),
        op(
            "/api/v1/users/{name}",
            "delete",
            "Remove an admin user.",
            None,
            (204, "Nothing"),
            &[404],
        ),
        op(
            "/api/v1/log/reopen",
            "post",
            "Close and reopen the log file (log rotation).",
            None,
            (200, "Message"),
            &[500],
        ),
        op(
            "/api/v1/config/save",
            "post",
            "Write the running configuration to its file now.",
            None,
            (200, "Message"),
            &[409, 500, 501],
        ),
        op(
            "/api/v1/config/reload",
            "post",
            "Read the configuration file again and apply it as a whole, or refuse it as a \
             whole (409, with the file's error at file:line:column): the reload SIGHUP and \
             the console's `config reload` do, moving the admin plane with it.",
            None,
            (200, "Message"),
            &[409, 501],
        ),
        op(
            "/api/v1/config/status",
            "get",
            "The configuration file's status: `conflict` (edited on disk since it was loaded, \
             so write-back leaves it alone; with both differences as unified diffs) and \
             `reload` (the last reload: when, `ok`, and the refusal's error with \
             file:line:column); each `null` when there is nothing to report.",
            None,
            (200, "ConfigStatus"),
            &[],
        ),
        op(
            "/api/v1/fleet",
            "get",
            "Fleet mode (`<cluster>`): this instance's name and etcd, whether etcd answers, \
             the configuration `revision` applied here and the `latest_revision` seen in etcd \
             (`in_step` false, with the reason in `out_of_step`, when the newest cannot run \
             here: changes are refused here then), the registered `instances`, and \
             `hosts_down`: every host some instance sees bad or admin-down, with who sees \
             it how. `enabled` is false (and the rest empty) without fleet mode.",
            None,
            (200, "Fleet"),
            &[],
        ),
    ]
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "A parameter or the body is missing or bad; the message names it.",
        401 => "Credentials missing or wrong.",
        403 => "Read-only user, or a cross-site request.",
        404 => "No such service, group, host, listener or user.",
        409 => {
            "Refused by a rule (enabled group, last host, duplicate, port in use), or, in \
                fleet mode, the configuration was changed on another instance meanwhile, or \
                this instance is out of step with the fleet."
        }
        413 => "The request body is larger than the limit (64 KiB).",
        429 => "Too many failed logins from this address.",
        500 => "Internal error (details in the server log).",
        501 => "Not set up on this server.",
        503 => "Fleet mode: etcd cannot be reached, so changes are refused; nothing changed.",
        _ => "",
    }
}

/// The OpenAPI 3.0 document served at `/api/v1/openapi.json`.
pub fn openapi_document() -> Value {
    let mut paths = Map::new();
    for op in ops() {
        let params: Vec<Value> = op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        let mut responses = Map::new();
        let ok = if op.ok.0 == 204 {
            json!({"description": reason(204)})
        } else if op.path.ends_with("/events") {
            json!({"description": op.ok.1, "content": {"text/event-stream": {"schema": {"type": "string"}}}})
        } else {
            json!({"description": op.ok.1, "content": {"application/json": {"schema": {"type": "object"}}}})
        };
        responses.insert(op.ok.0.to_string(), ok);
        // Every operation with a body may meet the body size limit.
        let too_large: &[u16] = if op.body.is_some() { &[413] } else { &[] };
        // Every configuration change may meet fleet mode's etcd being away
        // (admin-down, drains, retries, closes and saves are the instance's own).
        const LOCAL: &[&str] = &[
            "/admin-down",
            "/admin-up",
            "/retry",
            "/drain",
            "/reopen",
            "/save",
            "{id}",
        ];
        let local = LOCAL.iter().any(|end| op.path.ends_with(end));
        let fleet: &[u16] = if op.method == "get" || local {
            &[]
        } else {
            &[503]
        };
        for status in op
            .errors
            .iter()
            .chain(too_large)
            .chain(fleet)
            .chain(&[401, 403, 429])
        {
            responses.insert(
                status.to_string(),
                json!({"description": reason(*status),
                       "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        let mut operation = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(example) = op.body {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": {"type": "object"}, "example": example}}
            });
        }
        let item = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        item[op.method] = operation;
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "txlb admin API",
            "version": "1",
            "description": "Services, listeners, groups, hosts and users of a running txlb. \
                            Every change applies to new connections at once; established ones continue."
        },
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}
                    }}
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_shape() {
        let doc = super::openapi_document();
        assert_eq!(doc["openapi"], "3.0.3");
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.len() >= 15);
        let hosts = &paths["/api/v1/services/{service}/groups/{group}/hosts"];
        assert!(
            hosts["get"].is_object() && hosts["post"].is_object() && hosts["delete"].is_object()
        );
        assert_eq!(hosts["post"]["parameters"].as_array().unwrap().len(), 2);
    }
}
