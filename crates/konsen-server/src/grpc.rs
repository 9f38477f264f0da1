//! Unary gRPC calls served straight on the HTTP/2 stream, for the client
//! calls that carry the load: KV Range and DeleteRange here, and the
//! header checks, body reading and encoding that KV Put (`put.rs`) shares.
//!
//! tonic's server puts its router (an axum router behind boxed, cloned
//! services), its load-shed, concurrency and timeout layers, and its
//! streaming codec between the connection and a unary handler, and a busy leader
//! paid for them on every request (docs/performance.md, item 11).
//! Here a call is: collect the request body (one DATA frame, as a
//! rule), check its 5-byte gRPC prefix, decode, run the handler, and answer
//! with one DATA frame and the `grpc-status` trailer. Errors are encoded by
//! tonic's own `Status::into_http`, so a client sees the same statuses as
//! from tonic.
//!
//! What this serves like tonic's server: `grpc-timeout` (the call fails with
//! DEADLINE_EXCEEDED once it passes), `grpc-encoding` (only `identity`; a
//! compressed message is refused with UNIMPLEMENTED, as tonic does with no
//! compression enabled), the decoding size limit (RESOURCE_EXHAUSTED), and
//! response metadata set by a handler.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use http_body::Frame;
use konsen_rpc::net::MessageChunks;
use prost::Message;
use tonic::Status;

/// Length of the prefix before each gRPC message: a compressed flag and a
/// big-endian u32 length.
const PREFIX_BYTES: usize = 5;
// Looked up by `HeaderName`, which spares parsing the name on every call.
const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// The longest `grpc-timeout` value the gRPC spec allows, in digits.
const TIMEOUT_DIGITS_MAX: usize = 8;

/// The response body of a unary call: at most one DATA frame, then the
/// trailers.
#[derive(Debug)]
pub struct UnaryBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl http_body::Body for UnaryBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

/// Serves one unary call: decodes `request`'s body into `Req` (refusing a
/// message over `message_bytes_max`), runs `handle`, and encodes its answer
/// or its status. Generic over the request body (`server::H2Body` on a
/// connection), so that tests can call it without one.
pub async fn unary<B, Req, Resp, F, Fut>(
    request: http::Request<B>,
    message_bytes_max: usize,
    handle: F,
) -> http::Response<tonic::body::Body>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let outcome = match check_headers(request.headers()) {
        Ok(None) => call(request, message_bytes_max, handle).await,
        Ok(Some(timeout)) => {
            // Boxed, so that the timer only enlarges the calls that set one.
            let call = Box::pin(call(request, message_bytes_max, handle));
            match tokio::time::timeout(timeout, call).await {
                Ok(outcome) => outcome,
                Err(_) => Err(deadline_passed(timeout)),
            }
        }
        Err(status) => Err(status),
    };
    match outcome {
        Ok(response) => response,
        Err(status) => status.into_http(),
    }
}

async fn call<B, Req, Resp, F, Fut>(
    request: http::Request<B>,
    message_bytes_max: usize,
    handle: F,
) -> Result<http::Response<tonic::body::Body>, Status>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(tonic::Request<Req>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let (parts, mut body) = request.into_parts();
    let mut chunks = MessageChunks::default();
    let message = poll_fn(|cx| poll_message(cx, &mut body, &mut chunks, message_bytes_max)).await?;
    let decoded = Req::decode(message)
        .map_err(|e| Status::internal(format!("failed to decode Protobuf message: {e}")))?;
    let mut request = tonic::Request::new(decoded);
    *request.metadata_mut() = tonic::metadata::MetadataMap::from_headers(parts.headers);
    let (metadata, response, _) = handle(request).await?.into_parts();

    let data = encode_message(&response)?;
    let mut headers = metadata.into_headers();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    let mut response = http::Response::new(tonic::body::Body::new(UnaryBody {
        data: Some(data),
        trailers: Some(ok_trailers()),
    }));
    *response.headers_mut() = headers;
    Ok(response)
}

