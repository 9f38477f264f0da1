//! The text form of a transaction, as `etcdctl txn` (etcd 3.4) reads it:
//! three blocks of lines, each ended by an empty line (the last one may
//! also end with the input).
//!
//! ```text
//! value("name") = "Lizhao Liu"      compares, one per line
//! mod("counter") > "4"
//!
//! put name "Liu Lizhao"             success requests: get, put, del
//! get counter
//!
//! get name                          failure requests
//! ```
//!
//! A compare is `TARGET("key") OP "operand"`: TARGET is `value` (`val`),
//! `version` (`ver`), `create` (`c`), `mod` (`m`) or `lease`; OP is `=`,
//! `!=`, `<` or `>`; key and operand are quoted (see [`crate::quoting`]).
//! The operand of `version`, `create` and `mod` is a decimal number, that
//! of `lease` a lease ID in hexadecimal, as etcdctl prints them.
//!
//! Requests take etcdctl's arguments, words separated by whitespace and
//! optionally quoted; a quoted word is never a flag:
//!
//! ```text
//! put KEY VALUE [--prev-kv] [--lease=HEX] [--ignore-lease]
//! put KEY --ignore-value [--prev-kv] [--lease=HEX]
//! get KEY [RANGE_END] [--prefix | --from-key] [--limit=N] [--rev=N]
//!     [--keys-only] [--count-only] [--sort-order=ASCEND|DESCEND]
//!     [--sort-by=KEY|VERSION|CREATE|MODIFY|VALUE]
//! del KEY [RANGE_END] [--prefix | --from-key] [--prev-kv]
//! ```
//!
//! Flags that take a value accept `--flag=V` and `--flag V`; `--` ends
//! the flags.

use std::io::BufRead;

use konsen_rpc::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use konsen_rpc::etcd::etcdserverpb::range_request::{SortOrder, SortTarget};
use konsen_rpc::etcd::etcdserverpb::request_op::Request;
use konsen_rpc::etcd::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};

use crate::commands::prefix_end;
use crate::quoting::{Word, unquote, words};

/// What is printed before each block when a person is typing.
pub const PROMPTS: [&str; 3] = [
    "compares:",
    "success requests (get, put, del):",
    "failure requests (get, put, del):",
];

/// A line that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    /// Its number in the input, from 1 (empty lines count).
    pub line: usize,
    /// The line, trimmed.
    pub text: String,
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.message, self.text)
    }
}

impl std::error::Error for SyntaxError {}

/// Why a transaction could not be read.
#[derive(Debug)]
pub enum InputError {
    Io(std::io::Error),
    Syntax(SyntaxError),
}

/// Numbered lines of the input.
struct Lines<'a> {
    input: &'a mut dyn BufRead,
    number: usize,
    ended: bool,
}

impl Lines<'_> {
    /// The next line, trimmed, or `None` at the end of the input.
    fn next(&mut self) -> Result<Option<(usize, String)>, InputError> {
        let mut raw = Vec::new();
        if self
            .input
            .read_until(b'\n', &mut raw)
            .map_err(InputError::Io)?
            == 0
        {
            self.ended = true;
            return Ok(None);
        }
        self.number += 1;
        let line = String::from_utf8(raw).map_err(|e| {
            InputError::Syntax(SyntaxError {
                line: self.number,
                text: String::from_utf8_lossy(e.as_bytes()).trim().to_string(),
                message: "not UTF-8 (write other bytes as \\xHH escapes)".to_string(),
            })
        })?;
        Ok(Some((self.number, line.trim().to_string())))
    }
}

/// Reads the three blocks from `input`, calling `prompt` before each block
/// while there is input left, and parsing each line as soon as it is read.
pub fn read_txn(
    input: &mut dyn BufRead,
    prompt: &mut dyn FnMut(&str),
) -> Result<TxnRequest, InputError> {
    let mut lines = Lines {
        input,
        number: 0,
        ended: false,
    };
    let mut txn = TxnRequest::default();
    prompt(PROMPTS[0]);
    txn.compare = read_block(&mut lines, parse_compare)?;
    if !lines.ended {
        prompt(PROMPTS[1]);
        txn.success = read_block(&mut lines, parse_request)?;
    }
    if !lines.ended {
        prompt(PROMPTS[2]);
        txn.failure = read_block(&mut lines, parse_request)?;
    }
    Ok(txn)
}

