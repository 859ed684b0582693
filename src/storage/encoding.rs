//! The on-disk format of the store, version 1.
//!
//! These types are the *disk* form of [`crate::types`]; every conversion is
//! explicit so that a change to a domain type can never silently change bytes
//! on disk. The exact bytes are pinned by the frozen-bytes tests at the bottom
//! of this file: if one of them fails, you changed the disk format and must
//! bump a version byte and teach the reader the old one instead.
//!
//! # Data keyspace
//!
//! One fjall entry per version of a user key.
//!
//! Key: `escape(user_key) ++ [0x00, 0x01] ++ be64(u64::MAX - ts)`, where
//! `escape` rewrites every `0x00` as `0x00 0xFF` and copies other bytes. The
//! escaped key plus terminator is prefix-free and order-preserving, so byte
//! order of encoded keys is (user key ascending, timestamp descending): the
//! newest version of a key is the first entry at or after its prefix.
//!
//! Value: `[format=1, kind, flags=0] ++ payload`, kind `1` = put (payload is
//! the value), kind `2` = tombstone (payload empty). The flags byte is
//! reserved for per-version metadata such as an origin region or lease id;
//! version 1 readers refuse non-zero flags because a flag may change how the
//! payload must be read.
//!
//! # Latest-version index keyspace
//!
//! One entry per user key that has stored versions (store format 2 on):
//! key `[0x01] ++ user_key` (fjall refuses an empty key, and the empty user
//! key is valid), value `[format=1] ++ be64(ts)` (the meta
//! value form), never below the key's newest stored version (see
//! `MvccStore`'s invariant). A point read looks the key up here, then
//! reads that exact version; both are point lookups that fjall's bloom
//! filters answer without searching every level.
//!
//! # Meta keyspace
//!
//! Keys are ASCII: `sys/format` (the store format marker), `sys/gc_horizon`
//! (the store-wide horizon), `sys/top_version` (at or above every version
//! ever stored, payload `be64(ts)`), `sys/gc_horizon/` ++ `be64(span id)` (the
//! horizon of one key span, a range of a region), and `user/<name>` for
//! named metadata. Every value is `[format=1] ++ payload`; a gc horizon
//! payload is `be64(ts)`.

use crate::types::Timestamp;

/// Format version of data records written by this build.
pub(crate) const DATA_FORMAT_V1: u8 = 1;
/// Format version of meta values written by this build.
pub(crate) const META_FORMAT_V1: u8 = 1;
/// Store format 1: data and meta keyspaces, no latest-version index. A
/// store in this format is migrated to [`STORE_FORMAT_V2`] when opened.
pub(crate) const STORE_FORMAT_V1: u8 = 1;
/// Store format 2: format 1 plus the latest-version index, which every
/// writer of this build keeps; written when a store is created or migrated.
/// A build that reads only format 1 refuses it (it would write versions
/// without raising their index entries).
pub(crate) const STORE_FORMAT_V2: u8 = 2;

/// Record kind byte of a put.
const KIND_PUT: u8 = 1;
/// Record kind byte of a tombstone.
const KIND_TOMBSTONE: u8 = 2;
/// Bytes before the payload of a data record: format, kind, flags.
const RECORD_HEADER_BYTES: usize = 3;

/// Ends the escaped user key. `0x00` is always followed by `0xFF` inside the
/// escaped key, so `0x00 0x01` cannot occur there and sorts before it.
const TERMINATOR: [u8; 2] = [0x00, 0x01];
/// The escape of a `0x00` byte in a user key.
const ESCAPED_ZERO: [u8; 2] = [0x00, 0xFF];
/// Bytes of the inverted timestamp suffix.
const TS_BYTES: usize = 8;

/// fjall (lsm-tree) keys must fit a `u16` length; longer keys panic inside it,
/// so every encoded key is checked against this before it is written.
pub(crate) const MAX_ENCODED_KEY_BYTES: usize = u16::MAX as usize;

