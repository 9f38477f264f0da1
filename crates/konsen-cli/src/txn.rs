//! `txn` and `cas`: transactions (etcd `KV.Txn`). Both are writes: they go
//! to the leader and are retried across a leader change, like `set`.
//!
//! `txn` reads etcdctl's text form from stdin ([`crate::txn_input`]) and
//! prints etcdctl's simple format: `SUCCESS` or `FAILURE`, then each
//! response after an empty line (put: `OK`; get: key and value lines;
//! del: the count). `cas` is the one-line form of the common case. When the
//! compares fail, the command still prints its result, then exits 6.

use std::io::IsTerminal;

use konsen_rpc::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use konsen_rpc::etcd::etcdserverpb::request_op::Request;
use konsen_rpc::etcd::etcdserverpb::response_op::Response;
use konsen_rpc::etcd::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, ResponseOp, TxnRequest, TxnResponse,
};
use konsen_rpc::etcd::mvccpb::KeyValue;
use serde_json::{Value, json};

use crate::client::{CliError, Cluster};
use crate::commands::Format;
use crate::output::{kv_json, text};
use crate::txn_input::{InputError, read_txn};

/// `konsen-cli txn --help`.
pub const TXN_HELP: &str = "\
Runs one transaction read from stdin, in etcdctl's `txn -i` syntax: compares,
one per line, up to an empty line; then the requests to run if every compare
holds, up to an empty line; then the requests to run otherwise, up to an empty
line. The end of the input ends any block (the later ones are then empty).
When stdin is a terminal (or with -i), each block is prompted for, on stderr.

