//! The linearizability check of the register histories the region and
//! WAN tests record: the sequential model (one register holding an
//! optional value, with read, write and compare-and-swap) and a checker
//! that searches for a legal sequential order consistent with real time.
//!
//! The checker is the Wing & Gong search with Lowe's memoisation ("Testing
//! for linearizability", 2017; the algorithm Porcupine and Knossos' WGL
//! checker implement): the history is a list of call and return entries in
//! real-time order; the search linearises a call whose entry comes before
//! the first remaining return, lifts it and its return out of the list,
//! and backtracks when it reaches a return whose call it could not place.
//! A (set of linearised operations, register value) pair already explored
//! is never explored again, so the search is bounded by the distinct
//! states, not by the orders: stateright's `LinearizabilityTester`, used
//! before, tries orders without that cache, and a history with a few
//! operations of unknown outcome spread over a long run could keep it busy
//! for longer than a test may take (a WAN run's check did not finish in 20
//! minutes). Every search here is bounded by a step budget as well: a
//! history it cannot decide within the budget is reported as undecided,
//! never as linearizable.
//!
//! An operation whose outcome is unknown never returns: its return entry
//! is placed after the whole history, so the search may linearise it
//! anywhere after its call, including after every other operation, which
//! is the same as never having taken effect.

use std::collections::{BTreeMap, HashSet};

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegOp {
    Read,
    Write(u64),
    /// Set to `new` if the value is `expected`.
    Cas {
        expected: u64,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RegRet {
    Read(Option<u64>),
    WriteOk,
    Cas(bool),
}

/// The sequential register: applies `op` to `value`, returning the new
/// value and what the operation returns.
fn apply(value: Option<u64>, op: &RegOp) -> (Option<u64>, RegRet) {
    match op {
        RegOp::Read => (value, RegRet::Read(value)),
        RegOp::Write(v) => (Some(*v), RegRet::WriteOk),
        RegOp::Cas { expected, new } if value == Some(*expected) => (Some(*new), RegRet::Cas(true)),
        RegOp::Cas { .. } => (value, RegRet::Cas(false)),
    }
}

/// Steps a search may take before it gives up undecided (a register
/// history of a few hundred operations takes thousands).
pub const CHECK_STEPS: u64 = 50_000_000;

/// What the checker concluded about a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The step budget ran out first.
    Undecided {
        steps: u64,
    },
}

struct Operation {
    op: RegOp,
    /// `None`: outcome unknown (never returned).
    ret: Option<RegRet>,
    call: u64,
    returned: Option<u64>,
}

/// One key's history, recorded as the tests' clients run: each thread
/// (a client, or a client's continuation after an unknown outcome) has at
/// most one operation in flight.
#[derive(Default)]
pub struct History {
    ops: Vec<Operation>,
    in_flight: BTreeMap<u64, usize>,
    clock: u64,
}

impl History {
    /// `thread` invokes `op`.
    pub fn on_invoke(&mut self, thread: u64, op: RegOp) -> Result<&mut Self, String> {
        if self.in_flight.contains_key(&thread) {
            return Err(format!(
                "thread {thread} already has an operation in flight"
            ));
        }
        self.clock += 1;
        self.in_flight.insert(thread, self.ops.len());
        self.ops.push(Operation {
            op,
            ret: None,
            call: self.clock,
            returned: None,
        });
        Ok(self)
    }

    /// `thread`'s operation in flight returns `ret`.
    pub fn on_return(&mut self, thread: u64, ret: RegRet) -> Result<&mut Self, String> {
        let Some(i) = self.in_flight.remove(&thread) else {
            return Err(format!("thread {thread} has no operation in flight"));
        };
        self.clock += 1;
        self.ops[i].ret = Some(ret);
        self.ops[i].returned = Some(self.clock);
        Ok(self)
    }

    /// Operations recorded (completed and in flight).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Searches for a linearisation of the history from an absent value,
    /// taking at most `max_steps` steps.
    pub fn check(&self, max_steps: u64) -> Verdict {
        let n = self.ops.len();
        // Entries in real-time order; node 0 is the list's head. An
        // unknown outcome returns after everything else.
        let end = self.clock + 1;
        let mut entries: Vec<(u64, usize, bool)> = Vec::with_capacity(2 * n);
        for (i, o) in self.ops.iter().enumerate() {
            entries.push((o.call, i, true));
            entries.push((o.returned.unwrap_or(end + i as u64), i, false));
        }
        entries.sort_unstable_by_key(|e| e.0);
        let len = entries.len() + 1;
        let mut next: Vec<usize> = (1..=len).collect();
        let mut prev: Vec<usize> = (0..len).map(|i| i.saturating_sub(1)).collect();
        next[len - 1] = 0;
        // For a call node: its operation and its return node.
        let mut op_of = vec![usize::MAX; len];
        let mut return_of = vec![0; len];
        let mut node_of_return = vec![0; n];
        for (k, &(_, i, is_call)) in entries.iter().enumerate() {
            if !is_call {
                node_of_return[i] = k + 1;
            }
        }
        for (k, &(_, i, is_call)) in entries.iter().enumerate() {
            if is_call {
                op_of[k + 1] = i;
                return_of[k + 1] = node_of_return[i];
            }
        }
        let lift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
            let (p, x) = (prev[node], next[node]);
            next[p] = x;
            if x != 0 {
                prev[x] = p;
            }
        };
        let unlift = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
            let (p, x) = (prev[node], next[node]);
            next[p] = node;
            if x != 0 {
                prev[x] = node;
            }
        };
        let mut linearized = vec![0u64; n.div_ceil(64)];
        let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
        let mut calls: Vec<(usize, Option<u64>)> = Vec::new();
        let mut value: Option<u64> = None;
        let mut entry = next[0];
        let mut steps = 0u64;
        while next[0] != 0 {
            steps += 1;
            if steps > max_steps {
                return Verdict::Undecided { steps };
            }
            if entry != 0 && op_of[entry] != usize::MAX {
                let o = &self.ops[op_of[entry]];
                let (after, got) = apply(value, &o.op);
                if o.ret.as_ref().is_none_or(|r| *r == got) {
                    let i = op_of[entry];
                    linearized[i / 64] |= 1 << (i % 64);
                    if seen.insert((linearized.clone(), after)) {
                        calls.push((entry, value));
                        value = after;
                        lift(&mut next, &mut prev, entry);
                        lift(&mut next, &mut prev, return_of[entry]);
                        entry = next[0];
                        continue;
                    }
                    linearized[i / 64] &= !(1 << (i % 64));
                }
                entry = next[entry];
            } else {
                // A return whose call is not linearised yet (or the end):
                // undo the last choice and try the next call after it.
                let Some((call, before)) = calls.pop() else {
                    return Verdict::NotLinearizable;
                };
                let i = op_of[call];
                linearized[i / 64] &= !(1 << (i % 64));
                value = before;
                unlift(&mut next, &mut prev, return_of[call]);
                unlift(&mut next, &mut prev, call);
                entry = next[call];
            }
        }
        Verdict::Linearizable
    }
}

/// Checks every key's history; panics naming the first key whose history
/// is not linearizable, or that the checker could not decide within
/// [`CHECK_STEPS`]. Returns the number of keys checked.
pub fn assert_linearizable(
    histories: &BTreeMap<usize, History>,
    name: impl Fn(usize) -> String,
) -> usize {
    for (k, h) in histories {
        let unknown = h.ops.iter().filter(|o| o.ret.is_none()).count();
        match h.check(CHECK_STEPS) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable => panic!(
                "the history of {} is not linearizable ({} operations, {unknown} of unknown outcome)",
                name(*k),
                h.len()
            ),
            Verdict::Undecided { steps } => panic!(
                "the checker could not decide the history of {} in {steps} steps ({} operations, \
                 {unknown} of unknown outcome)",
                name(*k),
                h.len()
            ),
        }
    }
    histories.len()
}