/// Meta key of the store format marker.
pub(crate) const META_FORMAT_KEY: &[u8] = b"sys/format";
/// Meta key of the persisted gc horizon.
pub(crate) const META_GC_HORIZON_KEY: &[u8] = b"sys/gc_horizon";
/// Meta key of the top version: a timestamp at or above every version ever
/// stored (store format 2; value as a latest-version index entry).
pub(crate) const META_TOP_VERSION_KEY: &[u8] = b"sys/top_version";
/// Prefix of the meta keys of per-span gc horizons (followed by `be64(id)`).
const META_SPAN_HORIZON_PREFIX: &[u8] = b"sys/gc_horizon/";
/// Prefix of named (caller-owned) metadata keys.
const META_USER_PREFIX: &[u8] = b"user/";

/// Bytes that do not decode as format version 1. What it means for the
/// caller: the entry was written by a newer build or the disk is damaged;
/// the read is refused rather than guessed at.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// A data key is malformed.
    #[error("data key {key:02x?}: {why}")]
    BadKey {
        /// The raw key (truncated to 64 bytes).
        key: Vec<u8>,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A data record carries a format version this build cannot read.
    #[error("data record format version {found} (this build reads {DATA_FORMAT_V1})")]
    UnknownDataFormat {
        /// The version byte found.
        found: u8,
    },
    /// A meta value carries a format version this build cannot read.
    #[error("meta value format version {found} (this build reads {META_FORMAT_V1})")]
    UnknownMetaFormat {
        /// The version byte found.
        found: u8,
    },
    /// A data record is malformed in a way no version explains.
    #[error("data record: {why}")]
    BadRecord {
        /// What is wrong with it.
        why: String,
    },
    /// A meta value is malformed.
    #[error("meta value: {why}")]
    BadMeta {
        /// What is wrong with it.
        why: String,
    },
}

fn bad_key(key: &[u8], why: &'static str) -> DecodeError {
    let shown = key.get(..64).unwrap_or(key);
    DecodeError::BadKey {
        key: shown.to_vec(),
        why,
    }
}

/// Appends `escape(user_key) ++ TERMINATOR`: the prefix shared by every
/// version of `user_key`, and the smallest encoded key of that user key.
pub(crate) fn push_key_prefix(out: &mut Vec<u8>, user_key: &[u8]) {
    for &byte in user_key {
        if byte == 0x00 {
            out.extend_from_slice(&ESCAPED_ZERO);
        } else {
            out.push(byte);
        }
    }
    out.extend_from_slice(&TERMINATOR);
}

/// The prefix shared by every version of `user_key`.
pub(crate) fn key_prefix(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_key_len(user_key));
    push_key_prefix(&mut out, user_key);
    out
}

/// The largest encoded key of `user_key` (its version at timestamp zero).
pub(crate) fn key_prefix_last(user_key: &[u8]) -> Vec<u8> {
    encode_version_key(user_key, Timestamp::ZERO)
}

/// Length of the encoded version key of `user_key`, without encoding it.
pub(crate) fn encoded_key_len(user_key: &[u8]) -> usize {
    let zeros = user_key.iter().filter(|&&b| b == 0).count();
    user_key.len() + zeros + TERMINATOR.len() + TS_BYTES
}

/// Encodes the data key of `user_key` at version `ts`.
pub(crate) fn encode_version_key(user_key: &[u8], ts: Timestamp) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_key_len(user_key));
    push_key_prefix(&mut out, user_key);
    // Inverted so that newer versions sort first under byte order.
    out.extend_from_slice(&(u64::MAX - ts.0).to_be_bytes());
    debug_assert_eq!(out.len(), encoded_key_len(user_key));
    out
}

/// Splits a data key into its prefix (escaped user key plus terminator) and
/// its version, checking only the framing. Use [`decode_version_key`] to get
/// the user key back.
pub(crate) fn split_version_key(key: &[u8]) -> Result<(&[u8], Timestamp), DecodeError> {
    let Some(prefix_len) = key.len().checked_sub(TS_BYTES) else {
        return Err(bad_key(key, "shorter than the timestamp suffix"));
    };
    let (prefix, suffix) = key.split_at(prefix_len);
    if !prefix.ends_with(&TERMINATOR) {
        return Err(bad_key(key, "no terminator before the timestamp"));
    }
    let inverted: [u8; TS_BYTES] = suffix
        .try_into()
        .map_err(|_| bad_key(key, "timestamp suffix is not 8 bytes"))?;
    Ok((prefix, Timestamp(u64::MAX - u64::from_be_bytes(inverted))))
}

