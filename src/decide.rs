//! The deterministic write logic, shared by the single-node writer
//! (`engine`) and the Raft state machines (`raft`), so it lives below both: given a write and a way to read the current state of
//! a key, decide which operations to apply. Pure: no clock, no IO of its own,
//! so every replica that applies the same command to the same state makes
//! the same decision.

use std::collections::HashMap;

use crate::types::{CompareOp, CompareTarget, Op, Timestamp, Txn};

/// A write as the engine or a state machine receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Set a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// A compare / then / else transaction.
    Txn(Txn),
}

/// A key's current state: its value and version, or `None` when absent.
pub type KeyState = Option<(Vec<u8>, Timestamp)>;

/// Keys written earlier in the same batch, which later writes of the batch
/// must see (their state is not in storage yet).
pub type Overlay = HashMap<Vec<u8>, KeyState>;

/// Decides what `kind` does: `(succeeded, ops)`. For a delete, `succeeded`
/// says whether the key existed; deleting an absent key writes nothing, as
/// etcd (history records only real changes). For a transaction it says
/// whether every guard held. `current` reads a key's state.
pub fn decide<E>(
    kind: WriteKind,
    mut current: impl FnMut(&[u8]) -> Result<KeyState, E>,
) -> Result<(bool, Vec<Op>), E> {
    match kind {
        WriteKind::Put { key, value } => Ok((true, vec![Op::Put { key, value }])),
        WriteKind::Delete { key } => {
            let existed = current(&key)?.is_some();
            let ops = if existed {
                vec![Op::Delete { key }]
            } else {
                vec![]
            };
            Ok((existed, ops))
        }
        WriteKind::Txn(txn) => {
            for c in &txn.compares {
                let state = current(&c.key)?;
                if !compare_holds(c.op, &c.target, state.as_ref()) {
                    return Ok((false, txn.failure));
                }
            }
            Ok((true, txn.success))
        }
    }
}

/// Records `ops`, stamped `ts`, in the overlay so later writes of the batch see them.
pub fn record_in_overlay(overlay: &mut Overlay, ops: &[Op], ts: Timestamp) {
    for op in ops {
        let state = match op {
            Op::Put { value, .. } => Some((value.clone(), ts)),
            Op::Delete { .. } => None,
        };
        overlay.insert(op.key().to_vec(), state);
    }
}

/// Evaluates one guard against a key's current state (`None` = absent).
pub fn compare_holds(
    op: CompareOp,
    target: &CompareTarget,
    state: Option<&(Vec<u8>, Timestamp)>,
) -> bool {
    use std::cmp::Ordering as O;
    let ord = match target {
        // A missing key never satisfies a value compare (as etcd).
        CompareTarget::Value(v) => match state {
            Some((cur, _)) => cur.as_slice().cmp(v.as_slice()),
            None => return false,
        },
        CompareTarget::Version(v) => state.map_or(Timestamp::ZERO, |(_, ver)| *ver).cmp(v),
        CompareTarget::Exists(want) => state.is_some().cmp(want),
    };
    match op {
        CompareOp::Equal => ord == O::Equal,
        CompareOp::NotEqual => ord != O::Equal,
        CompareOp::Less => ord == O::Less,
        CompareOp::Greater => ord == O::Greater,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Compare, CompareOp, CompareTarget};

    fn state_of(map: &Overlay) -> impl FnMut(&[u8]) -> Result<KeyState, ()> + '_ {
        move |k| Ok(map.get(k).cloned().flatten())
    }

    #[test]
    fn delete_of_absent_key_writes_nothing() {
        let empty = Overlay::new();
        let (existed, ops) =
            decide(WriteKind::Delete { key: b"k".to_vec() }, state_of(&empty)).unwrap();
        assert!(!existed);
        assert!(ops.is_empty());
    }

    #[test]
    fn txn_takes_the_branch_its_guards_choose_and_sees_the_overlay() {
        let mut overlay = Overlay::new();
        let txn = Txn {
            compares: vec![Compare {
                key: b"k".to_vec(),
                op: CompareOp::Equal,
                target: CompareTarget::Exists(false),
            }],
            success: vec![Op::Put {
                key: b"k".to_vec(),
                value: b"1".to_vec(),
            }],
            failure: vec![Op::Delete {
                key: b"other".to_vec(),
            }],
        };
        let (ok, ops) = decide(WriteKind::Txn(txn.clone()), state_of(&overlay)).unwrap();
        assert!(ok);
        record_in_overlay(&mut overlay, &ops, Timestamp(5));
        // The same create-if-absent now fails: the earlier write is visible.
        let (ok, ops) = decide(WriteKind::Txn(txn), state_of(&overlay)).unwrap();
        assert!(!ok);
        assert_eq!(
            ops,
            vec![Op::Delete {
                key: b"other".to_vec()
            }]
        );
    }
}