/// [`read_txn`] on a string, without prompts.
#[cfg(test)]
pub fn parse_txn(text: &str) -> Result<TxnRequest, SyntaxError> {
    match read_txn(&mut text.as_bytes(), &mut |_| {}) {
        Ok(txn) => Ok(txn),
        Err(InputError::Syntax(e)) => Err(e),
        Err(InputError::Io(e)) => panic!("reading a string: {e}"),
    }
}

/// Lines parsed by `parse` up to an empty line or the end of the input.
fn read_block<T>(
    lines: &mut Lines<'_>,
    parse: fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, InputError> {
    let mut out = Vec::new();
    while let Some((number, line)) = lines.next()? {
        if line.is_empty() {
            break;
        }
        let item = parse(&line).map_err(|message| {
            InputError::Syntax(SyntaxError {
                line: number,
                text: line.clone(),
                message,
            })
        })?;
        out.push(item);
    }
    Ok(out)
}

/// One compare line: `TARGET("key") OP "operand"`.
pub fn parse_compare(line: &str) -> Result<Compare, String> {
    let (target, rest) = line
        .split_once('(')
        .ok_or("malformed comparison: expected TARGET(\"key\") OP \"operand\"")?;
    let target = compare_target(target.trim())?;
    let (key, rest) = unquote(rest.trim_start()).map_err(|e| format!("bad key: {e}"))?;
    let rest = rest
        .trim_start()
        .strip_prefix(')')
        .ok_or("expected ) after the key")?;
    let (result, rest) = operator(rest.trim_start())?;
    let (operand, rest) = unquote(rest.trim_start()).map_err(|e| format!("bad operand: {e}"))?;
    if !rest.trim().is_empty() {
        return Err(format!(
            "unexpected text after the operand: {}",
            rest.trim()
        ));
    }
    Ok(Compare {
        result: result as i32,
        target: target as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(operand_of(target, operand)?),
    })
}

fn compare_target(name: &str) -> Result<CompareTarget, String> {
    Ok(match name {
        "value" | "val" => CompareTarget::Value,
        "version" | "ver" => CompareTarget::Version,
        "create" | "c" => CompareTarget::Create,
        "mod" | "m" => CompareTarget::Mod,
        "lease" => CompareTarget::Lease,
        other => {
            return Err(format!(
                "unknown compare target {other:?} (one of value, version, create, mod, lease)"
            ));
        }
    })
}

/// The operator at the start of `s`, and the text after it.
fn operator(s: &str) -> Result<(CompareResult, &str), String> {
    let end = s.find(|c| !"=!<>".contains(c)).unwrap_or(s.len());
    let result = match &s[..end] {
        "=" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        "" => return Err("expected an operator (=, !=, <, >) after the key".to_string()),
        other => return Err(format!("unknown operator {other:?} (one of =, !=, <, >)")),
    };
    Ok((result, &s[end..]))
}

/// The operand as the target wants it.
fn operand_of(target: CompareTarget, operand: Vec<u8>) -> Result<TargetUnion, String> {
    if target == CompareTarget::Value {
        return Ok(TargetUnion::Value(operand));
    }
    let text = String::from_utf8_lossy(&operand);
    let (radix, what) = match target {
        CompareTarget::Lease => (16, "a lease ID in hexadecimal"),
        _ => (10, "a decimal number"),
    };
    let n = i64::from_str_radix(&text, radix).map_err(|_| {
        format!(
            "the operand of {} must be {what}, not {text:?}",
            name(target)
        )
    })?;
    Ok(match target {
        CompareTarget::Version => TargetUnion::Version(n),
        CompareTarget::Create => TargetUnion::CreateRevision(n),
        CompareTarget::Mod => TargetUnion::ModRevision(n),
        _ => TargetUnion::Lease(n),
    })
}

fn name(target: CompareTarget) -> &'static str {
    match target {
        CompareTarget::Value => "value",
        CompareTarget::Version => "version",
        CompareTarget::Create => "create",
        CompareTarget::Mod => "mod",
        CompareTarget::Lease => "lease",
    }
}