/// Decodes a data key into `(user key, version)`.
pub(crate) fn decode_version_key(key: &[u8]) -> Result<(Vec<u8>, Timestamp), DecodeError> {
    let (prefix, ts) = split_version_key(key)?;
    let escaped = &prefix[..prefix.len() - TERMINATOR.len()];
    let mut user_key = Vec::with_capacity(escaped.len());
    let mut bytes = escaped.iter();
    while let Some(&byte) = bytes.next() {
        if byte != 0x00 {
            user_key.push(byte);
            continue;
        }
        match bytes.next() {
            Some(0xFF) => user_key.push(0x00),
            _ => return Err(bad_key(key, "0x00 inside the user key is not escaped")),
        }
    }
    Ok((user_key, ts))
}

/// Encodes a data record: a put of `Some(value)` or a tombstone for `None`.
pub(crate) fn encode_record(value: Option<&[u8]>) -> Vec<u8> {
    let payload = value.unwrap_or_default();
    let mut out = Vec::with_capacity(RECORD_HEADER_BYTES + payload.len());
    let kind = if value.is_some() {
        KIND_PUT
    } else {
        KIND_TOMBSTONE
    };
    out.extend_from_slice(&[DATA_FORMAT_V1, kind, 0]);
    out.extend_from_slice(payload);
    out
}

/// Decodes a data record: `Some(value)` for a put, `None` for a tombstone.
pub(crate) fn decode_record(bytes: &[u8]) -> Result<Option<&[u8]>, DecodeError> {
    let Some((&format, rest)) = bytes.split_first() else {
        return Err(DecodeError::BadRecord {
            why: "empty record".into(),
        });
    };
    if format != DATA_FORMAT_V1 {
        return Err(DecodeError::UnknownDataFormat { found: format });
    }
    let [kind, flags, payload @ ..] = rest else {
        return Err(DecodeError::BadRecord {
            why: format!("{} byte record", bytes.len()),
        });
    };
    if *flags != 0 {
        return Err(DecodeError::BadRecord {
            why: format!("unknown flags {flags:#04x}"),
        });
    }
    match *kind {
        KIND_PUT => Ok(Some(payload)),
        KIND_TOMBSTONE if payload.is_empty() => Ok(None),
        KIND_TOMBSTONE => Err(DecodeError::BadRecord {
            why: format!("tombstone with {} payload bytes", payload.len()),
        }),
        other => Err(DecodeError::BadRecord {
            why: format!("unknown kind {other}"),
        }),
    }
}

/// The meta key of named metadata `name`.
pub(crate) fn meta_user_key(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_USER_PREFIX.len() + name.len());
    out.extend_from_slice(META_USER_PREFIX);
    out.extend_from_slice(name.as_bytes());
    out
}

/// The meta key of the gc horizon of span `id`.
pub(crate) fn span_horizon_key(id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(META_SPAN_HORIZON_PREFIX.len() + 8);
    out.extend_from_slice(META_SPAN_HORIZON_PREFIX);
    out.extend_from_slice(&id.to_be_bytes());
    out
}

/// Encodes a meta value.
pub(crate) fn encode_meta(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + payload.len());
    out.push(META_FORMAT_V1);
    out.extend_from_slice(payload);
    out
}

/// Decodes a meta value into its payload.
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    match bytes.split_first() {
        Some((&META_FORMAT_V1, payload)) => Ok(payload),
        Some((&found, _)) => Err(DecodeError::UnknownMetaFormat { found }),
        None => Err(DecodeError::BadMeta {
            why: "empty value".into(),
        }),
    }
}

/// Encodes the gc horizon meta value.
pub(crate) fn encode_horizon(horizon: Timestamp) -> Vec<u8> {
    encode_meta(&horizon.0.to_be_bytes())
}

/// Decodes the gc horizon meta value.
pub(crate) fn decode_horizon(bytes: &[u8]) -> Result<Timestamp, DecodeError> {
    decode_ts_meta(bytes, "gc horizon")
}