Compares: TARGET(\"key\") OP \"operand\", TARGET one of value (val), version (ver),
create (c), mod (m), lease; OP one of =, !=, <, >. Operands of version, create
and mod are decimal, of lease hexadecimal. Strings are double-quoted with Go's
backslash escapes (\\n, \\\", \\xHH, ...), or raw in '...' or `...`.

Requests (words separated by spaces, optionally quoted):
  put KEY VALUE [--prev-kv] [--lease=HEX] [--ignore-lease] [--ignore-value]
  get KEY [RANGE_END] [--prefix|--from-key] [--limit=N] [--rev=N] [--keys-only]
      [--count-only] [--sort-order=ASCEND|DESCEND] [--sort-by=KEY|VERSION|CREATE|MODIFY|VALUE]
  del KEY [RANGE_END] [--prefix|--from-key] [--prev-kv]

Example:
  printf '%s\\n' 'mod(\"k\") > \"0\"' '' 'put k \"overwrote k\"' '' 'put k \"created k\"' | konsen-cli txn

Prints SUCCESS or FAILURE, then each response after an empty line (put: OK,
get: key and value lines, del: how many keys); -w json prints the whole
response. Exits 0 when the compares held, 6 when they did not, 2 on a line
that does not parse (the message names the line).";

/// `konsen-cli cas --help`.
pub const CAS_HELP: &str = "\
Compare-and-swap: writes NEW to KEY only if KEY holds EXPECTED, in one
transaction. With --create, writes NEW only if KEY does not exist (its create
revision is 0); a missing key never holds EXPECTED, not even \"\".

Prints OK and exits 0 when it wrote. Otherwise it prints KEY's current value
(nothing if KEY does not exist; with -w json, the key-value or null) and exits 6.";

/// What a transaction printed, and whether its compares failed.
#[derive(Debug)]
pub struct Answer {
    pub out: String,
    /// Why the compares failed (the command then exits 6).
    pub failed: Option<String>,
}

/// Reads a transaction from stdin, prompting when stdin is a terminal (or
/// when asked to). A line that does not parse is a usage error.
pub fn read_stdin(prompt: bool) -> anyhow::Result<TxnRequest> {
    let stdin = std::io::stdin();
    let prompt = prompt || stdin.is_terminal();
    let mut show = |p: &str| {
        if prompt {
            eprintln!("{p}");
        }
    };
    match read_txn(&mut stdin.lock(), &mut show) {
        Ok(txn) => Ok(txn),
        Err(InputError::Syntax(e)) => {
            Err(CliError::Usage(format!("reading the transaction: {e}")).into())
        }
        Err(InputError::Io(e)) => {
            Err(anyhow::Error::new(e).context("reading the transaction from stdin"))
        }
    }
}

/// Runs `request` on the leader; returns its response and how many
/// attempts it took (more than one after a leader change or lost answer).
async fn send(cluster: &mut Cluster, request: TxnRequest) -> Result<(TxnResponse, u32), CliError> {
    let mut attempts = 0;
    let response = cluster
        .on_leader(|mut kv| {
            attempts += 1;
            let request = request.clone();
            async move { Ok(kv.txn(request).await?.into_inner()) }
        })
        .await?;
    Ok((response, attempts))
}

pub async fn txn(
    cluster: &mut Cluster,
    request: TxnRequest,
    format: Format,
) -> Result<Answer, CliError> {
    let (response, _) = send(cluster, request).await?;
    let out = match format {
        Format::Table => txn_text(&response),
        Format::Json => txn_json(&response).to_string(),
    };
    let failed = (!response.succeeded)
        .then(|| "the compares did not hold; the failure requests ran".to_string());
    Ok(Answer { out, failed })
}

/// Writes `new` to `key` if it holds `expected` (with `None`: if it does
/// not exist); otherwise reads it.
pub async fn cas(
    cluster: &mut Cluster,
    key: &str,
    expected: Option<&str>,
    new: &str,
    format: Format,
) -> Result<Answer, CliError> {
    let request = cas_request(key.as_bytes(), expected.map(str::as_bytes), new.as_bytes());
    let (response, attempts) = send(cluster, request).await?;
    let revision = response.header.as_ref().map_or(0, |h| h.revision);
    if response.succeeded {
        let out = match format {
            Format::Table => "OK".to_string(),
            Format::Json => json!({ "succeeded": true, "revision": revision }).to_string(),
        };
        return Ok(Answer { out, failed: None });
    }
    let current = first_kv(&response);
    let out = match format {
        Format::Table => current.map_or_else(String::new, |kv| text(&kv.value)),
        Format::Json => json!({
            "succeeded": false,
            "revision": revision,
            "kv": current.map(kv_json),
        })
        .to_string(),
    };
    let mut why = cas_failure(key, expected, current);
    if attempts > 1 && current.is_some_and(|kv| kv.value == new.as_bytes()) {
        why.push_str(
            "; it already holds NEW: an attempt cut off by a leader change may have written it",
        );
    }
    Ok(Answer {
        out,
        failed: Some(why),
    })
}

/// `value(key) = expected` (or `create(key) = 0`), then put `new`; else get.
pub fn cas_request(key: &[u8], expected: Option<&[u8]>, new: &[u8]) -> TxnRequest {
    let (target, operand) = match expected {
        Some(v) => (CompareTarget::Value, TargetUnion::Value(v.to_vec())),
        None => (CompareTarget::Create, TargetUnion::CreateRevision(0)),
    };
    let compare = Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: Vec::new(),
        target_union: Some(operand),
    };
    let put = PutRequest {
        key: key.to_vec(),
        value: new.to_vec().into(),
        ..Default::default()
    };
    let get = RangeRequest {
        key: key.to_vec(),
        ..Default::default()
    };
    TxnRequest {
        compare: vec![compare],
        success: vec![RequestOp {
            request: Some(Request::RequestPut(put)),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(get)),
        }],
    }
}

/// The key-value the first get of `response` found.
fn first_kv(response: &TxnResponse) -> Option<&KeyValue> {
    response.responses.iter().find_map(|op| match &op.response {
        Some(Response::ResponseRange(r)) => r.kvs.first(),
        _ => None,
    })
}

