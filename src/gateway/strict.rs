//! Strict reading of what a request names: percent-escapes, keys in paths,
//! and JSON objects. Pure functions, no IO.
//!
//! One rule each, applied before any handler runs or any byte is written:
//!
//! - **Percent-escapes** (RFC 3986 §2.1): every `%` is followed by two hex
//!   digits, and the decoded bytes are UTF-8, in the path and in the query
//!   string alike. A lenient decoder would keep `%ZZ` literally, so `%ZZ` and
//!   `%25ZZ` would name one key, and would replace bad UTF-8 with U+FFFD, so
//!   two different requests would read the same key.
//! - **Dot segments** (RFC 3986 §5.2.4): a key with a `.` or `..` segment is
//!   refused wherever the gateway takes a key. Ordinary HTTP clients remove
//!   such segments before sending, so a key holding one could be written but
//!   never read back by URL.
//! - **JSON objects**: a request type is read only from a JSON object with
//!   named fields ([`Object`]). serde's derive would also take a JSON array
//!   in field order, which bypasses `deny_unknown_fields` and lets
//!   `[[],[{"put":...}],[]]` pass for a transaction.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::error_code::{ApiError, ErrorCode};

/// Checks that `raw` (a path or a query string, still encoded) has only
/// complete percent-escapes and decodes to UTF-8. `what` names the part
/// for the message ("path", "query string").
pub(crate) fn check_percent_encoding(raw: &str, what: &str) -> Result<(), ApiError> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(offset) = bytes[i..].iter().position(|&b| b == b'%') {
        let at = i + offset;
        let escape = bytes.get(at + 1..at + 3);
        if !escape.is_some_and(|e| e.iter().all(u8::is_ascii_hexdigit)) {
            let shown: String = raw[at..].chars().take(3).collect();
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "the {what} has an invalid percent-escape {shown:?} at byte {at}: '%' must be followed by two hex digits (write a literal '%' as %25)"
                ),
            ));
        }
        i = at + 3;
    }
    let decoded = percent_encoding::percent_decode_str(raw).collect::<Vec<u8>>();
    if let Err(e) = std::str::from_utf8(&decoded) {
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "the {what} does not decode to UTF-8 (invalid byte at decoded offset {}); keys and parameters are UTF-8 text",
                e.valid_up_to()
            ),
        ));
    }
    Ok(())
}

/// Refuses a key with a `.` or `..` segment (between `/`s or at an end).
pub(crate) fn check_no_dot_segments(key: &str, what: &str) -> Result<(), ApiError> {
    match key.split('/').find(|s| *s == "." || *s == "..") {
        None => Ok(()),
        Some(segment) => Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "{what} {key:?} has a {segment:?} segment; HTTP clients remove dot segments from URLs, so such a key could not be read back"
            ),
        )),
    }
}

/// A `T` read only from a JSON object (see the module header). Errors from
/// inside the object keep their position and path.
#[derive(Debug)]
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object with named fields")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

/// `deserialize_with` for a field holding one `T`: read only from an object.
pub(crate) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::<T>::deserialize(d).map(|Object(t)| t)
}

/// `deserialize_with` for an optional field that, when present, must hold
/// a `T` (JSON `null` is refused rather than read as absent, so a
/// document that says "a string" means it).
pub(crate) fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// For an optional field that must be an object when present:
/// `#[serde(default, deserialize_with = "strict::present_object")]`.
pub(crate) fn present_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    object(d).map(Some)
}

/// `deserialize_with` for a field holding `Vec<T>`: each element read only
/// from an object.
pub(crate) fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    let items = Vec::<Object<T>>::deserialize(d)?;
    Ok(items.into_iter().map(|Object(t)| t).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_must_be_complete_and_utf8() {
        for ok in [
            "",
            "a/b",
            "a%20b%2Fc",
            "%E2%82%AC",
            "x=1&y=%25ZZ",
            "caf%C3%A9",
        ] {
            assert!(check_percent_encoding(ok, "path").is_ok(), "{ok}");
        }
        for bad in ["%ZZ", "a%2", "a%", "%G0", "%FF", "%C3", "a=%80"] {
            let e = check_percent_encoding(bad, "path").unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad}");
            assert!(e.message.contains("path"), "{}", e.message);
        }
    }

    #[test]
    fn dot_segments_are_refused_anywhere_in_a_key() {
        for ok in ["a", ".a", "a..", "...", "a/.b/c", "a.b"] {
            assert!(check_no_dot_segments(ok, "key").is_ok(), "{ok}");
        }
        for bad in [".", "..", "a/../b", "a/.", "./a", "a/./b", "a/.."] {
            assert!(check_no_dot_segments(bad, "key").is_err(), "{bad}");
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Pair {
        key: String,
        #[serde(default)]
        value: Option<String>,
    }

    #[test]
    fn objects_are_read_by_name_and_arrays_refused() {
        let Object(p) = serde_json::from_str::<Object<Pair>>(r#"{"key":"k","value":"v"}"#)
            .expect("an object parses");
        assert_eq!((p.key.as_str(), p.value.as_deref()), ("k", Some("v")));
        // serde's derive alone takes arrays in field order; Object does not.
        assert!(serde_json::from_str::<Pair>(r#"["k","v"]"#).is_ok());
        let e = serde_json::from_str::<Object<Pair>>(r#"["k","v"]"#).unwrap_err();
        assert!(e.to_string().contains("JSON object"), "{e}");
        let unknown = serde_json::from_str::<Object<Pair>>(r#"{"key":"k","ttl":1}"#);
        assert!(unknown.is_err());
        let nested = serde_json::from_str::<Vec<Object<Pair>>>(r#"[{"key":"a"},["b"]]"#);
        assert!(nested.is_err());
    }
}
