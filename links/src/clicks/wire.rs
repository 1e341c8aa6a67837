//! Click events on the wire: the versioned protobuf schema of
//! `proto/shortener/clicks/v1/click.proto`, and the W3C trace context that
//! travels beside them in message headers.
//!
//! Encoding never fails; decoding checks everything, like any input from
//! outside, and says what was wrong (a consumer sets such a message aside
//! with the reason).

use chrono::DateTime;
use prost::Message;
use uuid::Uuid;

use super::{ClickEvent, Country, MAX_USER_AGENT, ReferrerHost};
use crate::code::Code;

/// The generated protobuf types.
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/shortener.clicks.v1.rs"));
}

/// Header naming the schema of a message's value.
pub const SCHEMA_HEADER: &str = "schema";
/// The schema this version writes and reads.
pub const SCHEMA_V1: &str = "shortener.clicks.v1.Click";
/// W3C trace context headers.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Why bytes are not a click event this version can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown schema {0:?}")]
    UnknownSchema(String),
    #[error("no schema header")]
    NoSchema,
    #[error("not a protobuf Click: {0}")]
    Protobuf(String),
    #[error("invalid field {field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl Into<String>) -> DecodeError {
    DecodeError::Field {
        field,
        reason: reason.into(),
    }
}

/// The protobuf encoding of an event.
pub fn encode(event: &ClickEvent) -> Vec<u8> {
    v1::Click {
        id: event.id.as_bytes().to_vec(),
        code: event.code.as_str().to_owned(),
        at_unix_ms: event.at.timestamp_millis(),
        referrer: event.referrer.as_deref().unwrap_or_default().to_owned(),
        user_agent: event.user_agent.clone().unwrap_or_default(),
        country: event
            .country
            .map(|c| c.as_str().to_owned())
            .unwrap_or_default(),
    }
    .encode_to_vec()
}

/// The event in `value`, whose `schema` header said what it is.
pub fn decode(schema: Option<&[u8]>, value: &[u8]) -> Result<ClickEvent, DecodeError> {
    match schema {
        None => return Err(DecodeError::NoSchema),
        Some(s) if s == SCHEMA_V1.as_bytes() => {}
        Some(other) => {
            return Err(DecodeError::UnknownSchema(
                String::from_utf8_lossy(other).into_owned(),
            ));
        }
    }
    let click = v1::Click::decode(value).map_err(|e| DecodeError::Protobuf(e.to_string()))?;
    let id = Uuid::from_slice(&click.id).map_err(|e| field("id", e.to_string()))?;
    let code = Code::parse(&click.code).map_err(|e| field("code", e.to_string()))?;
    let at = DateTime::from_timestamp_millis(click.at_unix_ms)
        .filter(|at| at.timestamp() > 0 && *at <= crate::stats::latest())
        .ok_or_else(|| field("at_unix_ms", format!("{} is not a time", click.at_unix_ms)))?;
    let referrer = match click.referrer.as_str() {
        "" => None,
        host => {
            Some(ReferrerHost::parse(host).ok_or_else(|| field("referrer", "not a host name"))?)
        }
    };
    let user_agent = match click.user_agent {
        ua if ua.is_empty() => None,
        ua if ua.len() <= MAX_USER_AGENT => Some(ua),
        _ => return Err(field("user_agent", "longer than 512 bytes")),
    };
    let country = match click.country.as_str() {
        "" => None,
        c => Some(
            Country::parse(c.as_bytes())
                .ok_or_else(|| field("country", format!("{c:?} is not ISO 3166-1 alpha-2")))?,
        ),
    };
    Ok(ClickEvent {
        id,
        code,
        at,
        referrer,
        user_agent,
        country,
    })
}

/// A W3C `traceparent` (version 00): which trace a click belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent(String);

