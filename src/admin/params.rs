//! Parameters of legacy calls: from the query string (GET) and, for POST, from an
//! `application/x-www-form-urlencoded` body; the body wins when both name one.

use std::collections::HashMap;

use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};

use super::error::AdminError;

/// The hidden form field that marks a post from the running page: the answer is
/// then a redirect back to the page instead of plain text.
pub(crate) const FROM_PAGE: &str = "_page";

/// A legacy call's parameters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = AdminError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let mut map = HashMap::new();
        if let Some(query) = request.uri().query() {
            map.extend(parse_urlencoded(query.as_bytes()));
        }
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if request.method() == Method::POST && is_form {
            let body = axum::body::Bytes::from_request(request, state)
                .await
                .map_err(|e| AdminError::BadRequest(e.body_text()))?;
            map.extend(parse_urlencoded(&body));
        }
        Ok(Params(map))
    }
}

/// Decodes a legacy call's query string or form body into its pairs, as the
/// handlers get them.
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_params(input: &[u8]) -> Vec<(String, String)> {
    parse_urlencoded(input)
}

/// `a=1&b=x+y` → pairs, percent-decoded; invalid UTF-8 is replaced, not refused.
fn parse_urlencoded(input: &[u8]) -> Vec<(String, String)> {
    input
        .split(|&b| b == b'&')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut kv = part.splitn(2, |&b| b == b'=');
            let k = decode(kv.next().unwrap_or_default());
            let v = decode(kv.next().unwrap_or_default());
            (k, v)
        })
        .collect()
}

fn decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Params {
    /// Whether the call came from a form of the running page.
    pub(crate) fn is_from_page(&self) -> bool {
        self.0.contains_key(FROM_PAGE)
    }

    /// The page a form post returns to: `connections` or the running page.
    pub(crate) fn back_to(&self) -> &'static str {
        match self.0.get(FROM_PAGE).map(String::as_str) {
            Some("connections") => "connections",
            _ => "running",
        }
    }

    /// The names of the parameters given.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    /// A parameter that may be absent; empty counts as absent.
    pub(crate) fn optional(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn urlencoded_decoding() {
        assert_eq!(
            parse_urlencoded(b"a=1&b=x+y&c=%41%zz%4&&d"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "A%zz%4".into()),
                ("d".into(), "".into())
            ]
        );
        assert_eq!(decode(b"%ff%fe"), "\u{fffd}\u{fffd}");
        assert_eq!(decode(b"%"), "%");
    }

    #[tokio::test]
    async fn query_and_form_body_merge() {
        let request = Request::builder()
            .method("POST")
            .uri("/addHost?service=s&group=q")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from("group=g&name=h1&ip=127.0.0.1%3A80"))
            .unwrap();
        let p = Params::from_request(request, &()).await.unwrap();
        assert_eq!(p.optional("service"), Some("s"));
        assert_eq!(p.optional("group"), Some("g"));
        assert_eq!(p.optional("ip"), Some("127.0.0.1:80"));
        assert_eq!(p.optional("weight"), None);
    }
}