/// One request line: `put`, `get` or `del` with its arguments.
pub fn parse_request(line: &str) -> Result<RequestOp, String> {
    let words = words(line)?;
    let Some((verb, rest)) = words.split_first() else {
        return Err("empty request".to_string());
    };
    let request = match verb.as_str() {
        Some("put") => Request::RequestPut(put(rest)?),
        Some("get") => Request::RequestRange(get(rest)?),
        Some("del") => Request::RequestDeleteRange(del(rest)?),
        _ => {
            return Err(format!(
                "unknown request {:?} (one of get, put, del)",
                String::from_utf8_lossy(&verb.bytes)
            ));
        }
    };
    Ok(RequestOp {
        request: Some(request),
    })
}

/// A flag a request takes, and whether it takes a value.
type FlagSpec = (&'static str, bool);

const PUT_FLAGS: &[FlagSpec] = &[
    ("prev-kv", false),
    ("lease", true),
    ("ignore-value", false),
    ("ignore-lease", false),
];
const GET_FLAGS: &[FlagSpec] = &[
    ("prefix", false),
    ("from-key", false),
    ("limit", true),
    ("rev", true),
    ("keys-only", false),
    ("count-only", false),
    ("sort-order", true),
    ("sort-by", true),
];
const DEL_FLAGS: &[FlagSpec] = &[("prefix", false), ("from-key", false), ("prev-kv", false)];

/// A request's words, split into positional arguments and flags.
#[derive(Debug, Default)]
struct Args {
    positional: Vec<Vec<u8>>,
    flags: Vec<(&'static str, Option<String>)>,
}

impl Args {
    fn parse(verb: &str, words: &[Word], spec: &[FlagSpec]) -> Result<Args, String> {
        let mut args = Args::default();
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let flag = word
                .as_str()
                .filter(|_| !word.quoted)
                .and_then(|s| s.strip_prefix("--"));
            let Some(flag) = flag else {
                args.positional.push(word.bytes.clone());
                continue;
            };
            if flag.is_empty() {
                args.positional
                    .extend(words.by_ref().map(|w| w.bytes.clone()));
                break;
            }
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag, None),
            };
            let &(name, takes_value) = spec
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| unknown_flag(verb, name, spec))?;
            let value = match (takes_value, inline) {
                (false, Some(_)) => return Err(format!("--{name} takes no value")),
                (false, None) => None,
                (true, Some(v)) => Some(v),
                (true, None) => {
                    let next = words
                        .next()
                        .ok_or_else(|| format!("--{name} needs a value"))?;
                    Some(String::from_utf8_lossy(&next.bytes).into_owned())
                }
            };
            args.flags.push((name, value));
        }
        Ok(args)
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(n, _)| *n == name)
    }

    /// The value of the last `--name`, if given.
    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    fn number(&self, name: &str, radix: u32) -> Result<i64, String> {
        self.value(name).map_or(Ok(0), |v| {
            i64::from_str_radix(v, radix).map_err(|_| {
                let what = if radix == 16 { "a hexadecimal" } else { "a" };
                format!("--{name} needs {what} number, not {v:?}")
            })
        })
    }
}

fn unknown_flag(verb: &str, name: &str, spec: &[FlagSpec]) -> String {
    let known: Vec<String> = spec.iter().map(|(n, _)| format!("--{n}")).collect();
    format!(
        "unknown flag --{name} for {verb} (it takes {})",
        known.join(", ")
    )
}