impl TraceParent {
    /// Accepts a well-formed version-00 value with non-zero ids, as
    /// <https://www.w3.org/TR/trace-context/#traceparent-header> defines it.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(raw).ok()?.trim();
        let parts: Vec<&str> = text.split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else {
            return None;
        };
        let hex = |s: &str, len| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
        (*version == "00"
            && hex(trace, 32)
            && hex(span, 16)
            && hex(flags, 2)
            && nonzero(trace)
            && nonzero(span))
        .then(|| Self(text.to_owned()))
    }

    /// A new trace, not sampled: the event still carries an id that logs
    /// and the consumer can refer to.
    pub fn new_root() -> Self {
        let trace: u128 = rand::random::<u128>().max(1);
        let span: u64 = rand::random::<u64>().max(1);
        Self(format!("00-{trace:032x}-{span:016x}-00"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;

    fn event() -> ClickEvent {
        ClickEvent::from_request(
            Code::parse("abc1234").expect("valid"),
            DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).expect("valid"),
            Some(b"https://news.example.com/x"),
            Some(b"Mozilla/5.0 (X11; Linux x86_64)"),
            Some(b"de"),
        )
    }

    #[test]
    fn events_round_trip() {
        let event = event();
        let bytes = encode(&event);
        assert_eq!(decode(Some(SCHEMA_V1.as_bytes()), &bytes), Ok(event));
        let bare = ClickEvent::from_request(
            Code::parse("abc1234").expect("valid"),
            DateTime::from_timestamp_millis(1_700_000_000_000).expect("valid"),
            None,
            None,
            None,
        );
        assert_eq!(decode(Some(SCHEMA_V1.as_bytes()), &encode(&bare)), Ok(bare));
    }

    #[test]
    fn unusable_messages_say_why() {
        let good = encode(&event());
        let schema = Some(SCHEMA_V1.as_bytes());
        assert_eq!(decode(None, &good), Err(DecodeError::NoSchema));
        assert!(matches!(
            decode(Some(b"shortener.clicks.v9.Click"), &good),
            Err(DecodeError::UnknownSchema(s)) if s == "shortener.clicks.v9.Click"
        ));
        assert!(matches!(
            decode(schema, b"\xff\xff\xff garbage"),
            Err(DecodeError::Protobuf(_))
        ));
        let mut bad = v1::Click::decode(good.as_slice()).expect("decodes");
        bad.code = "no/slash".into();
        assert!(matches!(
            decode(schema, &bad.encode_to_vec()),
            Err(DecodeError::Field { field: "code", .. })
        ));
        let mut bad = v1::Click::decode(good.as_slice()).expect("decodes");
        bad.id = vec![1, 2, 3];
        assert!(matches!(
            decode(schema, &bad.encode_to_vec()),
            Err(DecodeError::Field { field: "id", .. })
        ));
        let mut bad = v1::Click::decode(good.as_slice()).expect("decodes");
        bad.country = "DEU".into();
        assert!(matches!(
            decode(schema, &bad.encode_to_vec()),
            Err(DecodeError::Field {
                field: "country",
                ..
            })
        ));
        for at in [0, -1, i64::MIN, i64::MAX, 253_402_300_800_000] {
            let mut bad = v1::Click::decode(good.as_slice()).expect("decodes");
            bad.at_unix_ms = at;
            assert!(
                matches!(
                    decode(schema, &bad.encode_to_vec()),
                    Err(DecodeError::Field {
                        field: "at_unix_ms",
                        ..
                    })
                ),
                "{at}"
            );
        }
        // An empty message lacks the required id and code.
        assert!(decode(schema, &[]).is_err());
    }

    #[test]
    fn traceparents_are_checked() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            TraceParent::parse(good.as_bytes()).map(|t| t.as_str().to_owned()),
            Some(good.to_owned())
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
        let root = TraceParent::new_root();
        assert_eq!(
            TraceParent::parse(root.as_str().as_bytes()),
            Some(root.clone())
        );
        assert_ne!(root, TraceParent::new_root());
    }
}
