//! Parser for `meridian kv txn`'s etcdctl-style text.
//!
//! ```text
//! value("config/mode") = "blue"      <- compares, one per line
//! version("config/mode") > 0
//! exists("lock") = false
//!                                    <- blank line
//! put config/mode green              <- success ops
//! del lock
//!                                    <- blank line
//! put audit/failed "mode was not blue"   <- failure ops
//! ```
//! Values with spaces are double-quoted; `\"` and `\\` escape inside quotes.

use anyhow::{anyhow, bail, Context};

use crate::types::{Compare, CompareOp, CompareTarget, Op, Timestamp, Txn};

/// Parses the whole text into a transaction; errors name the line.
pub(crate) fn parse(text: &str) -> anyhow::Result<Txn> {
    // Blank lines separate sections; a run of them counts once, and a
    // leading blank line means "no compares".
    let mut sections: Vec<Vec<(usize, &str)>> = vec![Vec::new(); 3];
    let mut idx = 0;
    let mut prev_blank = false;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            if !prev_blank {
                idx += 1;
            }
            prev_blank = true;
            continue;
        }
        prev_blank = false;
        let section = sections.get_mut(idx).ok_or_else(|| {
            anyhow!(
                "line {}: a transaction has at most three sections (compares, success, failure)",
                i + 1
            )
        })?;
        section.push((i + 1, line));
    }
    let compares = sections[0]
        .iter()
        .map(|(n, l)| parse_compare(l).with_context(|| format!("line {n}: `{l}`")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ops = |idx: usize| -> anyhow::Result<Vec<Op>> {
        sections[idx]
            .iter()
            .map(|(n, l)| parse_op(l).with_context(|| format!("line {n}: `{l}`")))
            .collect()
    };
    Ok(Txn {
        compares,
        success: ops(1)?,
        failure: ops(2)?,
    })
}

/// Splits a line into words, honouring double quotes.
fn words(line: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => {
                        word.push(chars.next().ok_or_else(|| anyhow!("dangling escape"))?)
                    }
                    Some(ch) => word.push(ch),
                    None => bail!("unterminated quote"),
                }
            }
        } else {
            while let Some(&ch) = chars.peek() {
                if ch.is_whitespace() {
                    break;
                }
                word.push(ch);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

fn parse_op(line: &str) -> anyhow::Result<Op> {
    let w = words(line)?;
    match w.as_slice() {
        [cmd, key, value] if cmd == "put" => Ok(Op::Put {
            key: key.clone().into_bytes(),
            value: value.clone().into_bytes(),
        }),
        [cmd, key] if cmd == "del" || cmd == "delete" => Ok(Op::Delete {
            key: key.clone().into_bytes(),
        }),
        _ => bail!("expected `put KEY VALUE` or `del KEY`"),
    }
}

fn parse_compare(line: &str) -> anyhow::Result<Compare> {
    let open = line
        .find("(\"")
        .ok_or_else(|| anyhow!("expected TARGET(\"KEY\") OP OPERAND"))?;
    let target = &line[..open];
    let rest = &line[open + 2..];
    let close = rest
        .find("\")")
        .ok_or_else(|| anyhow!("missing `\")` after the key"))?;
    let key = rest.as_bytes()[..close].to_vec();
    let w = words(&rest[close + 2..])?;
    let [op, operand] = w.as_slice() else {
        bail!("expected an operator and an operand after the key");
    };
    let op = match op.as_str() {
        "=" | "==" => CompareOp::Equal,
        "!=" => CompareOp::NotEqual,
        "<" => CompareOp::Less,
        ">" => CompareOp::Greater,
        other => bail!("unknown operator `{other}` (use = != < >)"),
    };
    let target = match target.trim() {
        "value" => CompareTarget::Value(operand.clone().into_bytes()),
        "version" => CompareTarget::Version(Timestamp(
            operand
                .parse()
                .map_err(|_| anyhow!("version operand must be an integer"))?,
        )),
        "exists" => CompareTarget::Exists(match operand.as_str() {
            "true" => true,
            "false" => false,
            _ => bail!("exists operand must be true or false"),
        }),
        other => bail!("unknown compare target `{other}` (use value, version or exists)"),
    };
    Ok(Compare { key, op, target })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_three_sections() {
        let t = parse(
            "value(\"a\") = \"x y\"\nexists(\"b\") = false\n\nput a \"z w\"\ndel b\n\nput c 1\n",
        )
        .unwrap();
        assert_eq!(t.compares.len(), 2);
        assert_eq!(t.compares[0].target, CompareTarget::Value(b"x y".to_vec()));
        assert_eq!(t.success.len(), 2);
        assert_eq!(
            t.success[0],
            Op::Put {
                key: b"a".to_vec(),
                value: b"z w".to_vec()
            }
        );
        assert_eq!(t.failure.len(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("frob(\"a\") = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 1"), "{err:#}");
        let err = parse("\nput a\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(parse("version(\"a\") > x").is_err());
    }

    #[test]
    fn only_ops_without_compares() {
        let t = parse("\nput a 1\n").unwrap();
        assert!(t.compares.is_empty());
        assert_eq!(t.success.len(), 1);
    }
}