/// `message` with its 5-byte gRPC prefix, as one DATA frame carries it.
pub(crate) fn encode_message<M: Message>(message: &M) -> Result<Bytes, Status> {
    let len = message.encoded_len();
    let len_u32 = u32::try_from(len)
        .map_err(|_| Status::internal(format!("a {len}-byte response is too large for gRPC")))?;
    let mut data = BytesMut::with_capacity(PREFIX_BYTES + len);
    data.put_u8(0);
    data.put_u32(len_u32);
    message
        .encode(&mut data)
        .map_err(|e| Status::internal(format!("encoding the response: {e}")))?;
    Ok(data.freeze())
}

/// The trailers of a call that succeeded: `grpc-status: 0`.
pub(crate) fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    trailers
}

/// What a unary call's headers must pass: no compression, and a
/// well-formed `grpc-timeout`, whose duration is returned if there is one.
pub(crate) fn check_headers(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let timeout = grpc_timeout(headers)
        .map_err(|bad| Status::invalid_argument(format!("invalid grpc-timeout header: {bad:?}")))?;
    if let Some(encoding) = headers.get(GRPC_ENCODING)
        && encoding != "identity"
    {
        return Err(Status::unimplemented(format!(
            "Content is compressed with `{}` which isn't supported",
            String::from_utf8_lossy(encoding.as_bytes())
        )));
    }
    Ok(timeout)
}

/// The status of a call whose `grpc-timeout` ran out.
pub(crate) fn deadline_passed(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!(
        "the call's deadline (grpc-timeout {timeout:?}) passed"
    ))
}

/// Reads a unary request body into `chunks` until it ends, checking each
/// piece as it arrives (so that a body never grows past one message);
/// then the one message, without its prefix. A poll function, so that a
/// caller may try it once without a task (`put.rs`).
pub(crate) fn poll_message<B>(
    cx: &mut Context<'_>,
    body: &mut B,
    chunks: &mut MessageChunks,
    message_bytes_max: usize,
) -> Poll<Result<Bytes, Status>>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    loop {
        match ready!(Pin::new(&mut *body).poll_frame(cx)) {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers: a unary request has no use for them
                };
                chunks.push(data);
                let received = chunks.received();
                if received.len() >= PREFIX_BYTES {
                    check_length(received, message_bytes_max, false)?;
                }
                if body.is_end_stream() {
                    break;
                }
            }
            Some(Err(e)) => {
                return Poll::Ready(Err(Status::cancelled(format!("reading the request: {e}"))));
            }
            None => break,
        }
    }
    let mut all = std::mem::take(chunks).into_bytes();
    check_length(&all, message_bytes_max, true)?;
    all.advance(PREFIX_BYTES);
    Poll::Ready(Ok(all))
}

/// Checks what has arrived of a request body, `complete` or not: one gRPC
/// message, uncompressed, of at most `message_bytes_max` bytes.
pub(crate) fn check_length(
    received: &[u8],
    message_bytes_max: usize,
    complete: bool,
) -> Result<(), Status> {
    if received.len() < PREFIX_BYTES {
        return Err(Status::internal("the request carries no gRPC message"));
    }
    let declared = check_prefix(received, message_bytes_max)?;
    let body = received.len() - PREFIX_BYTES;
    if body > declared || (complete && body < declared) {
        return Err(Status::internal(format!(
            "a unary request carries exactly one message: its prefix declares {declared} bytes, \
             the body has {body}"
        )));
    }
    Ok(())
}

/// Checks the 5-byte prefix at the start of `data`; returns the declared
/// message length.
fn check_prefix(data: &[u8], message_bytes_max: usize) -> Result<usize, Status> {
    let compressed = data[0];
    let declared = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    match compressed {
        0 => {}
        1 => {
            return Err(Status::unimplemented(
                "the message is compressed, and this server takes no compression",
            ));
        }
        flag => {
            return Err(Status::internal(format!(
                "protocol error: invalid compression flag {flag}"
            )));
        }
    }
    if declared > message_bytes_max {
        return Err(Status::resource_exhausted(format!(
            "Error, decoded message length too large: found {declared} bytes, the limit is: \
             {message_bytes_max} bytes"
        )));
    }
    Ok(declared)
}

