//! Carrying a decision context with the work: the same header value in HTTP requests
//! ([`attach_http`], [`read_http`]) and Kafka message headers ([`attach_kafka`],
//! [`read_kafka`]), under the name [`crate::HEADER`].

use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::HEADER;

/// Adds the decision context to outgoing HTTP request (or response) headers. A value that is
/// not a valid header value (it always is when produced by `encode`) is not attached.
pub fn attach_http(headers: &mut http::HeaderMap, value: &str) {
    if let Ok(v) = http::HeaderValue::from_str(value) {
        headers.insert(HEADER, v);
    }
}

/// The decision context of incoming HTTP headers, if any (verify it before use).
#[must_use]
pub fn read_http(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(HEADER).and_then(|v| v.to_str().ok())
}

/// Adds the decision context to the headers of a message being produced.
#[must_use]
pub fn attach_kafka(headers: OwnedHeaders, value: &str) -> OwnedHeaders {
    headers.insert(Header {
        key: HEADER,
        value: Some(value),
    })
}

/// The decision context carried by a consumed message's headers, if any (verify it before
/// use).
#[must_use]
pub fn read_kafka<H: Headers>(headers: Option<&H>) -> Option<String> {
    let headers = headers?;
    headers
        .iter()
        .find(|h| h.key == HEADER)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}