/// Why a cas did not write, from what the key holds now.
fn cas_failure(key: &str, expected: Option<&str>, current: Option<&KeyValue>) -> String {
    match (expected, current) {
        (Some(_), None) => format!("{key:?} does not exist (--create writes a missing key)"),
        (None, Some(kv)) => format!("{key:?} already exists, holding {:?}", text(&kv.value)),
        (Some(e), Some(kv)) => format!("{key:?} holds {:?}, not {e:?}", text(&kv.value)),
        // Created and deleted again between compare and read cannot
        // happen: both ran at one revision.
        (None, None) => format!("{key:?} existed when compared"),
    }
}

/// etcdctl's simple format: `SUCCESS`/`FAILURE`, then each response after
/// an empty line.
pub fn txn_text(response: &TxnResponse) -> String {
    let verdict = if response.succeeded {
        "SUCCESS"
    } else {
        "FAILURE"
    };
    let mut lines = vec![verdict.to_string()];
    for op in &response.responses {
        lines.push(String::new());
        lines.extend(response_lines(op));
    }
    lines.join("\n")
}

fn response_lines(op: &ResponseOp) -> Vec<String> {
    let kv_lines = |kv: &KeyValue| [text(&kv.key), text(&kv.value)];
    match &op.response {
        Some(Response::ResponsePut(p)) => {
            let mut lines = vec!["OK".to_string()];
            lines.extend(p.prev_kv.iter().flat_map(kv_lines));
            lines
        }
        Some(Response::ResponseRange(r)) => r.kvs.iter().flat_map(kv_lines).collect(),
        Some(Response::ResponseDeleteRange(d)) => {
            let mut lines = vec![d.deleted.to_string()];
            lines.extend(d.prev_kvs.iter().flat_map(kv_lines));
            lines
        }
        Some(Response::ResponseTxn(t)) => vec![txn_text(t)],
        None => vec!["(empty response)".to_string()],
    }
}

/// The response as JSON: `succeeded`, `revision`, and `responses`, each
/// named as in the protocol (`response_put`, `response_range`,
/// `response_delete_range`, `response_txn`), with text keys and values.
pub fn txn_json(response: &TxnResponse) -> Value {
    json!({
        "succeeded": response.succeeded,
        "revision": response.header.as_ref().map_or(0, |h| h.revision),
        "responses": response.responses.iter().map(response_json).collect::<Vec<_>>(),
    })
}

fn response_json(op: &ResponseOp) -> Value {
    let kvs = |kvs: &[KeyValue]| kvs.iter().map(kv_json).collect::<Vec<_>>();
    match &op.response {
        Some(Response::ResponsePut(p)) => json!({
            "response_put": { "prev_kv": p.prev_kv.as_ref().map(kv_json) },
        }),
        Some(Response::ResponseRange(r)) => json!({
            "response_range": { "count": r.count, "more": r.more, "kvs": kvs(&r.kvs) },
        }),
        Some(Response::ResponseDeleteRange(d)) => json!({
            "response_delete_range": { "deleted": d.deleted, "prev_kvs": kvs(&d.prev_kvs) },
        }),
        Some(Response::ResponseTxn(t)) => json!({ "response_txn": txn_json(t) }),
        None => json!({}),
    }
}

#[cfg(test)]
mod tests {
    use konsen_rpc::etcd::etcdserverpb::{
        DeleteRangeResponse, PutResponse, RangeResponse, ResponseHeader,
    };

