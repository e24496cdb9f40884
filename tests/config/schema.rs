//! The JSON Schema of the TOML configuration (`txlb schema`) against the TOML
//! reader: the documented TOML examples validate against the schema, and every
//! key the schema knows is one the reader accepts. Either side changing without
//! the other fails here.

use serde_json::{Value, json};

const TXLB: &str = env!("CARGO_BIN_EXE_txlb");

fn schema() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/txlb.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `#/definitions/NAME` resolved, or the schema itself.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.strip_prefix("#/definitions/").expect("local $ref");
            resolve(root, &root["definitions"][name])
        }
        None => schema,
    }
}

/// The draft-07 keywords this schema uses (not `pattern`); errors with paths.
fn validate(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let schema = resolve(root, schema);
    if let Some(alternatives) = schema["anyOf"].as_array() {
        let mut all = Vec::new();
        for alternative in alternatives {
            let mut these = Vec::new();
            validate(root, alternative, value, path, &mut these);
            if these.is_empty() {
                return;
            }
            all.extend(these);
        }
        errors.push(format!("{path}: no alternative of anyOf matches: {all:?}"));
        return;
    }
    let mut fail = |what: String| errors.push(format!("{path}: {what}"));
    if let Some(kind) = schema["type"].as_str() {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            other => panic!("type {other} not handled"),
        };
        if !ok {
            return fail(format!("expected {kind}, got {value}"));
        }
    }
    if let Some(options) = schema["enum"].as_array()
        && !options.contains(value)
    {
        fail(format!("{value} is not one of {options:?}"));
    }
    if let Some(n) = value.as_f64() {
        if schema["minimum"].as_f64().is_some_and(|m| n < m) {
            fail(format!("{n} below minimum"));
        }
        if schema["maximum"].as_f64().is_some_and(|m| n > m) {
            fail(format!("{n} above maximum"));
        }
        if schema["exclusiveMinimum"].as_f64().is_some_and(|m| n <= m) {
            fail(format!("{n} not above exclusiveMinimum"));
        }
    }
    if let Some(s) = value.as_str() {
        // JSON Schema counts characters, not bytes.
        let len = s.chars().count() as u64;
        if schema["minLength"].as_u64().is_some_and(|m| len < m) {
            fail(format!("{s:?} too short"));
        }
        if schema["maxLength"].as_u64().is_some_and(|m| len > m) {
            fail(format!("{s:?} too long"));
        }
    }
    if let Some(items) = value.as_array() {
        if schema["minItems"]
            .as_u64()
            .is_some_and(|m| (items.len() as u64) < m)
        {
            fail("too few items".into());
        }
        for (i, item) in items.iter().enumerate() {
            validate(
                root,
                &schema["items"],
                item,
                &format!("{path}[{i}]"),
                errors,
            );
        }
    }
    if let Some(object) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            if !object.contains_key(key.as_str().unwrap()) {
                errors.push(format!("{path}: {key} is required"));
            }
        }
        for (key, item) in object {
            match schema["properties"].get(key) {
                Some(property) => validate(root, property, item, &format!("{path}.{key}"), errors),
                None if schema["additionalProperties"] == json!(false) => {
                    errors.push(format!("{path}: unknown key {key:?}"));
                }
                None => {}
            }
        }
    }
}

fn errors_of(toml_text: &str) -> Vec<String> {
    let root = schema();
    let value: toml::Value = toml::from_str(toml_text).unwrap();
    let value = serde_json::to_value(value).unwrap();
    let mut errors = Vec::new();
    validate(&root, &root, &value, "$", &mut errors);
    errors
}

/// The ```toml blocks of a Markdown or `//!` text.
fn toml_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line
            .strip_prefix("//!")
            .map_or(line, |l| l.strip_prefix(' ').unwrap_or(l));
        match (&mut current, line.trim()) {
            (None, "```toml") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            (Some(block), _) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn schema_command_prints_the_shipped_schema() {
    let out = std::process::Command::new(TXLB)
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, schema());
    assert_eq!(
        printed["$schema"],
        "http://json-schema.org/draft-07/schema#"
    );
}

#[test]
fn documented_toml_examples_validate_and_load() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let mut documents = Vec::new();
    for file in ["README.md", "src/config/toml.rs"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
        let blocks = toml_blocks(&text);
        assert!(!blocks.is_empty(), "no TOML example in {file}");
        documents.extend(blocks.into_iter().map(|b| (file.to_string(), b)));
    }
    let fixture = "tests/fixtures/writeback/commented.toml";
    documents.push((
        fixture.into(),
        std::fs::read_to_string(format!("{dir}/{fixture}")).unwrap(),
    ));
    for (file, text) in documents {
        // Every example is a real configuration…
        if let Err(error) = txlb::config::Config::from_toml_str(&text) {
            panic!("{file}: the reader refuses its example: {error}\n{text}");
        }
        // …and the schema accepts it.
        let errors = errors_of(&text);
        assert!(errors.is_empty(), "{file}: {errors:#?}\n{text}");
    }
}