fn put(words: &[Word]) -> Result<PutRequest, String> {
    let args = Args::parse("put", words, PUT_FLAGS)?;
    let ignore_value = args.has("ignore-value");
    let wanted = if ignore_value { 1 } else { 2 };
    if args.positional.len() != wanted {
        return Err(if ignore_value {
            "put --ignore-value takes KEY alone".to_string()
        } else {
            "put takes KEY VALUE".to_string()
        });
    }
    let mut positional = args.positional.iter();
    let key = positional.next().cloned().unwrap_or_default();
    let value = positional.next().cloned().unwrap_or_default();
    Ok(PutRequest {
        key,
        value: value.into(),
        lease: args.number("lease", 16)?,
        prev_kv: args.has("prev-kv"),
        ignore_value,
        ignore_lease: args.has("ignore-lease"),
    })
}

fn get(words: &[Word]) -> Result<RangeRequest, String> {
    let args = Args::parse("get", words, GET_FLAGS)?;
    let (key, range_end) = key_range("get", &args)?;
    let limit = args.number("limit", 10)?;
    if limit < 0 {
        return Err("--limit cannot be negative".to_string());
    }
    let (sort_order, sort_target) = sorting(&args)?;
    Ok(RangeRequest {
        key,
        range_end,
        limit,
        revision: args.number("rev", 10)?,
        sort_order: sort_order as i32,
        sort_target: sort_target as i32,
        keys_only: args.has("keys-only"),
        count_only: args.has("count-only"),
        ..Default::default()
    })
}

/// `--sort-order` and `--sort-by`; sorting by a field without an order
/// sorts ascending.
fn sorting(args: &Args) -> Result<(SortOrder, SortTarget), String> {
    let target = match args
        .value("sort-by")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("KEY") => SortTarget::Key,
        Some("VERSION") => SortTarget::Version,
        Some("CREATE") => SortTarget::Create,
        Some("MODIFY") => SortTarget::Mod,
        Some("VALUE") => SortTarget::Value,
        Some(other) => {
            return Err(format!(
                "bad --sort-by {other:?} (one of KEY, VERSION, CREATE, MODIFY, VALUE)"
            ));
        }
    };
    let order = match args
        .value("sort-order")
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None if args.value("sort-by").is_some() => SortOrder::Ascend,
        None => SortOrder::None,
        Some("ASCEND") => SortOrder::Ascend,
        Some("DESCEND") => SortOrder::Descend,
        Some(other) => {
            return Err(format!("bad --sort-order {other:?} (ASCEND or DESCEND)"));
        }
    };
    Ok((order, target))
}

fn del(words: &[Word]) -> Result<DeleteRangeRequest, String> {
    let args = Args::parse("del", words, DEL_FLAGS)?;
    let (key, range_end) = key_range("del", &args)?;
    Ok(DeleteRangeRequest {
        key,
        range_end,
        prev_kv: args.has("prev-kv"),
    })
}