/// Decodes a meta-form value whose payload is `be64(ts)`; `what` names it
/// in the error.
fn decode_ts_meta(bytes: &[u8], what: &str) -> Result<Timestamp, DecodeError> {
    let payload = decode_meta(bytes)?;
    let raw: [u8; 8] = payload.try_into().map_err(|_| DecodeError::BadMeta {
        why: format!("{what} has {} bytes, want 8", payload.len()),
    })?;
    Ok(Timestamp(u64::from_be_bytes(raw)))
}

/// Encodes the store format marker of `version`.
pub(crate) fn encode_store_format(version: u8) -> Vec<u8> {
    encode_meta(&[version])
}

/// Tag byte in front of every latest-version index key.
const LATEST_KEY_TAG: u8 = 0x01;

/// Encodes the latest-version index key of `user_key`.
pub(crate) fn latest_key(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + user_key.len());
    out.push(LATEST_KEY_TAG);
    out.extend_from_slice(user_key);
    out
}

/// Encodes a latest-version index value.
pub(crate) fn encode_latest(ts: Timestamp) -> Vec<u8> {
    encode_meta(&ts.0.to_be_bytes())
}

/// Decodes a latest-version index value.
pub(crate) fn decode_latest(bytes: &[u8]) -> Result<Timestamp, DecodeError> {
    decode_ts_meta(bytes, "latest-version entry")
}

