//! The sequential model the linearizability checks judge histories
//! against: one register holding an optional value, with read, write and
//! compare-and-swap (stateright's `SequentialSpec`).

use stateright::semantics::SequentialSpec;

/// A register holding an optional value, with read, write and CAS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CasRegister(Option<u64>);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegOp {
    Read,
    Write(u64),
    /// Set to `new` if the value is `expected`.
    Cas {
        expected: u64,
        new: u64,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegRet {
    Read(Option<u64>),
    WriteOk,
    Cas(bool),
}

impl SequentialSpec for CasRegister {
    type Op = RegOp;
    type Ret = RegRet;

    fn invoke(&mut self, op: &RegOp) -> RegRet {
        match op {
            RegOp::Read => RegRet::Read(self.0),
            RegOp::Write(v) => {
                self.0 = Some(*v);
                RegRet::WriteOk
            }
            RegOp::Cas { expected, new } => {
                if self.0 == Some(*expected) {
                    self.0 = Some(*new);
                    RegRet::Cas(true)
                } else {
                    RegRet::Cas(false)
                }
            }
        }
    }
}
