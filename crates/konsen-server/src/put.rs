//! KV Put without a task per call: the write path that carries a node's
//! load (docs/performance.md, item 20).
//!
//! The connection's own task reads the request as it is accepted (its one
//! DATA frame has nearly always arrived with its HEADERS), checks and
//! proposes it, and hands the node loop a callback holding the stream's
//! `SendResponse`. The loop calls it when the write is applied (or fails),
//! and the callback writes the answer's three frames onto the stream. So a
//! Put costs no tokio task, no channel and no wake-up of its own, and
//! nothing of hyper's per-stream machinery.
//!
//! Only the uncommon cases take a task: a body still on its way when the
//! call is accepted, and a write that must go to another node (this one
//! does not lead). Everything a client sees is as on the unary path in
//! `grpc.rs`: the same checks (`grpc-encoding`, message size, one message),
//! the same statuses, `grpc-timeout` (the write's deadline is the earlier
//! of it and `limits.request_timeout_ms`; past it the call fails with
//! DEADLINE_EXCEEDED at the node loop's next tick).

use std::future::poll_fn;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::RecvStream;
use h2::server::SendResponse;
use http::HeaderValue;
use http::header::CONTENT_TYPE;
use konsen_rpc::convert::{WriteOutcome, put_request_to_command};
use konsen_rpc::etcd::etcdserverpb::PutRequest;
use konsen_rpc::net::MessageChunks;
use prost::Message;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tonic::Status;

use crate::grpc;
use crate::node::NodeError;
use crate::server::H2Body;
use crate::services::{Shared, node_status, put_response, request_status, timed_out};

/// What every Put on this node's connections shares.
#[derive(Debug)]
pub(crate) struct PutPath {
    shared: Shared,
    /// The largest request message accepted (as for the unary path).
    message_bytes_max: usize,
}

impl PutPath {
    pub(crate) fn new(shared: Shared, message_bytes_max: usize) -> Arc<PutPath> {
        Arc::new(PutPath {
            shared,
            message_bytes_max,
        })
    }
}

/// A Put's request as accepted on its stream.
pub(crate) fn serve(
    path: &Arc<PutPath>,
    request: http::Request<RecvStream>,
    respond: SendResponse<Bytes>,
) {
    let (parts, body) = request.into_parts();
    let timeout = match grpc::check_headers(&parts.headers) {
        Ok(timeout) => timeout,
        Err(status) => return send_status(respond, status),
    };
    let (mut body, mut chunks) = (H2Body::new(body), MessageChunks::default());
    let max = path.message_bytes_max;
    // A waker that does nothing: if the body is not all here, a task
    // takes over and polls again with its own.
    let mut cx = Context::from_waker(Waker::noop());
    match grpc::poll_message(&mut cx, &mut body, &mut chunks, max) {
        Poll::Ready(message) => propose(path, message, timeout, respond),
        Poll::Pending => {
            let path = Arc::clone(path);
            tokio::spawn(async move {
                let message =
                    poll_fn(|cx| grpc::poll_message(cx, &mut body, &mut chunks, max)).await;
                propose(&path, message, timeout, respond);
            });
        }
    }
}

/// Decodes, admits, checks and proposes the Put; its answer comes from the
/// node loop.
fn propose(
    path: &Arc<PutPath>,
    message: Result<Bytes, Status>,
    timeout: Option<Duration>,
    respond: SendResponse<Bytes>,
) {
    let shared = &path.shared;
    let checked = message
        .and_then(|m| {
            PutRequest::decode(m)
                .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))
        })
        .and_then(|request| Ok((shared.admit()?, put_request_to_command(request))))
        .and_then(
            |(permit, command)| match command.validate(&shared.storage_options) {
                Ok(()) => Ok((permit, command.encode())),
                Err(e) => Err(request_status(&e)),
            },
        );
    let (permit, command) = match checked {
        Ok(checked) => checked,
        Err(status) => return send_status(respond, status),
    };
    let now = Instant::now();
    let request_deadline = now + shared.settings.request_timeout();
    let (deadline, client_deadline) = match timeout {
        Some(t) if now + t < request_deadline => (now + t, Some(t)),
        _ => (request_deadline, None),
    };
    let waiting = Waiting {
        path: Arc::clone(path),
        respond,
        command: command.clone(),
        deadline,
        client_deadline,
        _permit: permit,
    };
    shared.node.write_then(
        command,
        deadline,
        Box::new(move |answer| waiting.answer(answer)),
    );
}

/// A proposed Put, until the node loop answers it.
struct Waiting {
    path: Arc<PutPath>,
    respond: SendResponse<Bytes>,
    /// Kept for forwarding, should this node turn out not to lead.
    command: Bytes,
    deadline: Instant,
    /// The client's `grpc-timeout`, when it is what `deadline` came from.
    client_deadline: Option<Duration>,
    /// Held until the answer (`limits.concurrent_requests_max`).
    _permit: OwnedSemaphorePermit,
}

impl Waiting {
    /// Runs on the node loop's thread: answers the stream, or hands the
    /// write to a task that forwards it to the leader.
    fn answer(self, answer: Result<WriteOutcome, NodeError>) {
        match answer {
            Ok(outcome) => match put_response(&self.path.shared, outcome) {
                Ok(response) => send_message(self.respond, &response),
                Err(status) => send_status(self.respond, status),
            },
            Err(NodeError::NotLeader { leader }) => {
                tokio::spawn(async move {
                    let shared = &self.path.shared;
                    let write = shared.write_elsewhere(leader, self.command.clone(), self.deadline);
                    let outcome = Box::pin(write).await;
                    match outcome.and_then(|o| put_response(shared, o)) {
                        Ok(response) => send_message(self.respond, &response),
                        Err(status) => {
                            let status = self.client_status(status);
                            send_status(self.respond, status)
                        }
                    }
                });
            }
            Err(NodeError::TimedOut) => {
                let status = self.client_status(timed_out());
                send_status(self.respond, status)
            }
            Err(e) => send_status(self.respond, node_status(&e)),
        }
    }

    /// A timeout as the client sees it: its own `grpc-timeout`, if that is
    /// what ran out, as the unary path words it.
    fn client_status(&self, status: Status) -> Status {
        match self.client_deadline {
            Some(timeout) if status.code() == tonic::Code::DeadlineExceeded => {
                grpc::deadline_passed(timeout)
            }
            _ => status,
        }
    }
}

/// Answers with one message and `grpc-status: 0`. A stream the client
/// reset meanwhile refuses the frames; there is nobody to tell.
fn send_message<M: Message>(mut respond: SendResponse<Bytes>, message: &M) {
    let data = match grpc::encode_message(message) {
        Ok(data) => data,
        Err(status) => return send_status(respond, status),
    };
    let mut head = http::Response::new(());
    head.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let Ok(mut stream) = respond.send_response(head, false) else {
        return;
    };
    if stream.send_data(data, false).is_ok() {
        let _ = stream.send_trailers(grpc::ok_trailers());
    }
}

/// Answers with `status` alone (gRPC's trailers-only response).
fn send_status(mut respond: SendResponse<Bytes>, status: Status) {
    let _ = respond.send_response(status.into_http::<()>(), true);
}