/// Decodes the store format marker into the store format version.
pub(crate) fn decode_store_format(bytes: &[u8]) -> Result<u8, DecodeError> {
    match decode_meta(bytes)? {
        [version] => Ok(*version),
        other => Err(DecodeError::BadMeta {
            why: format!("store format marker has {} bytes, want 1", other.len()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Frozen bytes: these pin disk format version 1. Never edit the expected
    // bytes; add a new version instead.

    #[test]
    fn frozen_version_key() {
        let key = encode_version_key(b"a\x00b", Timestamp(0x0102_0304_0506_0708));
        let expected: &[u8] = &[
            b'a', 0x00, 0xFF, b'b', // escaped user key
            0x00, 0x01, // terminator
            0xFE, 0xFD, 0xFC, 0xFB, 0xFA, 0xF9, 0xF8, 0xF7, // u64::MAX - ts
        ];
        assert_eq!(key, expected);
    }

    #[test]
    fn frozen_empty_key_at_zero() {
        let key = encode_version_key(b"", Timestamp::ZERO);
        assert_eq!(
            key,
            [0x00, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]
        );
    }

    #[test]
    fn frozen_put_record() {
        assert_eq!(
            encode_record(Some(b"xyz")),
            [0x01, 0x01, 0x00, b'x', b'y', b'z']
        );
        assert_eq!(encode_record(Some(b"")), [0x01, 0x01, 0x00]);
    }

    #[test]
    fn frozen_tombstone_record() {
        assert_eq!(encode_record(None), [0x01, 0x02, 0x00]);
    }

    #[test]
    fn frozen_meta_values() {
        assert_eq!(
            encode_horizon(Timestamp(258)),
            [0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x02]
        );
        assert_eq!(encode_store_format(STORE_FORMAT_V1), [0x01, 0x01]);
        assert_eq!(encode_store_format(STORE_FORMAT_V2), [0x01, 0x02]);
        assert_eq!(encode_meta(b"hi"), [0x01, b'h', b'i']);
        assert_eq!(meta_user_key("hlc"), b"user/hlc");
        assert_eq!(
            span_horizon_key(258),
            b"sys/gc_horizon/\x00\x00\x00\x00\x00\x00\x01\x02"
        );
    }

    #[test]
    fn frozen_latest_value() {
        assert_eq!(latest_key(b""), [0x01]);
        assert_eq!(latest_key(b"k\x00"), [0x01, b'k', 0x00]);
        let bytes = encode_latest(Timestamp(258));
        assert_eq!(bytes, [0x01, 0, 0, 0, 0, 0, 0, 0x01, 0x02]);
        assert_eq!(decode_latest(&bytes), Ok(Timestamp(258)));
        assert!(matches!(
            decode_latest(&[0x01, 0x02]),
            Err(DecodeError::BadMeta { .. })
        ));
        assert_eq!(
            decode_latest(&[0x07, 0, 0, 0, 0, 0, 0, 0, 1]),
            Err(DecodeError::UnknownMetaFormat { found: 7 })
        );
    }

    #[test]
    fn unknown_data_format_is_refused_by_name() {
        let err = decode_record(&[0x02, 0x01, 0x00, b'v']).unwrap_err();
        assert_eq!(err, DecodeError::UnknownDataFormat { found: 2 });
        assert!(err.to_string().contains("format version 2"), "{err}");
    }

    #[test]
    fn unknown_meta_format_is_refused() {
        assert_eq!(
            decode_meta(&[9, 1]),
            Err(DecodeError::UnknownMetaFormat { found: 9 })
        );
        assert!(decode_horizon(&[9, 0, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    #[test]
    fn malformed_records_are_refused() {
        assert!(decode_record(&[]).is_err());
        assert!(decode_record(&[0x01, 0x01]).is_err());
        assert!(decode_record(&[0x01, 0x01, 0x80]).is_err(), "unknown flags");
        assert!(decode_record(&[0x01, 0x07, 0x00]).is_err(), "unknown kind");
        assert!(
            decode_record(&[0x01, 0x02, 0x00, 1]).is_err(),
            "tombstone payload"
        );
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(decode_version_key(&[0; 7]).is_err(), "too short");
        assert!(decode_version_key(&[b'a', 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let mut unescaped = vec![0x00, 0x05, 0x00, 0x01];
        unescaped.extend_from_slice(&[0; 8]);
        assert!(
            decode_version_key(&unescaped).is_err(),
            "0x00 0x05 inside the key"
        );
    }

    #[test]
    fn encoded_key_len_matches_encoding() {
        for key in [&b""[..], b"\x00", b"\x00\x00\xff", b"abc"] {
            assert_eq!(
                encoded_key_len(key),
                encode_version_key(key, Timestamp(7)).len()
            );
        }
    }

    fn small_key() -> impl Strategy<Value = Vec<u8>> {
        // A small alphabet with 0x00, 0x01 and 0xFF makes prefixes and escapes common.
        proptest::collection::vec(
            prop_oneof![Just(0x00u8), Just(0x01), Just(0xFF), Just(b'a')],
            0..5,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn key_round_trips(key in proptest::collection::vec(any::<u8>(), 0..32), ts in any::<u64>()) {
            let encoded = encode_version_key(&key, Timestamp(ts));
            prop_assert_eq!(decode_version_key(&encoded), Ok((key.clone(), Timestamp(ts))));
            let (prefix, split_ts) = split_version_key(&encoded).unwrap();
            let expected_prefix = key_prefix(&key);
            prop_assert_eq!(prefix, expected_prefix.as_slice());
            prop_assert_eq!(split_ts, Timestamp(ts));
        }

        #[test]
        fn record_round_trips(value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32))) {
            let encoded = encode_record(value.as_deref());
            prop_assert_eq!(decode_record(&encoded), Ok(value.as_deref()));
        }

        #[test]
        fn encoded_order_is_key_asc_ts_desc(
            a in small_key(), ta in 0u64..4, b in small_key(), tb in 0u64..4,
        ) {
            let model = a.cmp(&b).then(tb.cmp(&ta));
            let enc_a = encode_version_key(&a, Timestamp(ta));
            let enc_b = encode_version_key(&b, Timestamp(tb));
            prop_assert_eq!(enc_a.cmp(&enc_b), model);
            // Every version of a key lies between its prefix and its last key.
            prop_assert!(key_prefix(&a) <= enc_a && enc_a <= key_prefix_last(&a));
        }

        #[test]
        fn extreme_timestamps_keep_order(a in small_key(), b in small_key()) {
            for (ta, tb) in [(0, u64::MAX), (u64::MAX, 0), (u64::MAX, u64::MAX)] {
                let model = a.cmp(&b).then(tb.cmp(&ta));
                let got = encode_version_key(&a, Timestamp(ta)).cmp(&encode_version_key(&b, Timestamp(tb)));
                prop_assert_eq!(got, model);
            }
        }
    }
}