/// An instance with every property the schema defines, with plausible values.
fn everything(root: &Value, schema: &Value, key: &str) -> Value {
    let schema = resolve(root, schema);
    // The last alternative is the richest (a table where a string would do).
    if let Some(last) = schema["anyOf"].as_array().and_then(|a| a.last()) {
        return everything(root, last, key);
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    match schema["type"].as_str().unwrap_or_default() {
        "object" => Value::Object(
            schema["properties"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, s)| (k.clone(), everything(root, s, k)))
                .collect(),
        ),
        "array" => json!([everything(root, &schema["items"], key)]),
        "boolean" => json!(true),
        "integer" => json!(1),
        "number" => json!(1.5),
        "string" if schema["pattern"].is_string() => json!("127.0.0.1:1"),
        "string" => json!(format!("{key}-value")),
        other => panic!("type {other:?} at {key}"),
    }
}

#[test]
fn every_key_of_the_schema_is_one_the_reader_knows() {
    let root = schema();
    let mut document = everything(&root, &root, "");
    // One group enabled, named as the service's enabled_group.
    document["service"][0]["enabled_group"] = json!("group");
    document["service"][0]["group"][0]["name"] = json!("group");
    let text = toml::to_string(&document).unwrap();
    let mut errors = Vec::new();
    validate(&root, &root, &document, "$", &mut errors);
    assert!(errors.is_empty(), "{errors:#?}\n{text}");
    if let Err(error) = txlb::config::Config::from_toml_str(&text) {
        // Values may break a rule of the model; a key must never be unknown.
        let message = error.to_string();
        assert!(!message.contains("unknown field"), "{message}\n{text}");
    }
}

#[test]
fn the_schema_refuses_typos_and_wrong_types() {
    let base = "[[service]]\nname = \"s\"\nlisten = [\"*:80\"]\n[[service.group]]\nname = \"g\"\nenable = true\nhosts = [{ ip = \"10.0.0.1:80\" }]\n";
    assert!(errors_of(base).is_empty(), "{:?}", errors_of(base));
    let typo = format!("{base}[manager]\nhostcheck = {{ interval = 10 }}\n");
    assert!(errors_of(&typo).iter().any(|e| e.contains("hostcheck")));
    let negative = base.replace("name = \"s\"", "name = \"s\"\nconnect_timeout = -1");
    assert!(
        errors_of(&negative)
            .iter()
            .any(|e| e.contains("connect_timeout"))
    );
    let listener = base.replace(
        "listen = [\"*:80\"]",
        "listen = [\"*:80\", { ip = \"*:81\", accept_proxy = true }]",
    );
    assert!(
        errors_of(&listener).is_empty(),
        "{:?}",
        errors_of(&listener)
    );
    let typo = listener.replace("accept_proxy", "acept_proxy");
    assert!(errors_of(&typo).iter().any(|e| e.contains("acept_proxy")));
    let scheduler = base.replace("enable = true", "enable = true\nscheduler = \"fastest\"");
    assert!(
        errors_of(&scheduler)
            .iter()
            .any(|e| e.contains("scheduler"))
    );
}

#[test]
fn names_are_as_long_as_the_name_rule_allows() {
    assert_eq!(
        schema()["definitions"]["name"]["maxLength"],
        json!(txlb::config::MAX_NAME_LEN)
    );
}

#[test]
fn the_schema_knows_routes_and_services_without_listeners_or_groups() {
    let text = r#"
[[service]]
name = "edge"
listen = [{ ip = "*:443", inspect_timeout = 2.5, inspect_bytes = 4096, routes = [
  { sni = "*.example.org", alpn = "h2", service = "api" },
  { protocol = "ssh", service = "api" },
] }]

[[service]]
name = "api"
[[service.group]]
name = "g"
enable = true
hosts = [{ ip = "10.0.0.1:443" }]
"#;
    txlb::config::Config::from_toml_str(text).unwrap();
    assert!(errors_of(text).is_empty(), "{:?}", errors_of(text));
    let typo = text.replace("alpn = \"h2\"", "apln = \"h2\"");
    assert!(errors_of(&typo).iter().any(|e| e.contains("apln")));
    let quic = text.replace("\"ssh\"", "\"quic\"");
    assert!(errors_of(&quic).iter().any(|e| e.contains("protocol")));
    let bytes = text.replace("4096", "20000");
    assert!(
        errors_of(&bytes)
            .iter()
            .any(|e| e.contains("inspect_bytes"))
    );
}