    use super::*;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.as_bytes().to_vec(),
            value: value.to_owned().into_bytes().into(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            lease: 0,
        }
    }

    fn op(response: Response) -> ResponseOp {
        ResponseOp {
            response: Some(response),
        }
    }

    fn sample(succeeded: bool) -> TxnResponse {
        TxnResponse {
            header: Some(ResponseHeader {
                revision: 9,
                ..Default::default()
            }),
            succeeded,
            responses: vec![
                op(Response::ResponsePut(PutResponse::default())),
                op(Response::ResponseRange(RangeResponse {
                    kvs: vec![kv("a", "1"), kv("b", "2")],
                    count: 2,
                    ..Default::default()
                })),
                op(Response::ResponseDeleteRange(DeleteRangeResponse {
                    deleted: 1,
                    prev_kvs: vec![kv("c", "3")],
                    ..Default::default()
                })),
            ],
        }
    }

    #[test]
    fn text_is_etcdctls_simple_format() {
        assert_eq!(
            txn_text(&sample(true)),
            "SUCCESS\n\nOK\n\na\n1\nb\n2\n\n1\nc\n3"
        );
        let failed = TxnResponse {
            responses: vec![op(Response::ResponsePut(PutResponse {
                prev_kv: Some(kv("k", "old")),
                ..Default::default()
            }))],
            ..Default::default()
        };
        assert_eq!(txn_text(&failed), "FAILURE\n\nOK\nk\nold");
        assert_eq!(txn_text(&TxnResponse::default()), "FAILURE");
    }

    #[test]
    fn json_names_each_response_as_the_protocol_does() {
        let kv_a = json!({
            "key": "a", "value": "1", "create_revision": 2, "mod_revision": 5,
            "version": 3, "lease": 0,
        });
        let got = txn_json(&sample(false));
        assert_eq!(got["succeeded"], json!(false));
        assert_eq!(got["revision"], json!(9));
        assert_eq!(
            got["responses"][0],
            json!({ "response_put": { "prev_kv": null } })
        );
        assert_eq!(got["responses"][1]["response_range"]["count"], json!(2));
        assert_eq!(got["responses"][1]["response_range"]["more"], json!(false));
        assert_eq!(got["responses"][1]["response_range"]["kvs"][0], kv_a);
        assert_eq!(
            got["responses"][2]["response_delete_range"]["deleted"],
            json!(1)
        );
        assert_eq!(
            got["responses"][2]["response_delete_range"]["prev_kvs"][0]["key"],
            json!("c")
        );
        assert_eq!(got["responses"].as_array().map(Vec::len), Some(3));
        let nested = TxnResponse {
            responses: vec![op(Response::ResponseTxn(sample(true)))],
            ..Default::default()
        };
        assert_eq!(
            txn_json(&nested)["responses"][0]["response_txn"]["succeeded"],
            json!(true)
        );
    }

    #[test]
    fn cas_compares_the_value_or_that_the_key_is_missing() {
        let r = cas_request(b"k", Some(b"old"), b"new");
        assert_eq!(r.compare.len(), 1);
        let c = &r.compare[0];
        assert_eq!(
            (c.result, c.target, c.key.as_slice()),
            (
                CompareResult::Equal as i32,
                CompareTarget::Value as i32,
                &b"k"[..]
            )
        );
        assert_eq!(c.target_union, Some(TargetUnion::Value(b"old".to_vec())));
        match &r.success[..] {
            [
                RequestOp {
                    request: Some(Request::RequestPut(p)),
                },
            ] => assert_eq!((p.key.as_slice(), &p.value[..]), (&b"k"[..], &b"new"[..])),
            other => panic!("{other:?}"),
        }
        match &r.failure[..] {
            [
                RequestOp {
                    request: Some(Request::RequestRange(g)),
                },
            ] => assert_eq!(
                (g.key.as_slice(), g.range_end.as_slice()),
                (&b"k"[..], &b""[..])
            ),
            other => panic!("{other:?}"),
        }
        let c = &cas_request(b"k", None, b"new").compare[0];
        assert_eq!(c.target, CompareTarget::Create as i32);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));
    }

    #[test]
    fn cas_failures_say_what_the_key_holds() {
        let cur = kv("k", "cur");
        assert_eq!(
            cas_failure("k", Some("old"), Some(&cur)),
            r#""k" holds "cur", not "old""#
        );
        assert!(cas_failure("k", Some("old"), None).contains("does not exist"));
        assert_eq!(
            cas_failure("k", None, Some(&cur)),
            r#""k" already exists, holding "cur""#
        );
        let failed = sample(false);
        assert_eq!(
            first_kv(&failed).map(|kv| kv.key.clone()),
            Some(b"a".to_vec())
        );
    }
}