/// The `grpc-timeout` header's duration, if the client set one.
pub(crate) fn grpc_timeout(headers: &HeaderMap) -> Result<Option<Duration>, HeaderValue> {
    let Some(value) = headers.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let bad = || value.clone();
    let text = value.to_str().map_err(|_| bad())?;
    if text.len() < 2 || text.len() > TIMEOUT_DIGITS_MAX + 1 {
        return Err(bad());
    }
    let (digits, unit) = text.split_at(text.len() - 1);
    let amount: u64 = digits.parse().map_err(|_| bad())?;
    let timeout = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(bad()),
    };
    Ok(Some(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use konsen_rpc::etcd::etcdserverpb::{PutRequest, PutResponse};
    use tonic::Code;

    /// A Put call as a client sends it, with `grpc-timeout` if given.
    fn put_call(timeout: Option<&'static str>) -> http::Request<Full<Bytes>> {
        let message = PutRequest {
            key: b"k".to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        let mut body = vec![0];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(&message);
        let mut request = http::Request::new(Full::new(Bytes::from(body)));
        if let Some(timeout) = timeout {
            request
                .headers_mut()
                .insert(GRPC_TIMEOUT, HeaderValue::from_static(timeout));
        }
        request
    }

    async fn answer(
        request: tonic::Request<PutRequest>,
    ) -> Result<tonic::Response<PutResponse>, Status> {
        assert_eq!(request.get_ref().key, b"k");
        Ok(tonic::Response::new(PutResponse::default()))
    }

    #[tokio::test]
    async fn a_call_answers_with_one_message_and_status_zero() {
        for timeout in [None, Some("5S")] {
            let response = unary(put_call(timeout), 1024, answer).await;
            let (parts, body) = response.into_parts();
            assert_eq!(parts.headers[CONTENT_TYPE], "application/grpc");
            let collected = body.collect().await.unwrap();
            let trailers = collected.trailers().cloned().unwrap();
            assert_eq!(trailers[GRPC_STATUS], "0", "{timeout:?}");
            assert_eq!(collected.to_bytes()[..], [0, 0, 0, 0, 0]);
        }
    }

    #[tokio::test]
    async fn a_call_past_its_grpc_timeout_fails_with_deadline_exceeded() {
        let never = |_: tonic::Request<PutRequest>| {
            std::future::pending::<Result<tonic::Response<PutResponse>, Status>>()
        };
        let call = unary(put_call(Some("20m")), 1024, never);
        let response = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("the call outlived its 20 ms deadline by seconds");
        let status = Status::from_header_map(response.headers()).expect("a status");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_malformed_values() {
        let parse = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_str(v).unwrap());
            grpc_timeout(&h)
        };
        assert_eq!(grpc_timeout(&HeaderMap::new()), Ok(None));
        assert_eq!(parse("2H"), Ok(Some(Duration::from_secs(7200))));
        assert_eq!(parse("3M"), Ok(Some(Duration::from_secs(180))));
        assert_eq!(parse("5S"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(parse("4999m"), Ok(Some(Duration::from_millis(4999))));
        assert_eq!(parse("7u"), Ok(Some(Duration::from_micros(7))));
        assert_eq!(
            parse("99999999n"),
            Ok(Some(Duration::from_nanos(99_999_999)))
        );
        for bad in ["", "S", "123456789S", "5s", "-5S", "5.0S", "xS"] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn prefix_checks_flag_and_size() {
        assert_eq!(check_prefix(&[0, 0, 0, 1, 0], 256).unwrap(), 256);
        let too_large = check_prefix(&[0, 0, 0, 1, 1], 256).unwrap_err();
        assert_eq!(too_large.code(), tonic::Code::ResourceExhausted);
        let compressed = check_prefix(&[1, 0, 0, 0, 4], 256).unwrap_err();
        assert_eq!(compressed.code(), tonic::Code::Unimplemented);
        let bad_flag = check_prefix(&[7, 0, 0, 0, 4], 256).unwrap_err();
        assert_eq!(bad_flag.code(), tonic::Code::Internal);
    }

    #[test]
    fn a_body_carries_exactly_one_message() {
        let message = [0, 0, 0, 0, 2, 8, 1];
        assert!(check_length(&message, 256, true).is_ok());
        // Partly arrived: fine until the body is complete.
        assert!(check_length(&message[..6], 256, false).is_ok());
        assert!(check_length(&message[..6], 256, true).is_err());
        assert!(check_length(&message[..3], 256, true).is_err());
        // Bytes past the declared message: a second message, refused as
        // soon as they arrive.
        assert!(check_length(&[0, 0, 0, 0, 1, 8, 1], 256, false).is_err());
    }
}