/// KEY and RANGE_END of a get or del, with `--prefix` or `--from-key`
/// (etcd's rules: with either, an empty key means every key).
fn key_range(verb: &str, args: &Args) -> Result<(Vec<u8>, Vec<u8>), String> {
    let (prefix, from_key) = (args.has("prefix"), args.has("from-key"));
    let key = match args.positional.as_slice() {
        [] => return Err(format!("{verb} takes KEY [RANGE_END]")),
        [key] => key.clone(),
        [key, end] if !prefix && !from_key => return Ok((key.clone(), end.clone())),
        [_, _] => {
            return Err(format!(
                "{verb} takes no RANGE_END with --prefix or --from-key"
            ));
        }
        _ => return Err(format!("{verb} takes KEY [RANGE_END]: too many arguments")),
    };
    Ok(match (prefix, from_key) {
        (true, true) => return Err("--prefix and --from-key exclude each other".to_string()),
        (true, false) if key.is_empty() => (vec![0], vec![0]),
        (true, false) => {
            let end = prefix_end(&key);
            (key, end)
        }
        (false, true) if key.is_empty() => (vec![0], vec![0]),
        (false, true) => (key, vec![0]),
        (false, false) => (key, Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compare(result: CompareResult, target: CompareTarget, key: &str, u: TargetUnion) -> Compare {
        Compare {
            result: result as i32,
            target: target as i32,
            key: key.as_bytes().to_vec(),
            range_end: Vec::new(),
            target_union: Some(u),
        }
    }

    fn request(line: &str) -> Request {
        parse_request(line).unwrap().request.unwrap()
    }

    fn range(line: &str) -> RangeRequest {
        match request(line) {
            Request::RequestRange(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn delete(line: &str) -> DeleteRangeRequest {
        match request(line) {
            Request::RequestDeleteRange(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn put_of(line: &str) -> PutRequest {
        match request(line) {
            Request::RequestPut(r) => r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn every_compare_target_parses() {
        use CompareResult::Equal;
        let cases = [
            (
                r#"value("k") = "v""#,
                compare(
                    Equal,
                    CompareTarget::Value,
                    "k",
                    TargetUnion::Value(b"v".to_vec()),
                ),
            ),
            (
                r#"val("k") = "v""#,
                compare(
                    Equal,
                    CompareTarget::Value,
                    "k",
                    TargetUnion::Value(b"v".to_vec()),
                ),
            ),
            (
                r#"version("k") = "3""#,
                compare(Equal, CompareTarget::Version, "k", TargetUnion::Version(3)),
            ),
            (
                r#"ver("k") = "-1""#,
                compare(Equal, CompareTarget::Version, "k", TargetUnion::Version(-1)),
            ),
            (
                r#"create("k") = "0""#,
                compare(
                    Equal,
                    CompareTarget::Create,
                    "k",
                    TargetUnion::CreateRevision(0),
                ),
            ),
            (
                r#"c("k") = "12""#,
                compare(
                    Equal,
                    CompareTarget::Create,
                    "k",
                    TargetUnion::CreateRevision(12),
                ),
            ),
            (
                r#"mod("k") = "7""#,
                compare(Equal, CompareTarget::Mod, "k", TargetUnion::ModRevision(7)),
            ),
            (
                r#"m("k") = "7""#,
                compare(Equal, CompareTarget::Mod, "k", TargetUnion::ModRevision(7)),
            ),
            (
                r#"lease("k") = "0""#,
                compare(Equal, CompareTarget::Lease, "k", TargetUnion::Lease(0)),
            ),
            // Lease IDs are hexadecimal, as etcdctl prints them.
            (
                r#"lease("k") = "694d77aa9e38260f""#,
                compare(
                    Equal,
                    CompareTarget::Lease,
                    "k",
                    TargetUnion::Lease(0x694d_77aa_9e38_260f),
                ),
            ),
        ];
        for (line, wanted) in cases {
            assert_eq!(parse_compare(line).unwrap(), wanted, "{line}");
        }
    }

    #[test]
    fn every_operator_parses() {
        let cases = [
            ("=", CompareResult::Equal),
            ("!=", CompareResult::NotEqual),
            ("<", CompareResult::Less),
            (">", CompareResult::Greater),
        ];
        for (op, wanted) in cases {
            for line in [
                format!(r#"mod("k") {op} "5""#),
                format!(r#"mod("k"){op}"5""#),
                format!(r#"  mod ( "k" )  {op}  "5"  "#),
            ] {
                let c = parse_compare(&line).unwrap();
                assert_eq!(c.result, wanted as i32, "{line}");
                assert_eq!(c.target_union, Some(TargetUnion::ModRevision(5)), "{line}");
            }
        }
    }

    #[test]
    fn compare_keys_and_operands_are_unquoted() {
        let c = parse_compare(r#"value("a \"quoted\" key\x00") = "line\nbreak""#).unwrap();
        assert_eq!(c.key, b"a \"quoted\" key\0");
        assert_eq!(
            c.target_union,
            Some(TargetUnion::Value(b"line\nbreak".to_vec()))
        );
        let c = parse_compare(r#"value(`raw\n`) != 'it''s'"#);
        assert!(c.unwrap_err().contains("unexpected text after the operand"));
        let c = parse_compare(r#"value(`raw\n`) != ''"#).unwrap();
        assert_eq!(c.key, br"raw\n");
        assert_eq!(c.target_union, Some(TargetUnion::Value(Vec::new())));
        // The key may hold the characters of the syntax itself.
        let c = parse_compare(r#"value("f(x) = \"y\"") = ")""#).unwrap();
        assert_eq!(c.key, br#"f(x) = "y""#);
        assert_eq!(c.target_union, Some(TargetUnion::Value(b")".to_vec())));
    }

    #[test]
    fn bad_compares_say_why() {
        let cases = [
            ("put k v", "malformed comparison"),
            (r#"vale("k") = "v""#, "unknown compare target \"vale\""),
            (r#"value(k) = "v""#, "bad key: expected a quoted string"),
            (r#"value("k" = "v""#, "expected ) after the key"),
            (r#"value("k") "v""#, "expected an operator"),
            (r#"value("k") == "v""#, "unknown operator \"==\""),
            (r#"value("k") >= "v""#, "unknown operator \">=\""),
            (r#"value("k") = v"#, "bad operand: expected a quoted string"),
            (
                r#"value("k") = "v" extra"#,
                "unexpected text after the operand: extra",
            ),
            (r#"version("k") = "three""#, "must be a decimal number"),
            (r#"mod("k") > "0x10""#, "must be a decimal number"),
            (r#"create("k") = "1.5""#, "must be a decimal number"),
            (r#"lease("k") = "xyz""#, "must be a lease ID in hexadecimal"),
            (r#"value("k) = "v""#, "expected ) after the key"),
            (r#"value("\q") = "v""#, "unknown escape"),
        ];
        for (line, wanted) in cases {
            let err = parse_compare(line).unwrap_err();
            assert!(err.contains(wanted), "{line}: {err}");
        }
    }

    #[test]
    fn puts_parse() {
        let p = put_of(r#"put "a key" "a value""#);
        assert_eq!(
            (p.key.as_slice(), &p.value[..]),
            (&b"a key"[..], &b"a value"[..])
        );
        let p = put_of("put k v --prev-kv --lease=1f --ignore-lease");
        assert!(p.prev_kv && p.ignore_lease && !p.ignore_value);
        assert_eq!(p.lease, 0x1f);
        let p = put_of("put --lease 1f k v");
        assert_eq!((p.key.as_slice(), p.lease), (&b"k"[..], 0x1f));
        let p = put_of("put k --ignore-value");
        assert!(p.ignore_value && p.value.is_empty());
        // A quoted word or one after -- is never a flag.
        let p = put_of(r#"put k "--prefix""#);
        assert_eq!(&p.value[..], b"--prefix");
        let p = put_of("put -- --k -1");
        assert_eq!((p.key.as_slice(), &p.value[..]), (&b"--k"[..], &b"-1"[..]));
    }

    #[test]
    fn gets_parse() {
        let r = range("get k");
        assert_eq!(
            (r.key.as_slice(), r.range_end.as_slice()),
            (&b"k"[..], &b""[..])
        );
        let r = range("get a c");
        assert_eq!(r.range_end, b"c");
        let r = range("get ab --prefix");
        assert_eq!(r.range_end, b"ac");
        let r = range(r#"get "" --prefix"#);
        assert_eq!((r.key, r.range_end), (vec![0], vec![0]));
        let r = range("get b --from-key");
        assert_eq!((r.key, r.range_end), (b"b".to_vec(), vec![0]));
        let r = range("get k --limit=5 --rev 9 --keys-only --count-only");
        assert_eq!((r.limit, r.revision), (5, 9));
        assert!(r.keys_only && r.count_only && !r.serializable);
        let r = range("get k --sort-by=modify");
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::Ascend as i32, SortTarget::Mod as i32)
        );
        let r = range("get k --sort-order DESCEND");
        assert_eq!(
            (r.sort_order, r.sort_target),
            (SortOrder::Descend as i32, SortTarget::Key as i32)
        );
    }

    #[test]
    fn dels_parse() {
        let d = delete("del k");
        assert_eq!(
            (d.key.as_slice(), d.range_end.as_slice()),
            (&b"k"[..], &b""[..])
        );
        let d = delete("del k --prefix --prev-kv");
        assert_eq!(d.range_end, b"l");
        assert!(d.prev_kv);
        let d = delete("del a z");
        assert_eq!(d.range_end, b"z");
    }

    #[test]
    fn bad_requests_say_why() {
        let cases = [
            ("set k v", "unknown request \"set\""),
            ("put k", "put takes KEY VALUE"),
            ("put k v w", "put takes KEY VALUE"),
            ("put k v --ignore-value", "takes KEY alone"),
            ("put k v --lease=xyz", "--lease needs a hexadecimal number"),
            ("put k v --prefix", "unknown flag --prefix for put"),
            ("get", "get takes KEY"),
            ("get a b c", "too many arguments"),
            ("get a b --prefix", "no RANGE_END with --prefix"),
            ("get a --prefix --from-key", "exclude each other"),
            ("get k --limit", "--limit needs a value"),
            ("get k --limit=-1", "cannot be negative"),
            ("get k --limit=many", "--limit needs a number"),
            ("get k --prefix=yes", "--prefix takes no value"),
            ("get k --sort-by=size", "bad --sort-by"),
            ("get k --sort-order=up", "bad --sort-order"),
            ("del", "del takes KEY"),
            ("del k --limit=1", "unknown flag --limit for del"),
            (r#"put "k v"#, "no closing"),
        ];
        for (line, wanted) in cases {
            let err = parse_request(line).unwrap_err();
            assert!(err.contains(wanted), "{line}: {err}");
        }
    }

    #[test]
    fn blocks_end_at_empty_lines() {
        let txn = parse_txn(
            "value(\"k\") = \"v\"\n  mod(\"k\") > \"1\"  \n\nput k w\r\nget k\n\nget k\n",
        )
        .unwrap();
        assert_eq!(txn.compare.len(), 2);
        assert_eq!(txn.success.len(), 2);
        assert_eq!(txn.failure.len(), 1);
        // The input may end any block, with or without a final newline.
        let txn = parse_txn("value(\"k\") = \"v\"\n\nput k w").unwrap();
        assert_eq!((txn.compare.len(), txn.success.len()), (1, 1));
        assert!(txn.failure.is_empty());
        let txn = parse_txn("\n\nget k\n\n").unwrap();
        assert_eq!(
            (txn.compare.len(), txn.success.len(), txn.failure.len()),
            (0, 0, 1)
        );
        assert_eq!(parse_txn("").unwrap(), TxnRequest::default());
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_txn("value(\"k\") = \"v\"\nput k v\n").unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.text, "put k v");
        assert!(
            err.to_string().starts_with("line 2: malformed comparison"),
            "{err}"
        );
        // Empty lines count.
        let err = parse_txn("\nput k v\n\nfrob k\n").unwrap_err();
        assert_eq!(err.line, 4);
        assert_eq!(
            err.to_string(),
            "line 4: unknown request \"frob\" (one of get, put, del): frob k"
        );
        let err = parse_txn("\n\nput k\n").unwrap_err();
        assert_eq!((err.line, err.text.as_str()), (3, "put k"));
        let err = read_txn(&mut &b"value(\"\xff\") = \"v\"\n"[..], &mut |_| {});
        match err {
            Err(InputError::Syntax(e)) => assert!(e.message.contains("not UTF-8") && e.line == 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prompts_come_before_each_block_while_input_lasts() {
        let mut seen = Vec::new();
        read_txn(&mut &b"\nput k v\n\nget k\n"[..], &mut |p| {
            seen.push(p.to_string())
        })
        .unwrap();
        assert_eq!(seen, PROMPTS);
        seen.clear();
        read_txn(&mut &b"value(\"k\") = \"v\"\n"[..], &mut |p| {
            seen.push(p.to_string())
        })
        .unwrap();
        assert_eq!(seen, [PROMPTS[0]]);
    }
}
